"""How the report writes numbers and intervals in its tables, sentences and figure titles.

A leaf of :mod:`pipeline.report`: plain Python (the intervals it writes are
:class:`~pipeline.evaluation.stats.Interval` objects)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..evaluation.stats import Interval


def human_duration(seconds: float) -> str:
    """``42.0 s``, ``12 min 05 s``, ``3 h 07 min``; an en dash when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def pct(x: float) -> str:
    """A fraction as a percentage, ``74.91%``; an en dash when unknown."""
    return f"{100 * x:.2f}%" if math.isfinite(x) else "–"


def num(x: float, fmt: str) -> str:
    """``x`` in the format ``fmt``; an en dash when unknown."""
    return format(x, fmt) if x is not None and math.isfinite(x) else "–"


def pm(iv: Interval, signed: bool = False) -> str:
    """``74.9 ± 2.1`` (percent), ``+16.0 ± 3.1`` for a difference; the mean alone without an
    interval."""
    mean = f"{100 * iv.mean:{'+' if signed else ''}.1f}"
    return f"{mean} ± {100 * iv.half_width:.1f}" if math.isfinite(iv.half_width) else mean


def gain_cell(iv: Interval) -> str:
    """``+16.0 ± 3.1 (95% CI 12.9 to 19.1; excludes 0)``."""
    if not math.isfinite(iv.low):
        return f"{pm(iv, True)} (no interval)"
    verdict = "excludes 0" if iv.excludes_zero else "includes 0"
    return (f"{pm(iv, True)} ({iv.level * 100:g}% CI {100 * iv.low:.1f} to "
            f"{100 * iv.high:.1f}; {verdict})")


def seed_counts(ns: set[int]) -> str:
    """``3 seeds``, ``1 seed``, ``2–3 seeds``."""
    lo, hi = min(ns), max(ns)
    return f"{lo} seed{'s' if hi != 1 else ''}" if lo == hi else f"{lo}–{hi} seeds"


def interval_basis(intervals: Sequence[Interval], *, paired: bool, sep: str = "; ") -> str:
    """What the intervals are: "95% interval: Student's t over 3 seeds", "1 seed: bootstrap over
    test images" (both, joined by ``sep``, when the methods differ)."""
    parts = []
    t = [iv for iv in intervals if iv.method == "t"]
    boot = [iv for iv in intervals if iv.method == "bootstrap"]
    pre = "paired " if paired else ""
    if t:
        parts.append(f"{t[0].level * 100:g}% interval: {pre}Student's t over "
                     f"{seed_counts({iv.n for iv in t})}")
    if boot:
        lead = "" if t else f"{boot[0].level * 100:g}% interval, "
        parts.append(f"{lead}1 seed: {pre}bootstrap over test images")
    if any(iv.method == "single" for iv in intervals):
        parts.append("1 seed: no interval")
    return sep.join(parts)


def budget_header(budget: str) -> str:
    """A label budget as a column header: ``10 per class``, ``all labels``."""
    return "all labels" if budget == "all" else f"{budget} per class"


def budget_words(budget: str) -> str:
    """A label budget in a sentence: ``10 labelled images per class``, ``all labelled images``."""
    return "all labelled images" if budget == "all" else f"{budget} labelled images per class"
