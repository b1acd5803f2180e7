"""The PolyCL loss against values computed by hand on a fixed small batch."""

from __future__ import annotations

import math

import pytest
import torch

from polycl.pretrain import default_tau, polycl_loss

# Two anchors in 2-D (the loss normalises, so lengths do not matter):
#   anchor 1 (1,0): positive (1,1) -> cos = 1/sqrt(2); negative (0,1)  -> cos = 0
#   anchor 2 (0,2): positive (0,3) -> cos = 1;         negative (-1,0) -> cos = 0
Z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
ZP = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
ZN = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])


def by_hand(pos: float, negs: list[float], tau: float) -> float:
    """-log(e^{pos/tau} / (e^{pos/tau} + sum e^{neg/tau}))"""
    num = math.exp(pos / tau)
    return -math.log(num / (num + sum(math.exp(n / tau) for n in negs)))


def test_loss_matches_hand_computed_value_with_the_papers_tau():
    tau = default_tau(2)  # tau = 1/M with M = 2 anchors
    assert tau == 0.5
    expected = (by_hand(1 / math.sqrt(2), [0.0], tau) + by_hand(1.0, [0.0], tau)) / 2
    # = (log(1 + e^{-sqrt 2}) + log(1 + e^{-2})) / 2 = 0.15417...
    assert expected == pytest.approx((math.log(1 + math.exp(-math.sqrt(2))) + math.log(1 + math.exp(-2))) / 2)
    assert float(polycl_loss(Z, ZP, ZN)) == pytest.approx(expected, abs=1e-6)
    assert float(polycl_loss(Z, ZP, ZN, tau=0.1)) == pytest.approx(
        (by_hand(1 / math.sqrt(2), [0.0], 0.1) + by_hand(1.0, [0.0], 0.1)) / 2, abs=1e-5)


def test_in_batch_negatives_add_the_other_anchors():
    # anchors 1 and 2 are orthogonal: each gets one more negative with cos = 0
    tau = 0.5
    expected = (by_hand(1 / math.sqrt(2), [0.0, 0.0], tau) + by_hand(1.0, [0.0, 0.0], tau)) / 2
    assert float(polycl_loss(Z, ZP, ZN, in_batch_negatives=True)) == pytest.approx(expected, abs=1e-6)


def test_loss_gradient_step_lowers_the_loss_and_bad_input_is_refused():
    z = Z.clone().requires_grad_(True)
    loss = polycl_loss(z, ZP, ZN)
    loss.backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    assert float(polycl_loss(z.detach() - 0.05 * z.grad, ZP, ZN)) < float(loss.detach())
    with pytest.raises(ValueError, match="temperature"):
        polycl_loss(Z, ZP, ZN, tau=0)
    with pytest.raises(ValueError, match=r"\(M, D\)"):
        polycl_loss(Z, ZP[:1], ZN)
