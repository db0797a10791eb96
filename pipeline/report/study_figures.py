"""The label-budget study's figures: test top-1 against labelled images per class
(:func:`curve_figure`) and the pretraining gain per budget (:func:`gain_figure`).

Both draw a :class:`~pipeline.evaluation.study.Study` as it is (nothing is recomputed): each point
at its interval's ``mean``, a band and error bars from ``low`` to ``high``. The x axis is the real
number of labelled images per class, ``Aggregate.labelled / num_classes`` (log scale), so "all"
sits at the dataset's mean per class; the ticks are at the budgets and name them. The look is
:mod:`.style`'s (a marker per kind), the interval's description :func:`.format.interval_basis`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from .format import budget_words, interval_basis
from .style import figure, marker

if TYPE_CHECKING:
    from ..evaluation.stats import Interval
    from ..evaluation.study import Study


def _per(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.3g}"


def budget_positions(study: Study, num_classes: int) -> dict[str, float]:
    """x of each budget: its labelled images per class (the mean over the variants' aggregates,
    which all have the same count)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    out = {}
    for b in study.budgets:
        counts = [a.labelled for a in study.aggregates if a.budget == b] or \
                 [g.labelled for g in study.gains if g.budget == b]
        out[b] = float(np.mean(counts)) / num_classes
    return out


def _tick_label(budget: str, per: float, num_classes: int) -> str:
    if budget == "all":
        labelled = round(per * num_classes)
        return f"all\n({labelled:,}/{num_classes:,} ≈ {_per(per)})"
    return budget if abs(per - int(budget)) <= 0.02 * int(budget) else f"{budget}\n(≈ {_per(per)})"


def _budget_axis(ax: Axes, study: Study, positions: Mapping[str, float],
                 num_classes: int) -> None:
    """Log x with a tick (named) per budget and nothing else; labels of ticks closer than ~11%
    of the axis are moved down a line, so they do not overlap."""
    xs = [positions[b] for b in study.budgets if positions[b] > 0]
    lo, hi = min(xs), max(xs)
    ax.set_xscale("log")
    ax.set_xlim(lo / (1.6 if hi / lo > 4 else 2.0), hi * (1.6 if hi / lo > 4 else 2.0))
    span = math.log10(ax.get_xlim()[1] / ax.get_xlim()[0])
    ticks, labels, prev, prev_lines = [], [], None, 0
    for b in study.budgets:
        x = positions[b]
        if x <= 0:
            continue
        label = _tick_label(b, x, num_classes)
        if prev is not None and math.log10(x / prev) / span < 0.11 and prev_lines:
            label = "\n" * prev_lines + label  # below its neighbour's label
            prev_lines = 0
        else:
            prev_lines = label.count("\n") + 1
        ticks.append(x)
        labels.append(label)
        prev = x
    ax.set_xticks(ticks, labels, fontsize=9)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("labelled training images per class (log scale)")
    ax.grid(alpha=0.3)


def _band(ax: Axes, x: np.ndarray, mean: np.ndarray, low: np.ndarray, high: np.ndarray, color,
          gid: str) -> None:
    ok = np.isfinite(low) & np.isfinite(high)
    if ok.sum() >= 2:
        band = ax.fill_between(x[ok], 100 * low[ok], 100 * high[ok], color=color, alpha=0.15,
                               lw=0)
        band.set_gid(f"band:{gid}")
    if ok.any():
        _, _, (bars,) = ax.errorbar(x[ok], 100 * mean[ok],
                                    yerr=[100 * (mean[ok] - low[ok]), 100 * (high[ok] - mean[ok])],
                                    fmt="none", ecolor=color, elinewidth=1.4, capsize=4, zorder=2)
        bars.set_gid(f"errorbar:{gid}")


def curve_figure(study: Study, colors_by_variant: Mapping[str, object], *,
                 num_classes: int) -> Figure:
    """Test top-1 (%) against labelled images per class: a line per variant through its means,
    the 95% interval as a band and error bars. The line of variant v is the Line2D with gid
    ``"mean:v"`` (its band ``"band:v"``, its error bars ``"errorbar:v"``)."""
    positions = budget_positions(study, num_classes)
    fig = figure(8.8, 5.2)
    ax = fig.add_subplot()
    variants = list(dict.fromkeys(a.variant for a in study.aggregates))
    fallback = iter(colormaps["tab10"](i % 10) for i in range(len(variants)))
    for v in variants:
        aggs = sorted((a for a in study.aggregates if a.variant == v),
                      key=lambda a: a.labelled)
        color = colors_by_variant.get(v) or next(fallback)
        x = np.array([a.labelled / num_classes for a in aggs])
        iv = [a.top1 for a in aggs]
        mean, low, high = (np.array([getattr(i, f) for i in iv]) for f in ("mean", "low", "high"))
        _band(ax, x, mean, low, high, color, v)
        (line,) = ax.plot(x, 100 * mean, color=color, lw=1.8, marker=marker(aggs[0].kind),
                          ms=7, markeredgecolor="black", markeredgewidth=0.6, zorder=3,
                          label=f"{v} ({aggs[0].kind})")
        line.set_gid(f"mean:{v}")
    _budget_axis(ax, study, positions, num_classes)
    ax.set_ylabel("test top-1 (%)")
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, 0.0), min(hi, 100.5))
    basis = interval_basis([a.top1 for a in study.aggregates], paired=False, sep="\n")
    ax.set_title(f"Test accuracy against the label budget\n{basis}", fontsize=11)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=9,
               title="variant", title_fontsize=9)
    return fig


def gain_figure(study: Study, *, num_classes: int) -> Figure:
    """Fine-tuned minus scratch test top-1 (points) per budget with its interval, a line per pair
    (gid ``"gain:<ft>-<scratch>"``), a dashed line at 0. Filled markers: the interval excludes 0;
    hollow: it does not. Pairs at the same budget are spread a little sideways."""
    fig = figure(8.8, 3.9)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="black", lw=1.0, ls="--", zorder=1)
    if not study.gains:
        ax.text(0.5, 0.5, "No fine-tuned/scratch pair to compare.", ha="center", va="center",
                transform=ax.transAxes, fontsize=12, color="#555")
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    positions = budget_positions(study, num_classes)
    pairs = list(dict.fromkeys((g.finetune, g.scratch) for g in study.gains))
    palette = colormaps["Dark2"]
    for i, (ft, sc) in enumerate(pairs):
        gains = sorted((g for g in study.gains if (g.finetune, g.scratch) == (ft, sc)),
                       key=lambda g: g.labelled)
        color = palette(i % 8)
        shift = 10 ** (0.012 * (i - (len(pairs) - 1) / 2))  # side by side on the log axis
        x = np.array([g.labelled / num_classes for g in gains]) * shift
        mean, low, high = (np.array([getattr(g.diff, f) for g in gains])
                           for f in ("mean", "low", "high"))
        _band(ax, x, mean, low, high, color, f"{ft}-{sc}")
        (line,) = ax.plot(x, 100 * mean, color=color, lw=1.6, zorder=3,
                          label=f"{ft} − {sc}")
        line.set_gid(f"gain:{ft}-{sc}")
        excl = np.array([g.diff.excludes_zero for g in gains])
        for filled in (True, False):
            sel = excl == filled
            if sel.any():
                ax.plot(x[sel], 100 * mean[sel], ls="", marker="D", ms=7, color=color,
                        markerfacecolor=color if filled else "white", markeredgecolor=color,
                        markeredgewidth=1.5, zorder=4)
    _budget_axis(ax, study, positions, num_classes)
    ax.set_ylabel("gain (points)")
    basis = interval_basis([g.diff for g in study.gains], paired=True, sep="\n")
    ax.set_title(f"Pretraining gain: fine-tuned − scratch test top-1\n{basis}", fontsize=11)
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], ls="", marker="D", color="gray", ms=7),
                Line2D([], [], ls="", marker="D", color="gray", markerfacecolor="white", ms=7)]
    labels += ["interval excludes 0", "interval includes 0"]
    fig.legend(handles, labels, loc="outside right upper", fontsize=9)
    return fig


def expected_max_figure(study: Study) -> Figure:
    """The expected best validation top-1 after n trials (Dodge et al. 2019), a line per search
    with a band of ± one standard deviation: against trials (left) and against training compute
    (right, the mean cost of n trials). The line of search s is gid ``"emax:<variant>/<budget>"``."""
    fig = figure(11.0, 4.4)
    by_trials, by_compute = fig.subplots(1, 2, sharey=True)
    colors = {"scratch": colormaps["tab10"](0), "finetune": colormaps["tab10"](1)}
    styles = ["-", "--", ":", "-."]
    budgets = list(dict.fromkeys(s.budget for s in study.searches))
    for s in study.searches:
        if s.curve is None:
            continue
        n = np.array(s.curve.n)
        mean, std = np.array(s.curve.mean) * 100, np.array(s.curve.std) * 100
        tflops = np.array(s.curve.compute) / 1e12
        color = colors.get(s.arm, "gray")
        style = styles[budgets.index(s.budget) % len(styles)]
        name = s.variant if s.variant == s.arm else f"{s.variant} ({s.arm})"
        label = f"{name}, {'all labels' if s.budget == 'all' else s.budget + ' per class'}"
        for ax, x in ((by_trials, n), (by_compute, tflops)):
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, lw=0)
            (line,) = ax.plot(x, mean, style, color=color, marker=marker(s.arm), ms=5, lw=1.8,
                              label=label)
            line.set_gid(f"emax:{s.variant}/{s.budget}")
    by_trials.set_xlabel("trials n")
    by_trials.set_ylabel("expected best val top-1 (%)")
    by_trials.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_compute.set_xlabel("training compute of n trials (TFLOPs, mean per trial × n)")
    fig.suptitle("Expected best validation accuracy of a search of n trials (band: ± 1 s.d.)",
                 fontsize=11)
    handles, labels = by_trials.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, max(1, len(labels))),
               fontsize=9)
    return fig


def dot_figure(study: Study, colors_by_variant: Mapping[str, object]) -> Figure:
    """The study at its one label budget: left, each variant's mean test top-1 (%) as a dot with
    its 95% interval as a bar (gids ``"dot:<variant>"``, ``"bar:<variant>"``); right, each
    pair's gain (points) the same way, a dashed line at 0 (``"dot:<ft> − <scratch>"``), left out
    when there is no pair. Variants and pairs top down in study order; filled gain dots where the
    interval excludes 0."""
    (budget,) = study.budgets
    variants = list(dict.fromkeys(a.variant for a in study.aggregates))
    pairs = [g for g in study.gains if g.budget == budget]
    rows = max(len(variants), len(pairs), 1)
    fig = figure(10.0 if pairs else 5.5, 1.3 + 0.45 * rows)
    if pairs:
        left, right = fig.subplots(1, 2, gridspec_kw={"wspace": 0.08})
    else:  # no fine-tuned/scratch pair (one arm only): no gain panel
        left, right = fig.subplots(1, 1), None
    fallback = iter(colormaps["tab10"](i % 10) for i in range(len(variants)))

    def dots(ax: Axes, items: list[tuple[str, Interval, object, bool]]) -> None:
        for y, (label, iv, color, filled) in enumerate(items):
            lo = 100 * (iv.mean - iv.low) if math.isfinite(iv.low) else 0.0
            hi = 100 * (iv.high - iv.mean) if math.isfinite(iv.high) else 0.0
            dot, _, (bar,) = ax.errorbar(
                [100 * iv.mean], [y], xerr=[[lo], [hi]], fmt="o", ms=8, color=color,
                markerfacecolor=color if filled else "white", markeredgewidth=1.5,
                elinewidth=1.6, capsize=4)
            dot.set_gid(f"dot:{label}")
            bar.set_gid(f"bar:{label}")
        ax.set_yticks(range(len(items)), [i[0] for i in items])
        ax.set_ylim(len(items) - 0.5, -0.5)
        ax.grid(axis="x", alpha=0.3)

    aggs = {a.variant: a for a in study.aggregates}
    dots(left, [(v, aggs[v].top1, colors_by_variant.get(v) or next(fallback), True)
                for v in variants])
    left.set_xlabel("test top-1 (%)")
    left.set_title(f"Test accuracy ({budget_words(budget)})\n"
                   + interval_basis([a.top1 for a in study.aggregates], paired=False, sep="\n"),
                   fontsize=10)
    if right is None:
        return fig
    palette = colormaps["Dark2"]
    right.axvline(0.0, color="black", lw=1.0, ls="--")
    dots(right, [(f"{g.finetune} − {g.scratch}", g.diff, palette(i % 8), g.diff.excludes_zero)
                 for i, g in enumerate(pairs)])
    right.yaxis.tick_right()
    right.set_xlabel("pretraining gain (points); hollow: the interval includes 0")
    right.set_title("Fine-tuned − scratch, paired seed by seed\n"
                    + interval_basis([g.diff for g in pairs], paired=True, sep="\n"),
                    fontsize=10)
    return fig


def study_figures(study: Study, colors_by_variant: Mapping[str, object],
                  num_classes: int) -> Sequence[tuple[str, Figure, str]]:
    """(file name, figure, caption) of the study's figures, in page order: with one label budget
    a dot plot, with several the curve and the gain per budget."""
    basis = interval_basis([a.top1 for a in study.aggregates], paired=False)
    searches = []
    if study.searches:
        searches = [("expected_max.png", expected_max_figure(study),
                     "Expected best validation top-1 after n trials of each search (Dodge et al. "
                     "2019: the expected maximum of n draws from the trials' scores, band ± 1 "
                     "s.d.), against trials and against training compute. It assumes independent "
                     "draws: for a grid or TPE it reads as the best of n trials drawn at random "
                     "from those that ran. Pruned trials count with the score they had reached.")]
    if len(study.budgets) == 1:
        return [("study.png", dot_figure(study, colors_by_variant),
                 f"One label budget ({budget_words(study.budgets[0])}): each variant's mean test "
                 f"top-1 as a dot and its 95% interval as a bar ({basis}); right, the pretraining "
                 "gain of each fine-tuned/scratch pair, paired seed by seed, filled where its "
                 "interval excludes 0. With several budgets this becomes a curve against the "
                 "label budget."), *searches]
    return [
        ("curve.png", curve_figure(study, colors_by_variant, num_classes=num_classes),
         f"Test top-1 against the number of labelled training images per class (log scale; "
         f"'all' at the training set's mean per class): a line per variant through the means, "
         f"the band and error bars the interval ({basis})."),
        ("gain.png", gain_figure(study, num_classes=num_classes),
         "Pretraining gain per label budget: fine-tuned minus scratch test top-1 in percentage "
         "points, paired seed by seed, with its interval; filled markers where the interval "
         "excludes 0."),
        *searches,
    ]
