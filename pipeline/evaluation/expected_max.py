"""The expected best validation score after n trials of a search (Dodge et al. 2019, "Show your
work: Improved reporting of experimental results", section 3.1): how good a search of n trials
is expected to be, so that two arms tuned with equal budgets can be compared at every budget, not
only at the one that was run.

With the N trial scores ``v`` sorted and ``F`` their empirical CDF, the expected maximum of n
draws from them (independent, with replacement) is

    E[max_n] = sum over the distinct values v of  v * (F(v)^n - F(v-)^n)

where ``F(v-)`` is the fraction of scores strictly below ``v``; likewise ``E[max_n^2]``, which
gives the spread, ``sqrt(E[max_n^2] - E[max_n]^2)``. At n = 1 it is the mean of the scores, it
grows with n and never exceeds the best score seen, which it approaches.

What it assumes: the trials are independent draws from one distribution, as random search makes
them. For a grid the scores are not draws (n of them would be a subset, not a sample), and for
TPE later trials depend on earlier ones; the curve then reads as "the expected best of n trials
drawn at random from the ones that were run", a summary of how much the choice matters rather
than a prediction of a smaller search.

    >>> curve = expected_max([0.71, 0.74, 0.69, 0.75], costs=[120, 130, 110, 125])
    >>> curve.mean[0], curve.mean[-1]          # n = 1: the mean; n = 4: below the best, 0.75
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExpectedMax:
    """E[max of n trials] for n = 1..N, with its standard deviation and the expected compute of
    n trials (n times the mean cost of one, in the unit of the costs given; nan without)."""

    n: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    compute: tuple[float, ...]


def expected_max(scores: Sequence[float], *, costs: Sequence[float] | None = None,
                 n_max: int | None = None) -> ExpectedMax:
    """The expected best of n draws from ``scores`` (one per finished trial), n = 1 to
    ``n_max`` (default: the number of scores). ValueError for no scores, a non-finite score, or
    costs that do not match the scores."""
    v = np.asarray(scores, dtype=np.float64)
    if v.ndim != 1 or not len(v):
        raise ValueError(f"expected_max needs a non-empty list of scores, got {len(v)}")
    if not np.isfinite(v).all():
        raise ValueError("every score must be finite (leave out trials that did not finish)")
    n_max = len(v) if n_max is None else int(n_max)
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    per_trial = np.nan
    if costs is not None:
        c = np.asarray(costs, dtype=np.float64)
        if c.shape != v.shape or not np.isfinite(c).all() or (c < 0).any():
            raise ValueError(f"costs must be {len(v)} finite non-negative numbers, one per score")
        per_trial = float(c.mean())
    values, counts = np.unique(v, return_counts=True)  # sorted, ascending
    below = np.concatenate([[0], np.cumsum(counts)[:-1]]) / len(v)  # F(v-)
    upto = np.cumsum(counts) / len(v)  # F(v)
    ns = np.arange(1, n_max + 1)
    weights = upto[None, :] ** ns[:, None] - below[None, :] ** ns[:, None]  # P(max_n = v)
    mean = weights @ values
    second = weights @ values**2
    std = np.sqrt(np.maximum(second - mean**2, 0.0))
    return ExpectedMax(tuple(int(n) for n in ns), tuple(float(m) for m in mean),
                       tuple(float(s) for s in std), tuple(float(n * per_trial) for n in ns))
