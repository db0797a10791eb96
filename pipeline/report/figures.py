"""The report's per-variant figures, drawn from the numbers of each variant's
:class:`~pipeline.evaluation.metrics.ClassificationMetrics` (nothing is computed here but what a
figure shows: row percentages, which mistakes to show) and its training history (one
:class:`~pipeline.records.EpochRow` per epoch).

Each function returns a matplotlib figure (:mod:`.style`: Agg canvas, one colour per variant as
given, a marker per kind); the caller rasterises it (:func:`.style.png_bytes`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, LogLocator, MaxNLocator, NullFormatter

from ..evaluation.metrics import ClassificationMetrics, row_normalise
from .format import pct
from .style import figure, marker, message, show_image

if TYPE_CHECKING:
    from ..records import EpochRow
    from .types import VariantResult

_CURVE_PANELS = (("val_acc", "validation accuracy"), ("val_loss", "validation loss"),
                 ("train_loss", "training loss"))
_ANNOTATE_MAX_CLASSES = 20  # confusion-matrix cells get their percentage up to this many classes


def per_class_figure(variants: Sequence[VariantResult], classes: Sequence[str],
                     colors: Sequence) -> Figure:
    """Grouped bars; past 30 classes, in stacked panels of 25 classes each."""
    k, v = len(classes), len(variants)
    per_row = k if k <= 30 else 25
    n_rows = int(math.ceil(k / per_row))
    fig = figure(min(max(7.0, 0.2 * per_row * (v + 1) + 1.5), 20.0), 3.4 * n_rows + 1.0)
    axes = fig.subplots(n_rows, 1, squeeze=False)[:, 0]
    width = 0.8 / v
    rotate = any(len(str(c)) > 4 for c in classes) and per_row > 6
    for r, ax in enumerate(axes):
        lo, hi = r * per_row, min(k, (r + 1) * per_row)
        x = np.arange(hi - lo)
        for i, variant in enumerate(variants):
            m = variant.metrics
            ax.bar(x + (i - (v - 1) / 2) * width, 100 * m.per_class[lo:hi], width,
                   color=colors[i], label=f"{variant.name} (top-1 {pct(m.top1)})")
        ax.set_xticks(x, [str(c) for c in classes[lo:hi]], rotation=45 if rotate else 0,
                      ha="right" if rotate else "center", fontsize=9 if per_row <= 12 else 8)
        ax.set_xlim(-0.6, per_row - 0.4)
        ax.set_ylim(0, 100)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[-1].set_xlabel("class")
    axes[0].set_title("Per-class test accuracy")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center",
               ncols=min(v, 4), frameon=False, fontsize=9)
    return fig


def confusion_figure(name: str, counts: np.ndarray, classes: Sequence[str],
                     top1: float) -> Figure:
    """``counts``: the (K, K) confusion matrix, rows the true class; shown row-normalised."""
    k = len(classes)
    norm = row_normalise(counts)
    size = float(np.clip(0.5 * k + 2.5, 6.0, 13.0))
    fig = figure(size + 1.2, size)
    ax = fig.add_subplot()
    im = ax.imshow(np.nan_to_num(norm), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label("fraction of the true class")
    fs = 9 if k <= 12 else (7 if k <= 30 else 4.5)
    totals = counts.sum(axis=1)
    names = [str(c) for c in classes]
    ticks = np.arange(k)
    if k <= 30:
        ax.set_xticks(ticks, names, rotation=45, ha="right", fontsize=fs)
        ax.set_yticks(ticks, [f"{c} ({t})" for c, t in zip(names, totals)], fontsize=fs)
    else:  # small print, and past 100 classes every n-th one
        step = int(math.ceil(k / 100))
        ax.set_xticks(ticks[::step], names[::step], rotation=90, fontsize=fs)
        ax.set_yticks(ticks[::step], names[::step], fontsize=fs)
    if k <= _ANNOTATE_MAX_CLASSES:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    share = round(100 * norm[i, j])
                    ax.text(j, i, str(share) if share >= 1 else "<1", ha="center", va="center",
                            fontsize=fs, color="white" if share > 55 else "#222")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (test images)")
    note = ", cells in % of the row" if k <= _ANNOTATE_MAX_CLASSES else ""
    ax.set_title(f"{name}: confusion matrix (top-1 {pct(top1)}{note})", fontsize=11)
    return fig


def reliability_figure(variants: Sequence[VariantResult], colors: Sequence,
                       n_bins: int) -> Figure:
    """Each variant's ``metrics.reliability`` bins (``n_bins`` of them) over the diagonal, and the
    share of images per bin below."""
    fig = figure(8.4, 6.2)
    ax, hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfect calibration")
    edges = np.linspace(0, 1, n_bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    n = len(variants)
    for i, v in enumerate(variants):
        conf, acc, count = v.metrics.reliability
        seen = count > 0
        ax.plot(conf[seen], acc[seen], marker="o", ms=4, lw=1.6, color=colors[i], clip_on=False,
                label=f"{v.name} (ECE {pct(v.metrics.ece)})")
        w = 0.8 / n_bins / n
        hist.bar(centers + (i - (n - 1) / 2) * w, count / max(count.sum(), 1), w,
                 color=colors[i])
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)  # markers at 0 and 1 stay whole
    ax.set_ylabel("accuracy in bin")
    ax.set_title(f"Reliability diagram ({n_bins} equal-width confidence bins)")
    ax.grid(alpha=0.3)
    hist.set_ylabel("share of\nimages")
    hist.set_xlabel("confidence (top-1 probability)")
    hist.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=9)
    return fig


def _series(history: Sequence[EpochRow], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of the ``key`` column where it is not NaN."""
    pts = [(r.epoch, getattr(r, key)) for r in history if math.isfinite(getattr(r, key))]
    return (np.array([p[0] for p in pts], dtype=float),
            np.array([p[1] for p in pts], dtype=float))


def curves_figure(variants: Sequence[VariantResult], colors: Sequence) -> Figure:
    panels = [(key, title) for key, title in _CURVE_PANELS
              if any(len(_series(v.history, key)[0]) for v in variants)]
    if not panels:
        fig = figure(7.0, 2.5)
        message(fig.add_subplot(), "No training history was recorded for any variant.")
        return fig
    fig = figure(4.6 * len(panels) + 1.6, 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    handles = {}
    for ax, (key, title) in zip(axes, panels):
        for v, color in zip(variants, colors):
            x, y = _series(v.history, key)
            if len(x):
                scale = 100 if key.endswith("acc") else 1
                (line,) = ax.plot(x, scale * y, color=color, lw=1.6, marker="o" if len(x) < 15
                                  else None, ms=3, label=v.name)
                handles.setdefault(v.name, line)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy (%)" if key.endswith("acc") else "cross-entropy")
        ax.grid(alpha=0.3)
    skipped = [v.name for v in variants if not v.history]
    if skipped:
        fig.suptitle(f"no history: {', '.join(skipped)}", fontsize=9, color="#555")
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=9)
    return fig


def tradeoff_figure(variants: Sequence[VariantResult], colors: Sequence, *, x_of: str) -> Figure:
    """Test top-1 against ``x_of`` ("num_params" or "images_per_s"), log x, a point per variant."""
    fig = figure(7.6, 4.8)
    ax = fig.add_subplot()
    what, unit = {"num_params": ("parameters", "parameters"),
                  "images_per_s": ("inference throughput", "images/s at evaluation")}[x_of]
    points = []
    for v, color in zip(variants, colors):
        x = float(getattr(v, x_of))
        if math.isfinite(x) and x > 0:
            points.append((v, color, x, 100 * v.metrics.top1))
    missing = [v.name for v in variants if v not in {p[0] for p in points}]
    if not points:
        message(ax, f"No variant has a measured {what}.")
        return fig
    for v, color, x, y in points:
        ax.scatter(x, y, s=80, color=color, marker=marker(v.kind), edgecolor="black", lw=0.6,
                   zorder=3)
        ax.annotate(v.name, (x, y), xytext=(7, 5), textcoords="offset points", fontsize=9,
                    color=color)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 2M, 500, 1k: no mathtext powers
    ax.xaxis.set_minor_formatter(NullFormatter())
    xs = np.array([p[2] for p in points])
    ys = np.array([p[3] for p in points])
    ax.set_xlim(xs.min() / 2.5, xs.max() * 2.5)  # room for the labels
    ax.set_ylim(max(0.0, ys.min() - 8), max(min(100.0, ys.max() + 8), min(ys.max() + 4, 102.0)))
    ax.set_xlabel(f"{unit} (log scale)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"Test accuracy vs {what}")
    ax.grid(alpha=0.3, which="both")
    kinds = sorted({v.kind for v, *_ in points})
    legend = [Line2D([], [], ls="", marker=marker(k), color="gray", markeredgecolor="black",
                     ms=8, label=k) for k in kinds]
    if missing:
        legend.append(Line2D([], [], ls="", label=f"not measured: {', '.join(missing)}"))
    fig.legend(handles=legend, loc="outside right upper", fontsize=9, title="kind",
               title_fontsize=9)
    return fig


def most_confident_mistakes(metrics: ClassificationMetrics, labels: np.ndarray,
                            n: int) -> np.ndarray:
    """Indices of up to ``n`` misclassified images, the most confident (highest probability of the
    wrongly predicted class) first; ties in test-set order."""
    pred = metrics.predictions
    wrong = np.flatnonzero(pred != np.asarray(labels))
    conf = metrics.probs[wrong, pred[wrong]]
    return wrong[np.argsort(-conf, kind="stable")][:max(n, 0)]


def misclassified_figure(name: str, images: np.ndarray, labels: np.ndarray,
                         metrics: ClassificationMetrics, classes: Sequence[str],
                         n: int) -> Figure:
    idx = most_confident_mistakes(metrics, labels, n)
    pred, probs = metrics.predictions, metrics.probs
    n_wrong = int(np.count_nonzero(pred != labels))
    if not len(idx):
        fig = figure(7.0, 2.5)
        message(fig.add_subplot(), f"{name} made no mistakes on the {len(labels)} test images."
                 if not n_wrong else f"{name}: {n_wrong} mistakes, none asked to be shown.")
        return fig
    cols = min(len(idx), 4 if max(len(str(c)) for c in classes) > 6 else 6)
    rows = int(math.ceil(len(idx) / cols))
    fig = figure(2.7 * cols, 2.65 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(idx):]:
        ax.axis("off")
    for ax, i in zip(axes, idx):
        p = pred[i]
        show_image(ax, images[i])
        ax.set_title(f"{classes[labels[i]]} → {classes[p]}\n(p={probs[i, p]:.2f})", fontsize=9)
    fig.suptitle(f"{name}: the {len(idx)} most confident of its {n_wrong} mistakes "
                 "(true → predicted)", fontsize=11)
    return fig


def _upsample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(g, g) -> ``size`` bilinear, scaled to [0, 1] by its maximum."""
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    heat = torch.nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=False)
    heat = heat[0, 0].clamp(min=0)
    return (heat / heat.max().clamp(min=1e-12)).numpy()


def attention_figure(variants: Sequence[VariantResult], images: np.ndarray, labels: np.ndarray,
                     index: np.ndarray, classes: Sequence[str], colors: Sequence) -> Figure:
    """A row per image of ``index``: the image, then each variant's rollout map over it (the
    variants without maps are left out) titled with its prediction."""
    with_maps = [(v, c) for v, c in zip(variants, colors) if v.attention is not None]
    rows, cols = len(index), 1 + len(with_maps)
    fig = figure(2.3 * cols, 2.35 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, i in enumerate(index):
        img = images[i]
        scale = max(1, int(math.ceil(96 / max(img.shape[:2]))))  # display pixels per pixel
        big = img.repeat(scale, axis=0).repeat(scale, axis=1)
        show_image(axes[r, 0], big)
        axes[r, 0].set_title(f"#{i}: {classes[labels[i]]}", fontsize=9)
        for c, (v, color) in enumerate(with_maps, start=1):
            ax = axes[r, c]
            show_image(ax, big)
            heat = _upsample(v.attention[r], big.shape[:2])
            rgba = colormaps["jet"](heat)
            rgba[..., 3] = 0.75 * heat  # the image shows through where attention is low
            ax.imshow(rgba, interpolation="nearest")
            p = int(v.metrics.predictions[i])
            mark = "✓" if p == labels[i] else "✗"
            ax.set_title(f"{v.name}\n{mark} {classes[p]} ({v.metrics.probs[i, p]:.2f})",
                         fontsize=9, color=color if p == labels[i] else "#c00000")
    fig.suptitle("Attention rollout to the patches\n(from [CLS], or the patch mean when "
                 "avg-pooled; red = more)", fontsize=11)
    return fig
