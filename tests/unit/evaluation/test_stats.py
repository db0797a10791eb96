"""Intervals over seeds and over test images (pipeline/evaluation/stats.py).

Checked against scipy (``t.interval``, ``ttest_rel(...).confidence_interval``,
``bootstrap(method="percentile")``, the binomial quantiles) and against small cases computed by
hand; plus the one-seed behaviour, ``excludes_zero``, refused inputs, determinism and formatting.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.stats as st

from pipeline.evaluation.stats import (
    Interval,
    bootstrap_interval,
    format_interval,
    paired_bootstrap_difference,
    paired_by_seed,
    paired_difference,
    seed_interval,
)

# Monte-Carlo tolerance for comparing two percentile-bootstrap endpoints. With B resamples, the
# empirical q-quantile of a roughly normal bootstrap distribution of spread sigma has standard
# error sqrt(q(1-q)/B) / density = sqrt(0.025*0.975/B) / (phi(1.96)/sigma) ~= 2.67 sigma/sqrt(B)
# at q = 0.025 (and 0.975). Two independent estimates (ours with B1, scipy's with B2) differ by
# at most ~4 standard errors of their difference (p ~ 6e-5) -- plus one step 1/N of the accuracy
# grid, as both are quantiles of a lattice distribution and may land on neighbouring points.
# With B1 = 40_000, B2 = 10_000, N = 2000 this is about 0.12 sigma + 0.0005, tighter than what
# a wrong level (0.90 instead of 0.95 moves an endpoint by 0.31 sigma) or an unpaired resampling
# would give, so the comparison can fail.
OURS_B, SCIPY_B = 40_000, 10_000


def _mc_tol(sigma: float, n: int) -> float:
    return 4 * 2.67 * sigma * math.sqrt(1 / OURS_B + 1 / SCIPY_B) + 1 / n


def _labels(n_ones: int, n: int) -> np.ndarray:
    c = np.zeros(n, dtype=bool)
    c[:n_ones] = True
    return np.random.default_rng(123).permutation(c)


# --- over seeds: Student's t ------------------------------------------------------------------

def test_seed_interval_by_hand():
    iv = seed_interval([0.7, 0.8, 0.9])
    t975_2 = 4.302652729749462  # t_{0.975, 2} (tables: 4.303)
    assert iv.method == "t" and iv.n == 3 and iv.level == 0.95 and not iv.paired
    assert iv.mean == pytest.approx(0.8, abs=1e-12)
    assert iv.std == pytest.approx(0.1, abs=1e-12)
    assert iv.half_width == pytest.approx(t975_2 * 0.1 / math.sqrt(3), abs=1e-9)
    assert iv.half_width == pytest.approx(0.248413771, abs=1e-8)
    assert (iv.low, iv.high) == pytest.approx((0.8 - 0.248413771, 0.8 + 0.248413771), abs=1e-8)
    assert iv.excludes_zero


@pytest.mark.parametrize("n,level", [(2, 0.95), (3, 0.95), (5, 0.9), (10, 0.99)])
def test_seed_interval_matches_scipy_t_interval(n, level):
    x = np.random.default_rng(n).normal(0.75, 0.03, size=n)
    iv = seed_interval(list(x), level=level)
    low, high = st.t.interval(level, n - 1, loc=np.mean(x), scale=st.sem(x))
    assert (iv.low, iv.high) == pytest.approx((low, high), rel=1e-10)
    assert iv.std == pytest.approx(np.std(x, ddof=1), rel=1e-12)
    assert iv.half_width == pytest.approx((high - low) / 2, rel=1e-10)


def test_seed_interval_equal_seeds_has_zero_width():
    iv = seed_interval([0.5, 0.5, 0.5])
    assert (iv.std, iv.low, iv.high, iv.half_width) == (0.0, 0.5, 0.5, 0.0)


def test_one_seed_gives_no_interval():
    iv = seed_interval([0.81])
    assert iv.method == "single" and iv.n == 1 and iv.mean == pytest.approx(0.81)
    assert all(math.isnan(v) for v in (iv.std, iv.low, iv.high, iv.half_width))
    assert iv.excludes_zero is False
    d = paired_difference([0.7], [0.8])
    assert d.method == "single" and d.paired and d.mean == pytest.approx(0.1)
    assert math.isnan(d.low) and d.excludes_zero is False
    assert format_interval(iv) == "81.0 (1 seed, no interval)"
    assert format_interval(d) == "+10.0 (1 seed, no interval)"


@pytest.mark.parametrize("bad", [[], [0.5, float("nan")], [0.5, float("inf")], [[0.5, 0.6]]])
def test_seed_interval_refuses_bad_values(bad):
    with pytest.raises(ValueError):
        seed_interval(bad)


@pytest.mark.parametrize("level", [0.0, 1.0, 95, -0.5])
def test_refuses_bad_level(level):
    with pytest.raises(ValueError, match="level"):
        seed_interval([0.1, 0.2], level=level)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(np.ones(10, bool), level=level)


# --- paired difference over seeds -------------------------------------------------------------

@pytest.mark.parametrize("level", [0.95, 0.9])
def test_paired_difference_matches_scipy_ttest_rel(level):
    rng = np.random.default_rng(7)
    scratch = rng.normal(0.60, 0.03, size=5)
    finetune = scratch + rng.normal(0.05, 0.02, size=5)
    iv = paired_difference(list(scratch), list(finetune), level=level)
    ci = st.ttest_rel(finetune, scratch).confidence_interval(level)
    assert iv.method == "t" and iv.paired and iv.n == 5
    assert iv.mean == pytest.approx(np.mean(finetune - scratch), rel=1e-12)
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_paired_difference_sign_and_excludes_zero():
    scratch = [0.60, 0.62, 0.58]
    helped = paired_difference(scratch, [0.70, 0.71, 0.69])   # finetune better on every seed
    assert helped.mean == pytest.approx(0.1) and helped.low > 0 and helped.excludes_zero
    hurt = paired_difference(scratch, [0.50, 0.53, 0.47])      # the sign follows b - a
    assert hurt.mean == pytest.approx(-0.1) and hurt.high < 0 and hurt.excludes_zero
    mixed = paired_difference(scratch, [0.65, 0.58, 0.60])     # +0.05, -0.04, +0.02
    assert mixed.low < 0 < mixed.high and not mixed.excludes_zero


def test_paired_difference_is_not_the_unpaired_interval():
    # Large seed-to-seed spread, constant gain: paired excludes zero, the two separate
    # intervals overlap. A test that an implementation ignoring the pairing fails.
    scratch = [0.50, 0.60, 0.70]
    finetune = [0.52, 0.62, 0.72]
    d = paired_difference(scratch, finetune)
    assert d.half_width == pytest.approx(0.0, abs=1e-12) and d.excludes_zero
    assert seed_interval(finetune).low < seed_interval(scratch).high


def test_paired_difference_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match=r"a has 3 values, b has 2"):
        paired_difference([0.1, 0.2, 0.3], [0.1, 0.2])


# --- over test images: percentile bootstrap ---------------------------------------------------

def test_bootstrap_interval_matches_scipy_and_binomial():
    n, k = 2000, 1500
    c = _labels(k, n)
    iv = bootstrap_interval(c, n_resamples=OURS_B, seed=0)
    p = k / n
    sigma = math.sqrt(p * (1 - p) / n)  # the exact standard error of a bootstrap accuracy
    assert iv.method == "bootstrap" and iv.n == n and iv.n_resamples == OURS_B
    assert iv.mean == pytest.approx(0.75, abs=1e-15)
    # The SE estimate from B draws has relative error ~ 1/sqrt(2B) = 0.35%; allow 2%.
    assert iv.std == pytest.approx(sigma, rel=0.02)
    ref = st.bootstrap((c.astype(float),), np.mean, n_resamples=SCIPY_B, method="percentile",
                       vectorized=True, batch=1000, rng=np.random.default_rng(1))
    tol = _mc_tol(sigma, n)
    assert iv.low == pytest.approx(ref.confidence_interval.low, abs=tol)
    assert iv.high == pytest.approx(ref.confidence_interval.high, abs=tol)
    # Exact: the bootstrap accuracy is Binomial(n, p)/n, so the empirical 2.5% quantile of B
    # draws lies between its (2.5 -+ d)% quantiles, d = 5 binomial standard errors of a
    # quantile level (sqrt(q(1-q)/B)).
    d = 5 * math.sqrt(0.025 * 0.975 / OURS_B)
    assert st.binom.ppf(0.025 - d, n, p) / n <= iv.low <= st.binom.ppf(0.025 + d, n, p) / n
    assert st.binom.ppf(0.975 - d, n, p) / n <= iv.high <= st.binom.ppf(0.975 + d, n, p) / n
    assert iv.half_width == pytest.approx((iv.high - iv.low) / 2)


def test_bootstrap_level_changes_width():
    c = _labels(300, 400)
    wide, narrow = bootstrap_interval(c, level=0.99), bootstrap_interval(c, level=0.8)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_bootstrap_is_deterministic_for_a_seed():
    c = _labels(330, 450)
    assert bootstrap_interval(c, seed=3) == bootstrap_interval(c, seed=3)
    assert bootstrap_interval(c, seed=3) != bootstrap_interval(c, seed=4)
    a = _labels(300, 450)
    assert paired_bootstrap_difference(a, c, seed=3) == paired_bootstrap_difference(a, c, seed=3)
    assert paired_bootstrap_difference(a, c, seed=3) != paired_bootstrap_difference(a, c, seed=4)


def test_bootstrap_accepts_0_1_and_refuses_other_values():
    c = _labels(30, 50)
    assert bootstrap_interval(c.astype(np.int64)) == bootstrap_interval(c)
    assert bootstrap_interval(c.astype(np.float32)) == bootstrap_interval(c)
    with pytest.raises(ValueError, match="0/1"):
        bootstrap_interval(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_interval(np.array([], dtype=bool))
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_interval(c, n_resamples=0)


def test_bootstrap_of_a_perfect_model_is_degenerate():
    iv = bootstrap_interval(np.ones(100, dtype=bool))
    assert (iv.mean, iv.low, iv.high, iv.std) == (1.0, 1.0, 1.0, 0.0)


def test_bootstrap_is_memory_safe_at_10k_images_10k_resamples():
    iv = bootstrap_interval(_labels(7000, 10_000), n_resamples=10_000)
    assert iv.low < 0.7 < iv.high


# --- paired difference over test images -------------------------------------------------------

def _paired_correct(n: int, a_only: int, b_only: int, both: int):
    a = np.zeros(n, dtype=bool)
    b = np.zeros(n, dtype=bool)
    a[:a_only] = True
    b[a_only:a_only + b_only] = True
    a[a_only + b_only:a_only + b_only + both] = True
    b[a_only + b_only:a_only + b_only + both] = True
    perm = np.random.default_rng(5).permutation(n)
    return a[perm], b[perm]


def test_paired_bootstrap_matches_scipy_paired_bootstrap():
    n, a_only, b_only = 2000, 100, 260
    a, b = _paired_correct(n, a_only, b_only, both=1300)
    iv = paired_bootstrap_difference(a, b, n_resamples=OURS_B, seed=0)
    assert iv.method == "bootstrap" and iv.paired and iv.n == n
    assert iv.mean == pytest.approx((b_only - a_only) / n, abs=1e-15)
    p10, p01 = a_only / n, b_only / n
    sigma = math.sqrt((p10 + p01 - (p01 - p10) ** 2) / n)  # exact paired bootstrap SE
    assert iv.std == pytest.approx(sigma, rel=0.02)
    ref = st.bootstrap((a.astype(float), b.astype(float)),
                       lambda x, y, axis: np.mean(y, axis=axis) - np.mean(x, axis=axis),
                       paired=True, n_resamples=SCIPY_B, method="percentile", vectorized=True,
                       batch=1000, rng=np.random.default_rng(1))
    tol = _mc_tol(sigma, n)
    assert iv.low == pytest.approx(ref.confidence_interval.low, abs=tol)
    assert iv.high == pytest.approx(ref.confidence_interval.high, abs=tol)
    assert iv.excludes_zero
    # Unpaired resampling would have SE sqrt(pa(1-pa)/n + pb(1-pb)/n), ~1.5x larger here.
    pa, pb = (a_only + 1300) / n, (b_only + 1300) / n
    assert iv.std < 0.8 * math.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n)


def test_paired_bootstrap_straddles_zero_for_equal_models():
    a, b = _paired_correct(450, 40, 42, both=300)
    iv = paired_bootstrap_difference(a, b)
    assert iv.low < 0 < iv.high and not iv.excludes_zero


def test_paired_bootstrap_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match=r"correct_a has 5 images, correct_b has 4"):
        paired_bootstrap_difference(np.ones(5, bool), np.ones(4, bool))


# --- the record and its formatting ------------------------------------------------------------

def test_interval_is_frozen_plain_and_json_serialisable():
    iv = seed_interval(np.array([0.7, 0.8, 0.9], dtype=np.float32))
    d = dataclasses.asdict(iv)
    assert set(d) == {"mean", "std", "low", "high", "half_width", "n", "level", "method",
                      "paired", "n_resamples", "excludes_zero"}
    assert all(type(d[k]) is float for k in ("mean", "std", "low", "high", "half_width", "level"))
    assert type(d["n"]) is int and type(d["excludes_zero"]) is bool
    assert json.loads(json.dumps(d))["method"] == "t"
    json.dumps(dataclasses.asdict(bootstrap_interval(_labels(3, 5))), allow_nan=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        iv.mean = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="method"):
        Interval(0.5, 0.1, 0.4, 0.6, 0.1, 3, 0.95, "z")  # type: ignore[arg-type]


def test_format_interval():
    iv = Interval(0.749, 0.012, 0.728, 0.770, 0.021, 3, 0.95, "t")
    assert format_interval(iv) == "74.9 ± 2.1 (95% CI 72.8–77.0, t over 3 seeds)"
    assert format_interval(iv, percent=False) == ("0.749 ± 0.021 (95% CI 0.728–0.770, "
                                                  "t over 3 seeds)")
    bs = Interval(0.749, 0.02, 0.709, 0.789, 0.04, 450, 0.95, "bootstrap", n_resamples=10_000)
    assert format_interval(bs) == ("74.9 ± 4.0 (95% CI 70.9–78.9, "
                                   "bootstrap over 450 test images, 1 seed)")
    gain = Interval(0.031, 0.01, -0.004, 0.066, 0.035, 3, 0.9, "t", paired=True)
    assert format_interval(gain) == "+3.1 ± 3.5 (90% CI -0.4 to 6.6, paired t over 3 seeds)"
    pb = paired_bootstrap_difference(*_paired_correct(450, 10, 60, both=300))
    assert format_interval(pb).startswith("+11.1 ± ")
    assert format_interval(pb).endswith("paired bootstrap over 450 test images, 1 seed)")


def test_paired_by_seed_pairs_the_seeds_both_variants_have_per_budget():
    records = [{"variant": "a", "budget": "all", "seed": s, "top1": t}
               for s, t in enumerate([0.60, 0.62, 0.58])]
    records += [{"variant": "b", "budget": "all", "seed": s, "top1": t}
                for s, t in [(0, 0.70), (2, 0.66), (5, 0.99)]]  # seed 5: a has none
    records += [{"variant": "a", "budget": 10, "seed": 0, "top1": 0.3}]  # b has no budget 10
    (row,) = paired_by_seed(records, "a", "b")
    assert row["budget"] == "all" and row["seeds"] == [0, 2]
    assert row["a_mean"] == pytest.approx(0.59) and row["b_mean"] == pytest.approx(0.68)
    assert row["diff"] == paired_difference([0.60, 0.58], [0.70, 0.66])
