"""Error bars for "how much does pretraining help": intervals over seeds and over test images.

Per (variant, budget) the report gives a mean with a 95% interval, and per budget the pretraining
gain as a paired difference (fine-tuned minus scratch) with its interval and whether it excludes
zero. Every function returns an :class:`Interval`, a frozen dataclass of plain Python numbers
(``dataclasses.asdict`` of it is JSON-serialisable; the undefined fields of a one-seed result are
``nan``, which ``json.dumps`` writes as ``NaN``).

- Several seeds: :func:`seed_interval` (one variant) and :func:`paired_difference` (the gain,
  seed by seed) give Student's t intervals, ``mean ± t_{(1+level)/2, n-1} * std / sqrt(n)`` with
  the sample standard deviation (``ddof=1``).
- One seed: a t interval over one value does not exist. :func:`seed_interval` and
  :func:`paired_difference` then return ``method="single"`` with ``nan`` spread and bounds (never a
  made-up interval), and the caller reports :func:`bootstrap_interval` or
  :func:`paired_bootstrap_difference` instead: a percentile bootstrap over the test images of that
  one seed. It measures the test-set sampling noise only, not the seed-to-seed variation, and
  :func:`format_interval` says which of the two an interval is.

    >>> gain = paired_difference(scratch_top1, finetune_top1)   # seeds in the same order
    >>> gain.excludes_zero, format_interval(gain)
    (True, '+12.3 ± 1.4 (95% CI 10.9–13.7, paired t over 3 seeds)')
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats as _st

Method = Literal["t", "bootstrap", "single"]
_METHODS = ("t", "bootstrap", "single")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval, in the units of the inputs (accuracies in [0, 1]).

    - ``mean``: the estimate: the mean over seeds (``"t"``, ``"single"``) or the accuracy (or
      accuracy difference) on the full test set (``"bootstrap"``).
    - ``std``: the sample standard deviation over seeds (``ddof=1``) for ``"t"``; the bootstrap
      standard error (``ddof=1`` standard deviation of the resampled statistic) for
      ``"bootstrap"``; ``nan`` for ``"single"``.
    - ``low``, ``high``: the interval bounds (``nan`` for ``"single"``). ``half_width`` is
      ``(high - low) / 2``; a percentile bootstrap interval need not be symmetric about ``mean``.
    - ``n``: the number of seeds (``"t"``, ``"single"``) or of test images (``"bootstrap"``).
    - ``level``: the confidence level, e.g. 0.95. ``paired``: a difference of two runs.
      ``n_resamples``: the bootstrap resamples (0 unless ``"bootstrap"``).
    - ``excludes_zero``: ``low > 0`` or ``high < 0``; ``False`` when there is no interval.
    """

    mean: float
    std: float
    low: float
    high: float
    half_width: float
    n: int
    level: float
    method: Method
    paired: bool = False
    n_resamples: int = 0
    excludes_zero: bool = field(init=False)

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"Interval method must be one of {_METHODS}, got {self.method!r}")
        for name in ("mean", "std", "low", "high", "half_width", "level"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("n", "n_resamples"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "paired", bool(self.paired))
        object.__setattr__(self, "excludes_zero", bool(self.low > 0.0 or self.high < 0.0))


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1 (e.g. 0.95), got {level}")
    return level


def _as_values(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what} must be a flat sequence of numbers, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{what} is empty: no seeds to summarise")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contains a non-finite value: {x.tolist()}")
    return x


def _t_interval(x: np.ndarray, level: float, paired: bool) -> Interval:
    n = int(x.size)
    mean = float(np.mean(x))
    if n == 1:
        nan = math.nan
        return Interval(mean, nan, nan, nan, nan, 1, level, "single", paired)
    std = float(np.std(x, ddof=1))
    half = float(_st.t.ppf((1.0 + level) / 2.0, n - 1)) * std / math.sqrt(n)
    return Interval(mean, std, mean - half, mean + half, half, n, level, "t", paired)


def seed_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean over seeds with its Student's t interval.

    ``mean ± t_{(1+level)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (``ddof=1``); seeds that all agree give a zero-width interval. With one seed the result has
    ``method="single"``, ``std``/``low``/``high``/``half_width`` ``nan`` and
    ``excludes_zero=False``: report :func:`bootstrap_interval` over that seed's test images.

    Raises ``ValueError`` for no values, a non-finite value or a level outside (0, 1).
    """
    return _t_interval(_as_values(values, "values"), _check_level(level), paired=False)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of the seed-by-seed differences ``b[i] - a[i]`` with its Student's t interval.

    The sign: called as ``paired_difference(scratch, finetune)`` it is the pretraining gain,
    fine-tuned minus scratch (positive when pretraining helps). ``a[i]`` and ``b[i]`` must be the
    same seed; this is :func:`seed_interval` of the differences (``scipy.stats.ttest_rel(b, a)``).
    One pair gives ``method="single"`` as there; use :func:`paired_bootstrap_difference`.

    Raises ``ValueError`` when the lengths differ (naming both), or as :func:`seed_interval`.
    """
    xa, xb = _as_values(a, "a"), _as_values(b, "b")
    if xa.size != xb.size:
        raise ValueError(f"paired_difference needs one value per seed in each: a has {xa.size} "
                         f"values, b has {xb.size}")
    return _t_interval(xb - xa, _check_level(level), paired=True)


def paired_by_seed(records: Iterable[Mapping], a: str, b: str, key: str = "top1",
                   level: float = 0.95) -> list[dict]:
    """``b - a`` on ``key`` per budget, paired over the seeds both variants have there, from
    cell records (``variant``, ``budget``, ``seed`` and ``key``: ``cells.json``'s entries): per
    budget of ``a`` (in its order) where ``b`` has a seed too, ``{"budget", "seeds", "a_mean",
    "b_mean", "diff"}`` with ``diff`` the :func:`paired_difference`. What one knob does
    (``scratch`` against ``scratch_ra3``), read off the cells as the gain is."""
    by: dict[tuple[str, str], dict[int, float]] = {}
    for r in records:
        by.setdefault((r["variant"], str(r["budget"])), {})[int(r["seed"])] = r[key]
    rows = []
    for budget in dict.fromkeys(bu for v, bu in by if v == a):
        va, vb = by[(a, budget)], by.get((b, budget), {})
        seeds = sorted(set(va) & set(vb))
        if seeds:
            xa, xb = [va[s] for s in seeds], [vb[s] for s in seeds]
            rows.append({"budget": budget, "seeds": seeds, "a_mean": float(np.mean(xa)),
                         "b_mean": float(np.mean(xb)),
                         "diff": paired_difference(xa, xb, level)})
    return rows


def _as_correct(correct: np.ndarray, what: str) -> np.ndarray:
    c = np.asarray(correct)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"{what} must be a non-empty (N,) array of per-image correctness, "
                         f"got shape {c.shape}")
    if c.dtype != np.bool_:
        if not np.all((c == 0) | (c == 1)):
            raise ValueError(f"{what} must hold booleans or 0/1 per test image")
        c = c.astype(bool)
    return c


def _check_resamples(n_resamples: int) -> int:
    if int(n_resamples) != n_resamples or n_resamples < 2:
        raise ValueError(f"n_resamples must be an integer >= 2, got {n_resamples}")
    return int(n_resamples)


def _percentile(reps: np.ndarray, point: float, n: int, level: float, n_resamples: int,
                paired: bool) -> Interval:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])  # linear, as scipy.stats.bootstrap
    se = float(np.std(reps, ddof=1))
    return Interval(point, se, low, high, (high - low) / 2.0, n, level, "bootstrap", paired,
                    n_resamples)


def bootstrap_interval(correct: np.ndarray, level: float = 0.95, n_resamples: int = 10_000,
                       seed: int = 0) -> Interval:
    """The test accuracy with a percentile bootstrap interval over the test images (one seed).

    ``correct`` is the (N,) per-image correctness (bool or 0/1). The nonparametric bootstrap
    resamples N images with replacement; the accuracy of a resample depends only on how many
    correct images it drew, which is exactly ``Binomial(N, k/N)`` distributed (k correct of N).
    So the resampled accuracies are drawn as that count divided by N: the same distribution as
    resampling indices, in O(n_resamples) time and memory whatever N. The interval is the
    ``(1-level)/2`` and ``(1+level)/2`` quantiles (linear interpolation, as
    ``scipy.stats.bootstrap(method="percentile")``); ``std`` is the bootstrap standard error.
    Deterministic for a ``seed`` (``numpy.random.default_rng``).
    """
    level = _check_level(level)
    n_resamples = _check_resamples(n_resamples)
    c = _as_correct(correct, "correct")
    n = int(c.size)
    k = int(np.count_nonzero(c))
    rng = np.random.default_rng(seed)
    reps = rng.binomial(n, k / n, size=n_resamples) / n
    return _percentile(reps, k / n, n, level, n_resamples, paired=False)


def paired_bootstrap_difference(correct_a: np.ndarray, correct_b: np.ndarray,
                                level: float = 0.95, n_resamples: int = 10_000,
                                seed: int = 0) -> Interval:
    """The accuracy difference ``acc(b) - acc(a)`` on one test set with a paired bootstrap interval.

    ``correct_a[i]`` and ``correct_b[i]`` are the two models' correctness on the same image i
    (call as ``(scratch, finetune)`` for the pretraining gain). Paired: each resample draws N
    image indices with replacement and uses them for both models. The difference of a resample
    is ``(#b-only-correct - #a-only-correct) / N``, and the counts of the three kinds of image
    (only a correct, only b correct, both or neither) in a resample are exactly
    ``Multinomial(N, observed proportions)``; they are drawn so, in O(n_resamples) memory. The
    interval is the percentile interval as in :func:`bootstrap_interval`.

    Raises ``ValueError`` when the two arrays differ in length (naming both).
    """
    level = _check_level(level)
    n_resamples = _check_resamples(n_resamples)
    ca, cb = _as_correct(correct_a, "correct_a"), _as_correct(correct_b, "correct_b")
    if ca.size != cb.size:
        raise ValueError(f"paired_bootstrap_difference needs the same test images for both: "
                         f"correct_a has {ca.size} images, correct_b has {cb.size}")
    n = int(ca.size)
    a_only = int(np.count_nonzero(ca & ~cb))
    b_only = int(np.count_nonzero(cb & ~ca))
    p = np.array([a_only, b_only, n - a_only - b_only], dtype=np.float64) / n
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, p, size=n_resamples)
    reps = (counts[:, 1] - counts[:, 0]) / n
    return _percentile(reps, (b_only - a_only) / n, n, level, n_resamples, paired=True)


def format_interval(iv: Interval, percent: bool = True, digits: int | None = None) -> str:
    """One line for a report, e.g. ``"74.9 ± 2.1 (95% CI 72.8–77.0, t over 3 seeds)"``.

    ``percent`` scales by 100 (accuracies as percentages, differences as percentage points);
    ``digits`` defaults to 1 with ``percent`` and 3 without. The ``±`` is ``half_width``.
    Differences (``paired``) carry a sign. The basis is named: ``t over n seeds``,
    ``bootstrap over N test images, 1 seed`` (test-set noise only), or for one seed
    ``"80.0 (1 seed, no interval)"``.
    """
    scale = 100.0 if percent else 1.0
    if digits is None:
        digits = 1 if percent else 3
    sign = "+" if iv.paired else ""

    def num(x: float, signed: str = "") -> str:
        return f"{x * scale:{signed}.{digits}f}"

    kind = "paired " if iv.paired else ""
    if iv.method == "single":
        return f"{num(iv.mean, sign)} (1 seed, no interval)"
    sep = " to " if iv.low < 0 else "–"
    ci = f"{iv.level * 100:g}% CI {num(iv.low)}{sep}{num(iv.high)}"
    if iv.method == "t":
        basis = f"{kind}t over {iv.n} seed{'s' if iv.n != 1 else ''}"
    else:
        basis = f"{kind}bootstrap over {iv.n} test image{'s' if iv.n != 1 else ''}, 1 seed"
    return f"{num(iv.mean, sign)} ± {num(iv.half_width)} ({ci}, {basis})"
