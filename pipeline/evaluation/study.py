"""The study: every (variant, budget, seed) cell's test accuracy, aggregated over seeds.

A *cell* is one training run: a variant at a label budget (labelled images per class, or "all")
with one seed. :func:`summarise` groups the cells per (variant, budget) into a mean with a 95%
interval (Student's t over seeds; with one seed, a bootstrap over the test images, and it says so),
and pairs each fine-tuned variant with each scratch variant at every budget, seed by seed, into the
pretraining gain with its interval (:mod:`pipeline.evaluation.stats`). Cells evaluated with
test-time augmentation as well (:mod:`pipeline.evaluation.tta`) give, per (variant, budget), the
TTA top-1 with its interval by the same rule and the effect of TTA (TTA minus plain, paired seed
by seed, as the gain): beside the plain figures, which stay as they are. The report draws it
(:mod:`pipeline.report`); ``study.json``, ``results/metrics/``, the curve CSV and the MLflow parent run hold it.

    >>> study = summarise(cells)
    >>> [(g.finetune, g.budget, g.diff.mean, g.diff.excludes_zero) for g in study.gains]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..layout import TUNED_SUFFIX, budget_order
from .stats import (
    Interval,
    bootstrap_interval,
    paired_bootstrap_difference,
    paired_difference,
    seed_interval,
)

if TYPE_CHECKING:
    from .search_summary import SearchSummary


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
    # with test-time augmentation (None: not evaluated with it)
    tta_top1: float | None = None
    tta_correct: np.ndarray | None = field(default=None, repr=False)


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
class GainShift:
    """What tuning changed in the answer at one budget: the tuned pair's gain
    (``<ft>-tuned`` minus ``<scratch>-tuned``) minus the recipes' gain, paired seed by seed."""

    finetune: str  # the variants as written (their tuned cells: <name>-tuned)
    scratch: str
    budget: str
    seeds: tuple[int, ...]
    diff: Interval


@dataclass(frozen=True)
class TTAAggregate:
    """One (variant, budget) with test-time augmentation: its seeds' TTA test top-1 as a mean
    with an interval, and the effect of TTA, TTA minus plain top-1 paired seed by seed."""

    variant: str
    kind: str
    budget: str
    labelled: int
    seeds: tuple[int, ...]
    top1: Interval
    effect: Interval


@dataclass(frozen=True)
class Study:
    aggregates: tuple[Aggregate, ...]
    gains: tuple[Gain, ...]
    budgets: tuple[str, ...]  # smallest first, "all" last
    seeds: tuple[int, ...]
    tta: tuple[TTAAggregate, ...] = ()  # empty: no cell was evaluated with TTA
    tta_views: str = ""  # the TTA views in words (pipeline.evaluation.tta.describe_views)
    shifts: tuple[GainShift, ...] = ()  # tuned minus fixed gain, where both pairs were trained
    # the searches that chose the <variant>-tuned cells' configs (set by evaluate; on
    # validation data only, so they add no test figure of their own)
    searches: tuple[SearchSummary, ...] = ()

    def to_dict(self) -> dict:
        """``{"top1": {variant: {budget: interval}}, "gain": {"<ft>-<scratch>": {budget: ...}}}``,
        plain numbers (what study.json holds); with TTA also
        ``"tta_views"``, ``"tta_top1"`` and ``"tta_effect"`` (``{variant: {budget: interval}}``)."""
        top1: dict = {}
        for a in self.aggregates:
            top1.setdefault(a.variant, {})[a.budget] = {
                **asdict(a.top1), "labelled": a.labelled, "seeds": list(a.seeds)}
        gain: dict = {}
        for g in self.gains:
            gain.setdefault(f"{g.finetune}-{g.scratch}", {})[g.budget] = {
                **asdict(g.diff), "labelled": g.labelled, "seeds": list(g.seeds)}
        out = {"seeds": list(self.seeds), "budgets": list(self.budgets), "top1": top1,
               "gain": gain}
        if self.shifts:
            out["gain_shift"] = shift = {}
            for g in self.shifts:
                shift.setdefault(f"{g.finetune}-{g.scratch}", {})[g.budget] = {
                    **asdict(g.diff), "seeds": list(g.seeds)}
        if self.searches:
            out["tuning"] = {f"{s.variant}/{s.budget}": s.to_dict() for s in self.searches}
        if self.tta:
            out["tta_views"] = self.tta_views
            for key in ("top1", "effect"):
                out[f"tta_{key}"] = by_variant = {}
                for t in self.tta:
                    by_variant.setdefault(t.variant, {})[t.budget] = {
                        **asdict(getattr(t, key)), "labelled": t.labelled, "seeds": list(t.seeds)}
        return out


def _accuracy(values: list[float], correct: np.ndarray, level: float) -> Interval:
    """The mean over seeds with its t interval; one seed: the bootstrap over its test images."""
    iv = seed_interval(values, level)
    return bootstrap_interval(correct, level) if iv.method == "single" else iv


def _paired(a: list[float], b: list[float], correct_a: np.ndarray, correct_b: np.ndarray,
            level: float) -> Interval:
    """``b - a`` paired seed by seed with its t interval; one seed: the paired bootstrap over
    its test images (``correct_a``, ``correct_b``)."""
    diff = paired_difference(a, b, level)
    if diff.method == "single":
        diff = paired_bootstrap_difference(correct_a, correct_b, level)
    return diff


def _tta(variant: str, budget: str, group: list[Cell], level: float) -> TTAAggregate | None:
    """The TTA aggregate of one (variant, budget)'s cells (sorted by seed), None without TTA."""
    with_tta = [c.tta_top1 is not None and c.tta_correct is not None for c in group]
    if not any(with_tta):
        return None
    if not all(with_tta):
        raise ValueError(f"{variant} at budget {budget}: some seeds were evaluated with "
                         "test-time augmentation and some without")
    tops = [c.tta_top1 for c in group]
    return TTAAggregate(
        variant, group[0].kind, budget, group[0].labelled, tuple(c.seed for c in group),
        _accuracy(tops, group[0].tta_correct, level),
        _paired([c.top1 for c in group], tops, group[0].correct, group[0].tta_correct, level))


def summarise(cells: list[Cell], level: float = 0.95, tta_views: str = "") -> Study:
    """Aggregate per (variant, budget) and pair fine-tuned with scratch variants per budget; with
    cells evaluated with TTA, its aggregates too (``tta_views``: the views in words)."""
    if not cells:
        raise ValueError("no cells to summarise")
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.variant, c.budget), []).append(c)
    budgets = tuple(sorted({c.budget for c in cells}, key=budget_order))
    aggregates, tta = [], []
    for (variant, budget), group in groups.items():
        group = sorted(group, key=lambda c: c.seed)
        iv = _accuracy([c.top1 for c in group], group[0].correct, level)
        aggregates.append(Aggregate(variant, group[0].kind, budget, group[0].labelled,
                                    tuple(c.seed for c in group), iv))
        t = _tta(variant, budget, group, level)
        if t is not None:
            tta.append(t)
    kinds = {c.variant: c.kind for c in cells}
    gains = []
    for ft in (v for v, k in kinds.items() if k == "finetune"):
        for sc in (v for v, k in kinds.items() if k == "scratch"):
            if _tuned(ft) != _tuned(sc):  # tuned against tuned, recipe against recipe
                continue
            for budget in budgets:
                a = {c.seed: c for c in groups.get((sc, budget), [])}
                b = {c.seed: c for c in groups.get((ft, budget), [])}
                seeds = sorted(set(a) & set(b))  # paired: the seeds both have
                if not seeds:
                    continue
                diff = _paired([a[s].top1 for s in seeds], [b[s].top1 for s in seeds],
                               a[seeds[0]].correct, b[seeds[0]].correct, level)
                gains.append(Gain(ft, sc, budget, b[seeds[0]].labelled, tuple(seeds), diff))
    order = {v: i for i, v in enumerate(kinds)}
    for rows in (aggregates, tta):
        rows.sort(key=lambda a: (order[a.variant], budget_order(a.budget)))
    return Study(tuple(aggregates), tuple(gains), budgets,
                 tuple(sorted({c.seed for c in cells})), tuple(tta), tta_views if tta else "",
                 _shifts(groups, budgets, level))


def _tuned(variant: str) -> bool:
    return variant.endswith(TUNED_SUFFIX)


def _shifts(groups: dict[tuple[str, str], list[Cell]], budgets: tuple[str, ...],
            level: float) -> tuple[GainShift, ...]:
    """Per fixed pair whose tuned cells were trained too, and budget: (tuned gain) minus
    (fixed gain), seed by seed over the seeds all four cells have (t interval; one seed: the
    difference alone, without an interval)."""
    variants = {v: g[0].kind for (v, _), g in groups.items()}
    out = []
    for ft in (v for v, k in variants.items() if k == "finetune" and not _tuned(v)):
        for sc in (v for v, k in variants.items() if k == "scratch" and not _tuned(v)):
            for budget in budgets:
                four = [{c.seed: c for c in groups.get((v, budget), [])}
                        for v in (sc, ft, sc + TUNED_SUFFIX, ft + TUNED_SUFFIX)]
                if not all(four):
                    continue
                seeds = sorted(set.intersection(*(set(f) for f in four)))
                if not seeds:
                    continue
                fixed = [four[1][s].top1 - four[0][s].top1 for s in seeds]
                tuned = [four[3][s].top1 - four[2][s].top1 for s in seeds]
                diff = paired_difference(fixed, tuned, level)  # one seed: no interval
                out.append(GainShift(ft, sc, budget, tuple(seeds), diff))
    return tuple(out)
