"""PolyCL example selection: for each anchor slice, one positive and one negative slice.

With T(x) = "slice x contains the organ" and S(s) = the slices of s's scan (the PolyCL paper's
definitions; docs/pretraining.md):

* **S** (scan): s+ from S(s) \\ {s}; s- from any other scan. Needs no labels.
* **O** (organ): s+ with T(s+) = T(s); s- with T(s-) != T(s); both drawn across all scans.
* **M** (mixed): s+ from S(s) with T = T(s); s- from S(s) with T != T(s).

The positive is never the anchor itself (for every strategy). O and M use only slices whose
presence is known. Before training, :func:`plan_sampling` checks that the data can satisfy the
strategy: a strategy that cannot be satisfied at all (S with one scan; O or M without presence
information; O with only one kind of slice) raises :class:`StrategyError` with what to do. When only
some anchors cannot be satisfied (a scan with one selected slice under S; unlabelled slices under
O/M; an M anchor whose scan has no slice of the other kind) this is also an error, unless the
caller opts in with ``skip_unusable=True``: then those anchors are left out, and the plan lists
how many, per scan and reason (nothing is ever replaced by a different kind of example).

Draws are reproducible: the pair for anchor ``i`` in epoch ``e`` depends only on (seed, e, i),
not on batch order, process count or rank.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from polycl.errors import InputError
from polycl.pretrain.dataset import ABSENT, PRESENT, UNKNOWN

STRATEGIES = ("s", "o", "m")
DESCRIPTIONS = {
    "s": "PolyCL-S: positive = another slice of the same scan, negative = a slice of another scan",
    "o": "PolyCL-O: positive = a slice with the same organ presence, negative = one with the other, across scans",
    "m": "PolyCL-M: positive = same scan and same organ presence, negative = same scan and the other presence",
}


class StrategyError(InputError):
    """The data cannot satisfy the chosen example-selection strategy."""


@dataclass
class SamplingPlan:
    """Which anchors are used, and which were left out (per scan and reason)."""

    strategy: str
    anchors: np.ndarray
    dropped: dict = field(default_factory=dict)  # reason -> {case: count}

    @property
    def n_dropped(self) -> int:
        return sum(sum(v.values()) for v in self.dropped.values())

    def lines(self) -> list[str]:
        out = [f"{DESCRIPTIONS[self.strategy]}", f"{len(self.anchors)} anchor slices"]
        for reason, per_case in self.dropped.items():
            out.append(f"left out {sum(per_case.values())} anchor slice(s): {reason}: "
                       + ", ".join(f"{c} ({n})" for c, n in sorted(per_case.items())))
        return out

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "anchors": int(len(self.anchors)), "dropped": self.dropped}


class TripletSampler:
    """Draws (positive, negative) slice indices for anchors of a :class:`SliceDataset`.

    Only the dataset's ``scan`` (N,) and ``presence`` (N,) arrays are used.
    """

    def __init__(self, scan: np.ndarray, presence: np.ndarray, strategy: str, seed: int = 0,
                 case_names: list[str] | None = None) -> None:
        strategy = str(strategy).lower()
        if strategy not in STRATEGIES:
            raise InputError(f"unknown strategy '{strategy}'; choose s, o or m")
        self.strategy = strategy
        self.scan = np.asarray(scan, dtype=np.int64)
        self.presence = np.asarray(presence, dtype=np.int8)
        self.seed = int(seed)
        self.case_names = case_names or [f"scan{k}" for k in range(int(self.scan.max()) + 1 if len(self.scan) else 0)]
        n = len(self.scan)
        idx = np.arange(n)
        known = self.presence != UNKNOWN
        # candidate pools: key -> sorted slice indices; negatives as complements
        self._pos: dict = {}
        self._neg: dict = {}
        if strategy == "s":
            for k in np.unique(self.scan):
                self._pos[k] = idx[self.scan == k]
                self._neg[k] = idx[self.scan != k]
        elif strategy == "o":
            for t in (ABSENT, PRESENT):
                self._pos[t] = idx[known & (self.presence == t)]
                self._neg[t] = idx[known & (self.presence == 1 - t)]
        else:
            for k in np.unique(self.scan):
                for t in (ABSENT, PRESENT):
                    same = self.scan == k
                    self._pos[(k, t)] = idx[same & known & (self.presence == t)]
                    self._neg[(k, t)] = idx[same & known & (self.presence == 1 - t)]

    def _key(self, i: int):
        if self.strategy == "s":
            return int(self.scan[i])
        if self.strategy == "o":
            return int(self.presence[i])
        return (int(self.scan[i]), int(self.presence[i]))

    def plan(self, skip_unusable: bool = False) -> SamplingPlan:
        """Check the strategy against the data; see the module docstring for what is refused."""
        s, names = self.strategy, self.case_names
        n = len(self.scan)
        scans = np.unique(self.scan)
        known = self.presence != UNKNOWN
        if n == 0:
            raise StrategyError("no slices to pre-train on")
        if s == "s" and len(scans) < 2:
            raise StrategyError(
                f"PolyCL-S needs at least two scans (negatives come from other scans), but the data has one "
                f"({names[int(scans[0])]}). Add more CT volumes to the folder, or use strategy o or m with organ labels.")
        if s in ("o", "m") and not known.any():
            raise StrategyError(
                f"PolyCL-{s.upper()} needs to know which slices contain the organ, but no scan has that information. "
                "Give label volumes (--labels DIR, matched to images by case name) or a presence CSV "
                "(--presence FILE with columns case,slice,present), or use strategy s, which needs no labels.")
        if s == "o":
            kinds = set(np.unique(self.presence[known]).tolist())
            if kinds != {ABSENT, PRESENT}:
                what = "contain" if PRESENT in kinds else "lack"
                raise StrategyError(
                    f"PolyCL-O needs slices with and without the organ, but all {int(known.sum())} labelled slices {what} it. "
                    "Include scans (or more of each scan: a larger --fraction) with slices of both kinds, or use strategy s.")
        dropped: dict = defaultdict(lambda: defaultdict(int))
        keep = np.ones(n, dtype=bool)
        for i in range(n):
            reason = None
            if s in ("o", "m") and not known[i]:
                reason = "organ presence unknown (no label or CSV row for the slice)"
            else:
                key = self._key(i)
                if len(self._pos[key]) < 2:  # the anchor itself is the only candidate
                    reason = {"s": "the scan has no other selected slice to be the positive",
                              "o": "no other slice with the same organ presence",
                              "m": "the scan has no other slice with the same organ presence"}[s]
                elif len(self._neg[key]) == 0:
                    reason = {"s": "no other scan", "o": "no slice with the other organ presence",
                              "m": "the scan has no slice with the other organ presence"}[s]
            if reason:
                keep[i] = False
                dropped[reason][names[int(self.scan[i])]] += 1
        plan = SamplingPlan(s, np.flatnonzero(keep), {r: dict(v) for r, v in dropped.items()})
        if len(plan.anchors) == 0:
            raise StrategyError(f"PolyCL-{s.upper()}: no anchor slice can be given a positive and a negative. "
                                + " ".join(plan.lines()[2:]) + " " + _advice(s))
        if plan.n_dropped and not skip_unusable:
            raise StrategyError(
                f"PolyCL-{s.upper()} cannot be satisfied for {plan.n_dropped} of {n} anchor slices: "
                + "; ".join(line.removeprefix("left out ") for line in plan.lines()[2:]) + ". " + _advice(s)
                + " Or pass --skip-unusable (skip_unusable=True) to train on the other "
                f"{len(plan.anchors)} anchors only (those slices can still serve as positives/negatives where they qualify).")
        return plan

    def draw(self, i: int, epoch: int) -> tuple[int, int]:
        """(positive, negative) for anchor ``i`` in ``epoch``; deterministic in (seed, epoch, i)."""
        rng = np.random.default_rng([self.seed, int(epoch), int(i)])
        key = self._key(i)
        pos_pool, neg_pool = self._pos[key], self._neg[key]
        # the positive: uniform over the pool without the anchor itself
        j = int(rng.integers(len(pos_pool) - 1))
        where = int(np.searchsorted(pos_pool, i))
        if where < len(pos_pool) and pos_pool[where] == i and j >= where:
            j += 1
        elif not (where < len(pos_pool) and pos_pool[where] == i):  # anchor not in its own pool: cannot happen
            raise AssertionError(f"anchor {i} missing from its positive pool")
        return int(pos_pool[j]), int(neg_pool[int(rng.integers(len(neg_pool)))])


def _advice(strategy: str) -> str:
    return {
        "s": "Add scans with more slices (or raise --fraction / --min-slices so each scan has at least two selected slices).",
        "o": "Give labels or presence rows for every scan (--labels DIR or --presence CSV).",
        "m": "M needs, in every scan, slices with and without the organ: raise --fraction so the selection reaches past "
             "the organ, give presence for every scan, or use strategy o (across scans) or s.",
    }[strategy]
