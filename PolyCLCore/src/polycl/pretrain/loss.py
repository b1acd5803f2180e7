"""The PolyCL contrastive loss.

For anchor embedding z, positive z+ and negative z- (z = g(f(slice)), the projection head's output)::

    L = -log( exp(sim(z, z+) / tau) / (exp(sim(z, z+) / tau) + exp(sim(z, z-) / tau)) )

with cosine similarity ``sim`` and temperature ``tau``; the paper sets tau = 1 / M for a minibatch
of M anchors. The batch loss is the mean over anchors.

Extension beyond the paper (off by default): with ``in_batch_negatives=True`` the other anchors of
the minibatch are added to the denominator as further negatives (as in SimCLR/InfoNCE). Those
anchors were not chosen by the strategy, so some may be, e.g., from the same scan or have the same
organ presence as the anchor: the selection's meaning is diluted in exchange for more negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def default_tau(batch_size: int) -> float:
    """The paper's temperature: 1 / M for a minibatch of M anchors."""
    return 1.0 / max(1, int(batch_size))


def polycl_loss(z: torch.Tensor, z_pos: torch.Tensor, z_neg: torch.Tensor, tau: float | None = None, *,
                in_batch_negatives: bool = False) -> torch.Tensor:
    """Mean PolyCL loss over M anchors. ``z``, ``z_pos``, ``z_neg``: (M, D) embeddings (any scale:
    they are L2-normalised here). ``tau`` defaults to 1/M. Returns a scalar tensor."""
    if z.shape != z_pos.shape or z.shape != z_neg.shape or z.ndim != 2:
        raise ValueError(f"embeddings must all be (M, D); got {tuple(z.shape)}, {tuple(z_pos.shape)}, {tuple(z_neg.shape)}")
    tau = default_tau(z.shape[0]) if tau is None else float(tau)
    if tau <= 0:
        raise ValueError(f"temperature must be > 0, got {tau}")
    z, z_pos, z_neg = (F.normalize(t.float(), dim=1) for t in (z, z_pos, z_neg))
    logits = [(z * z_pos).sum(1, keepdim=True), (z * z_neg).sum(1, keepdim=True)]
    if in_batch_negatives and z.shape[0] > 1:
        others = z @ z.t()
        others = others.masked_fill(torch.eye(z.shape[0], dtype=torch.bool, device=z.device), float("-inf"))
        logits.append(others)
    logits = torch.cat(logits, dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(z.shape[0], dtype=torch.long, device=z.device))
