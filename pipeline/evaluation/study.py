"""The study: every (variant, budget, seed) cell's test accuracy, aggregated over seeds.

A *cell* is one training run: a variant at a label budget (labelled images per class, or "all")
with one seed. :func:`summarise` groups the cells per (variant, budget) into a mean with a 95%
interval (Student's t over seeds; with one seed, a bootstrap over the test images, and it says so),
and pairs each fine-tuned variant with each scratch variant at every budget, seed by seed, into the
pretraining gain with its interval (:mod:`pipeline.evaluation.stats`). The report draws it
(:mod:`pipeline.report`); ``metrics.json``, the curve CSV and the MLflow parent run hold it.

    >>> study = summarise(cells)
    >>> [(g.finetune, g.budget, g.diff.mean, g.diff.excludes_zero) for g in study.gains]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .stats import (
    Interval,
    bootstrap_interval,
    paired_bootstrap_difference,
    paired_difference,
    seed_interval,
)


@dataclass(frozen=True, eq=False)
class Cell:
    """One trained run on the test split."""

    variant: str
    kind: str  # "scratch" | "finetune"
    budget: str  # "10", "100", ..., "all"
    seed: int
    labelled: int  # labelled training images it saw
    top1: float
    correct: np.ndarray = field(repr=False)  # (N,) bool: which test images it got right


@dataclass(frozen=True)
class Aggregate:
    """One (variant, budget): its seeds' test top-1 as a mean with an interval."""

    variant: str
    kind: str
    budget: str
    labelled: int  # labelled training images (the same for every seed)
    seeds: tuple[int, ...]
    top1: Interval


@dataclass(frozen=True)
class Gain:
    """Fine-tuned minus scratch test top-1 at one budget, paired seed by seed."""

    finetune: str
    scratch: str
    budget: str
    labelled: int
    seeds: tuple[int, ...]
    diff: Interval


@dataclass(frozen=True)
class Study:
    aggregates: tuple[Aggregate, ...]
    gains: tuple[Gain, ...]
    budgets: tuple[str, ...]  # smallest first, "all" last
    seeds: tuple[int, ...]

    def to_dict(self) -> dict:
        """``{"top1": {variant: {budget: interval}}, "gain": {"<ft>-<scratch>": {budget: ...}}}``,
        plain numbers (what metrics.json and the MLflow parent hold)."""
        top1: dict = {}
        for a in self.aggregates:
            top1.setdefault(a.variant, {})[a.budget] = {
                **asdict(a.top1), "labelled": a.labelled, "seeds": list(a.seeds)}
        gain: dict = {}
        for g in self.gains:
            gain.setdefault(f"{g.finetune}-{g.scratch}", {})[g.budget] = {
                **asdict(g.diff), "labelled": g.labelled, "seeds": list(g.seeds)}
        return {"seeds": list(self.seeds), "budgets": list(self.budgets), "top1": top1,
                "gain": gain}


def budget_order(budget: str) -> tuple[int, int]:
    """Sort key: budgets by size, ``all`` last."""
    return (1, 0) if budget == "all" else (0, int(budget))


def summarise(cells: list[Cell], level: float = 0.95) -> Study:
    """Aggregate per (variant, budget) and pair fine-tuned with scratch variants per budget."""
    if not cells:
        raise ValueError("no cells to summarise")
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.variant, c.budget), []).append(c)
    budgets = tuple(sorted({c.budget for c in cells}, key=budget_order))
    aggregates = []
    for (variant, budget), group in groups.items():
        group = sorted(group, key=lambda c: c.seed)
        iv = seed_interval([c.top1 for c in group], level)
        if iv.method == "single":  # one seed: the test-set noise of that run, and say so
            iv = bootstrap_interval(group[0].correct, level)
        aggregates.append(Aggregate(variant, group[0].kind, budget, group[0].labelled,
                                    tuple(c.seed for c in group), iv))
    kinds = {c.variant: c.kind for c in cells}
    gains = []
    for ft in (v for v, k in kinds.items() if k == "finetune"):
        for sc in (v for v, k in kinds.items() if k == "scratch"):
            for budget in budgets:
                a = {c.seed: c for c in groups.get((sc, budget), [])}
                b = {c.seed: c for c in groups.get((ft, budget), [])}
                seeds = sorted(set(a) & set(b))  # paired: the seeds both have
                if not seeds:
                    continue
                diff = paired_difference([a[s].top1 for s in seeds],
                                         [b[s].top1 for s in seeds], level)
                if diff.method == "single":
                    diff = paired_bootstrap_difference(a[seeds[0]].correct, b[seeds[0]].correct,
                                                       level)
                gains.append(Gain(ft, sc, budget, b[seeds[0]].labelled, tuple(seeds), diff))
    order = {v: i for i, v in enumerate(kinds)}
    aggregates.sort(key=lambda a: (order[a.variant], budget_order(a.budget)))
    return Study(tuple(aggregates), tuple(gains), budgets,
                 tuple(sorted({c.seed for c in cells})))
