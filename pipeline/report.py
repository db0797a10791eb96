"""The comparison report of the evaluate stage: every trained variant on the same test split.

``build_report`` takes one :class:`VariantResult` per variant (its softmax probabilities on the
test split, its training history and cost figures) and writes, under ``out_dir``:

- ``figures/*.png``: per-class accuracy, a confusion matrix per variant, a reliability diagram,
  the training curves, accuracy against parameters and against throughput, the best variant's most
  confident mistakes and, when rollout maps are given, attention overlays;
- ``report.html``: ONE self-contained page (the PNGs inlined as base64 data URIs, no scripts, no
  external assets) with the table of variants and every figure;
- ``report.md``: the same table in markdown (what used to be ``comparison.md``);
- ``per_class.csv`` and ``curves/<variant>.csv``: the numbers behind the figures, for DVC plots.

Design:

- Metrics come from torchmetrics' functional API (``multiclass_accuracy``,
  ``multiclass_calibration_error``, ``multiclass_confusion_matrix``), the implementation the
  training loop's accuracy uses. The reliability diagram's bins are those of the ECE: ``n_bins``
  equal-width bins of the top-1 probability, left-closed as torchmetrics bins them, the top bin
  closed (``[1 - 1/n_bins, 1]``). torchmetrics would put a confidence of exactly 1.0 (a float32
  softmax saturates there) in a bin of its own, so probabilities are clipped just below 1 first:
  the ECE and :func:`reliability_bins` then agree exactly.
- Everything is rendered in memory first (matplotlib's object API on an Agg canvas: no pyplot,
  no global backend switch), then written with :mod:`pipeline.atomic`, ``report.html`` last: a
  failure leaves no report, or the previous one, never a partial file. The directories are made
  before the rendering, so an unwritable ``out_dir`` fails at once. Files of an earlier report
  that this one does not write (a dropped variant's confusion matrix) are left alone: DVC
  removes a stage's outputs before it runs.
- One colour per variant (in the order given) in every figure; markers tell scratch from
  finetune.

    >>> summary = build_report(Path("results/report"), variants, labels=y, images=x,
    ...                        classes=classes, dataset="cifar10")
    >>> summary["finetune"]["top1"], summary["finetune"]["ece"]
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, LogLocator, MaxNLocator, NullFormatter
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
)

from .atomic import atomic_write, atomic_write_text

DPI = 120
NLL_EPS = 1e-12  # probabilities are clipped to this before the log: a 0 costs 27.6 nats, not inf
CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
_HISTORY_KEYS = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss",
                 "val_acc": "val/acc", "lr": "lr"}
_CURVE_PANELS = (("val/acc", "validation accuracy"), ("val/loss", "validation loss"),
                 ("train/loss", "training loss"))
_MARKERS = {"scratch": "o", "finetune": "^"}
_ANNOTATE_MAX_CLASSES = 20  # confusion-matrix cells get their percentage up to this many classes
_BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass(frozen=True, eq=False)  # eq=False: array fields make == ambiguous, identity is enough
class VariantResult:
    """One trained variant evaluated on the test split."""

    name: str  # e.g. "scratch_ti4", "finetune_b16": also a file name, so [A-Za-z0-9_.+-]
    kind: str  # "scratch" | "finetune"
    model: str  # short description, e.g. "192d/9L/4p@32"
    num_params: int
    gflops: float  # forward GFLOPs per image (may be nan)
    train_seconds: float
    images_per_s: float  # inference throughput measured at evaluation (may be nan)
    probs: np.ndarray  # (N, K) float32 softmax probabilities on the test split
    history: list[dict] = field(repr=False)  # per epoch: "epoch", "train/loss", "val/acc", ...
    attention: np.ndarray | None = field(default=None, repr=False)  # (M, g, g) rollout maps


# ---------------------------------------------------------------------------------- metrics


def _tensors(probs: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 probabilities clipped to [0, 1) (see the module docstring) and int64 labels."""
    p = np.clip(np.asarray(probs, dtype=np.float32), 0.0, _BELOW_ONE)
    return torch.from_numpy(p), torch.from_numpy(np.array(labels, dtype=np.int64))


def predictions(probs: np.ndarray) -> np.ndarray:
    """(N,) top-1 classes, ties broken as torchmetrics breaks them (``torch.argmax``)."""
    return _tensors(probs, np.zeros(0))[0].argmax(dim=1).numpy()


def confusion_counts(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K, K) int counts, rows the true class, columns the predicted one."""
    p, y = _tensors(probs, labels)
    return multiclass_confusion_matrix(p, y, p.shape[1]).numpy().astype(np.int64)


def row_normalise(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; nan for a class with no test images."""
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)


def variant_metrics(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> dict:
    """top1, top5 (top-min(5, K)), loss (mean NLL), ece (``n_bins`` bins), per_class (K,) accuracy
    (nan where a class has no test image) and confusion (K, K) counts."""
    p, y = _tensors(probs, labels)
    k = p.shape[1]
    confusion = confusion_counts(probs, labels)
    p_true = np.asarray(probs, dtype=np.float64)[np.arange(len(y)), y.numpy()]
    return {
        "top1": multiclass_accuracy(p, y, k, average="micro").item(),
        "top5": multiclass_accuracy(p, y, k, top_k=min(5, k), average="micro").item(),
        "loss": float(-np.log(np.clip(p_true, NLL_EPS, 1.0)).mean()),
        "ece": multiclass_calibration_error(p, y, k, n_bins=n_bins, norm="l1").item(),
        "per_class": np.diag(row_normalise(confusion)).copy(),
        "confusion": confusion,
    }


def reliability_bins(probs: np.ndarray, labels: np.ndarray,
                     n_bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean confidence, accuracy, count) per equal-width bin of the top-1 probability, the bins
    of the ECE: ``sum(count / N * |accuracy - confidence|)`` over non-empty bins is the ECE that
    :func:`variant_metrics` reports. Empty bins have nan confidence and accuracy."""
    p, y = _tensors(probs, labels)
    conf, pred = p.max(dim=1)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype)
    idx = (torch.bucketize(conf, edges, right=True) - 1).numpy()  # as torchmetrics bins
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf.double().numpy(), minlength=n_bins)
    correct = np.bincount(idx, weights=(pred == y).double().numpy(), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return conf_sum / count, correct / count, count


def most_confident_mistakes(probs: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to ``n`` misclassified images, the most confident (highest probability of the
    wrongly predicted class) first; ties in test-set order."""
    probs = np.asarray(probs)
    pred = predictions(probs)
    wrong = np.flatnonzero(pred != np.asarray(labels))
    conf = probs[wrong, pred[wrong]]
    return wrong[np.argsort(-conf, kind="stable")][:max(n, 0)]


# ------------------------------------------------------------------------------- formatting


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


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if math.isfinite(x) else "–"


def _num(x: float, fmt: str) -> str:
    return format(x, fmt) if x is not None and math.isfinite(x) else "–"


def _topk_label(num_classes: int) -> str:
    return f"top-{min(5, num_classes)}"


def _table(summary: dict[str, dict], variants: Sequence[VariantResult],
           num_classes: int) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """(header, rows of cells, which cells are the best of an accuracy column)."""
    header = ["variant", "kind", "model", "top-1", _topk_label(num_classes), "loss", "ECE",
              "params (M)", "GFLOPs", "train time", "images/s"]
    best = {key: max(s[key] for s in summary.values()) for key in ("top1", "top5")}
    rows, marks = [], []
    for v in variants:
        s = summary[v.name]
        rows.append([v.name, v.kind, v.model, _pct(s["top1"]), _pct(s["top5"]),
                     _num(s["loss"], ".4f"), _pct(s["ece"]), _num(v.num_params / 1e6, ".3g"),
                     _num(v.gflops, ".3g"), human_duration(v.train_seconds),
                     _num(v.images_per_s, ",.0f")])
        marks.append([False, False, False, s["top1"] == best["top1"], s["top5"] == best["top5"]]
                     + [False] * 6)
    return header, rows, marks


def pretraining_gain(summary: dict[str, dict], variants: Sequence[VariantResult]) -> str | None:
    """The sentence 'best finetune minus best scratch top-1', or None without one of each."""
    best = {}
    for kind in ("scratch", "finetune"):
        named = [v.name for v in variants if v.kind == kind]
        if named:
            best[kind] = max(named, key=lambda n: summary[n]["top1"])  # first of equals
    if len(best) < 2:
        return None
    ft, sc = best["finetune"], best["scratch"]
    diff = 100 * (summary[ft]["top1"] - summary[sc]["top1"])
    return (f"Pretraining gain: best finetune ({ft}, {_pct(summary[ft]['top1'])}) minus best "
            f"scratch ({sc}, {_pct(summary[sc]['top1'])}) = {diff:+.2f} points top-1.")


def markdown_report(summary: dict[str, dict], variants: Sequence[VariantResult], *,
                    dataset: str, num_classes: int, num_images: int, n_bins: int) -> str:
    header, rows, marks = _table(summary, variants, num_classes)
    right = {"top-1", _topk_label(num_classes), "loss", "ECE", "params (M)", "GFLOPs",
             "train time", "images/s"}
    lines = [
        f"# ViT from scratch vs pretrained: {dataset} test split",
        "",
        f"{num_images} test images, {num_classes} classes. Best accuracy in bold; ECE: expected "
        f"calibration error over {n_bins} equal-width confidence bins. Figures: report.html.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if h in right else "---" for h in header) + "|",
    ]
    for cells, best in zip(rows, marks):
        cells = [c.replace("|", "\\|") for c in cells]
        lines.append("| " + " | ".join(f"**{c}**" if b else c for c, b in zip(cells, best)) + " |")
    gain = pretraining_gain(summary, variants)
    if gain:
        lines += ["", gain]
    return "\n".join(lines) + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.95em; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.7em; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #dff0d8; }
figure { margin: 2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.95em; margin-top: 0.4em; }
p.gain { font-size: 1.1em; }
"""


def html_report(summary: dict[str, dict], variants: Sequence[VariantResult],
                figures: Sequence[tuple[str, bytes, str]], *, dataset: str, num_classes: int,
                num_images: int, n_bins: int) -> str:
    """The page; ``figures``: (file name, PNG bytes, caption), inlined in that order."""
    e = html.escape
    header, rows, marks = _table(summary, variants, num_classes)
    numeric = set(range(3, len(header)))
    out = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>ViT from scratch vs pretrained: {e(dataset)}</title>",
        f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>ViT from scratch vs pretrained: {e(dataset)} test split</h1>",
        f"<p>{num_images} test images, {num_classes} classes. Best accuracy highlighted. ECE: "
        f"expected calibration error over {n_bins} equal-width confidence bins.</p>",
        "<table>", "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead>",
        "<tbody>",
    ]
    for cells, best in zip(rows, marks):
        tds = []
        for i, (c, b) in enumerate(zip(cells, best)):
            cls = " ".join(n for n, on in (("num", i in numeric), ("best", b)) if on)
            tds.append(f'<td class="{cls}">{e(c)}</td>' if cls else f"<td>{e(c)}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out += ["</tbody>", "</table>"]
    gain = pretraining_gain(summary, variants)
    if gain:
        out.append(f'<p class="gain">{e(gain)}</p>')
    for name, png, caption in figures:
        data = base64.b64encode(png).decode("ascii")
        out += ["<figure>", f'<img src="data:image/png;base64,{data}" alt="{e(name)}">',
                f"<figcaption>{e(caption)}</figcaption>", "</figure>"]
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _csv_cell(x) -> str:
    if x is None:
        return ""
    x = float(x)
    return format(x, ".8g") if math.isfinite(x) else ""


def curves_csv(history: Sequence[dict]) -> str:
    """epoch,train_loss,train_acc,val_loss,val_acc,lr per epoch; empty cells where missing."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CURVE_COLUMNS)
    for row in history:
        w.writerow([int(row["epoch"])]
                   + [_csv_cell(row.get(_HISTORY_KEYS[c])) for c in CURVE_COLUMNS[1:]])
    return buf.getvalue()


def per_class_csv(summary: dict[str, dict], classes: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class", *summary])
    for c in classes:
        w.writerow([c, *(_csv_cell(s["per_class_acc"][c]) for s in summary.values())])
    return buf.getvalue()


# ---------------------------------------------------------------------------------- figures


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, whatever pyplot's backend is
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def variant_colors(n: int) -> list[tuple]:
    """n distinct colours: tab10, then tab20, then evenly spaced hues."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


def _marker(kind: str) -> str:
    return _MARKERS.get(kind, "s")


def _message(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="#555",
            transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _show_image(ax: Axes, image: np.ndarray) -> None:
    """uint8 (H, W, C) with C in {1, 3}, gray for C=1, pixels upscaled nearest."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def per_class_figure(summary: dict[str, dict], classes: Sequence[str],
                     colors: Sequence) -> Figure:
    """Grouped bars; past 30 classes, in stacked panels of 25 classes each."""
    k, v = len(classes), len(summary)
    per_row = k if k <= 30 else 25
    n_rows = int(math.ceil(k / per_row))
    fig = _figure(min(max(7.0, 0.2 * per_row * (v + 1) + 1.5), 20.0), 3.4 * n_rows + 1.0)
    axes = fig.subplots(n_rows, 1, squeeze=False)[:, 0]
    acc = {name: 100 * np.array([s["per_class_acc"][c] for c in classes], dtype=float)
           for name, s in summary.items()}
    width = 0.8 / v
    rotate = any(len(str(c)) > 4 for c in classes) and per_row > 6
    for r, ax in enumerate(axes):
        lo, hi = r * per_row, min(k, (r + 1) * per_row)
        x = np.arange(hi - lo)
        for i, (name, s) in enumerate(summary.items()):
            ax.bar(x + (i - (v - 1) / 2) * width, acc[name][lo:hi], width, color=colors[i],
                   label=f"{name} (top-1 {_pct(s['top1'])})")
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
    k = len(classes)
    norm = row_normalise(counts)
    size = float(np.clip(0.5 * k + 2.5, 6.0, 13.0))
    fig = _figure(size + 1.2, size)
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
                    pct = round(100 * norm[i, j])
                    ax.text(j, i, str(pct) if pct >= 1 else "<1", ha="center", va="center",
                            fontsize=fs, color="white" if pct > 55 else "#222")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (test images)")
    note = ", cells in % of the row" if k <= _ANNOTATE_MAX_CLASSES else ""
    ax.set_title(f"{name}: confusion matrix (top-1 {_pct(top1)}{note})", fontsize=11)
    return fig


def reliability_figure(bins: dict[str, tuple], summary: dict[str, dict], colors: Sequence,
                       n_bins: int) -> Figure:
    fig = _figure(8.4, 6.2)
    ax, hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfect calibration")
    edges = np.linspace(0, 1, n_bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    n = len(bins)
    for i, (name, (conf, acc, count)) in enumerate(bins.items()):
        seen = count > 0
        ax.plot(conf[seen], acc[seen], marker="o", ms=4, lw=1.6, color=colors[i], clip_on=False,
                label=f"{name} (ECE {_pct(summary[name]['ece'])})")
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


def _series(history: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["epoch"], r[key]) for r in history
           if r.get(key) is not None and math.isfinite(float(r[key]))]
    return (np.array([p[0] for p in pts], dtype=float),
            np.array([p[1] for p in pts], dtype=float))


def curves_figure(variants: Sequence[VariantResult], colors: Sequence) -> Figure:
    panels = [(key, title) for key, title in _CURVE_PANELS
              if any(len(_series(v.history, key)[0]) for v in variants)]
    if not panels:
        fig = _figure(7.0, 2.5)
        _message(fig.add_subplot(), "No training history was recorded for any variant.")
        return fig
    fig = _figure(4.6 * len(panels) + 1.6, 4.0)
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


def tradeoff_figure(variants: Sequence[VariantResult], summary: dict[str, dict],
                    colors: Sequence, *, x_of: str) -> Figure:
    """Test top-1 against ``x_of`` ("num_params" or "images_per_s"), log x, a point per variant."""
    fig = _figure(7.6, 4.8)
    ax = fig.add_subplot()
    what, unit = {"num_params": ("parameters", "parameters"),
                  "images_per_s": ("inference throughput", "images/s at evaluation")}[x_of]
    points = []
    for v, color in zip(variants, colors):
        x = float(getattr(v, x_of))
        if math.isfinite(x) and x > 0:
            points.append((v, color, x, 100 * summary[v.name]["top1"]))
    missing = [v.name for v in variants if v not in {p[0] for p in points}]
    if not points:
        _message(ax, f"No variant has a measured {what}.")
        return fig
    for v, color, x, y in points:
        ax.scatter(x, y, s=80, color=color, marker=_marker(v.kind), edgecolor="black", lw=0.6,
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
    legend = [Line2D([], [], ls="", marker=_marker(k), color="gray", markeredgecolor="black",
                     ms=8, label=k) for k in kinds]
    if missing:
        legend.append(Line2D([], [], ls="", label=f"not measured: {', '.join(missing)}"))
    fig.legend(handles=legend, loc="outside right upper", fontsize=9, title="kind",
               title_fontsize=9)
    return fig


def misclassified_figure(name: str, images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                         classes: Sequence[str], n: int) -> Figure:
    idx = most_confident_mistakes(probs, labels, n)
    n_wrong = int(np.count_nonzero(predictions(probs) != labels))
    if not len(idx):
        fig = _figure(7.0, 2.5)
        _message(fig.add_subplot(), f"{name} made no mistakes on the {len(labels)} test images."
                 if not n_wrong else f"{name}: {n_wrong} mistakes, none asked to be shown.")
        return fig
    pred = predictions(probs[idx])
    cols = min(len(idx), 4 if max(len(str(c)) for c in classes) > 6 else 6)
    rows = int(math.ceil(len(idx) / cols))
    fig = _figure(2.7 * cols, 2.65 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(idx):]:
        ax.axis("off")
    for ax, i, p in zip(axes, idx, pred):
        _show_image(ax, images[i])
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
    with_maps = [(v, c) for v, c in zip(variants, colors) if v.attention is not None]
    rows, cols = len(index), 1 + len(with_maps)
    fig = _figure(2.3 * cols, 2.35 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, i in enumerate(index):
        img = images[i]
        scale = max(1, int(math.ceil(96 / max(img.shape[:2]))))  # display pixels per pixel
        big = img.repeat(scale, axis=0).repeat(scale, axis=1)
        _show_image(axes[r, 0], big)
        axes[r, 0].set_title(f"#{i}: {classes[labels[i]]}", fontsize=9)
        for c, (v, color) in enumerate(with_maps, start=1):
            ax = axes[r, c]
            _show_image(ax, big)
            heat = _upsample(v.attention[r], big.shape[:2])
            rgba = colormaps["jet"](heat)
            rgba[..., 3] = 0.75 * heat  # the image shows through where attention is low
            ax.imshow(rgba, interpolation="nearest")
            p = int(predictions(v.probs[i : i + 1])[0])
            mark = "✓" if p == labels[i] else "✗"
            ax.set_title(f"{v.name}\n{mark} {classes[p]} ({v.probs[i, p]:.2f})", fontsize=9,
                         color=color if p == labels[i] else "#c00000")
    fig.suptitle("Attention rollout ([CLS] → patches, red = more attention)", fontsize=11)
    return fig


# ----------------------------------------------------------------------------------- report


def _validate(variants: Sequence[VariantResult], labels: np.ndarray, images: np.ndarray,
              classes: Sequence[str], attention_index: np.ndarray | None, n_bins: int) -> None:
    if not variants:
        raise ValueError("no variants to report")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique: {names}")
    for n in names:
        if not _SAFE_NAME.fullmatch(n):
            raise ValueError(f"variant name {n!r} is not usable as a file name")
    if len(set(classes)) != len(classes):
        raise ValueError("class names must be unique")
    if labels.ndim != 1 or not len(labels):
        raise ValueError(f"labels must be (N,) with N > 0, got shape {labels.shape}")
    if images.ndim != 4 or images.shape[0] != len(labels) or images.shape[-1] not in (1, 3) \
            or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N={len(labels)}, H, W, 1 or 3), got "
                         f"{images.dtype} {images.shape}")
    if attention_index is not None and len(attention_index) and not (
            0 <= attention_index.min() and attention_index.max() < len(labels)):
        raise ValueError(f"attention_index must index the {len(labels)} test images")
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    for v in variants:
        if v.probs.shape != (len(labels), len(classes)):
            raise ValueError(f"{v.name}: probs must be (N={len(labels)}, K={len(classes)}), got "
                             f"{v.probs.shape}")
        if v.attention is not None:
            if attention_index is None:
                raise ValueError(f"{v.name} has attention maps but no attention_index was given")
            if v.attention.ndim != 3 or len(v.attention) != len(attention_index):
                raise ValueError(f"{v.name}: attention must be (M={len(attention_index)}, g, g), "
                                 f"got {v.attention.shape}")


def _summary(v: VariantResult, m: dict, classes: Sequence[str]) -> dict:
    return {
        "top1": float(m["top1"]), "top5": float(m["top5"]), "loss": float(m["loss"]),
        "ece": float(m["ece"]), "num_params": int(v.num_params), "gflops": float(v.gflops),
        "train_seconds": float(v.train_seconds), "images_per_s": float(v.images_per_s),
        "per_class_acc": {c: float(a) for c, a in zip(classes, m["per_class"])},
    }


def build_report(out_dir: Path, variants: list[VariantResult], *, labels: np.ndarray,
                 images: np.ndarray, classes: list[str], dataset: str,
                 attention_index: np.ndarray | None = None, n_misclassified: int = 16,
                 n_bins: int = 15) -> dict[str, dict]:
    """Write the report into out_dir and return per-variant summary metrics.

    Returns ``{name: {"top1", "top5", "loss", "ece", "num_params", "gflops", "train_seconds",
    "images_per_s", "per_class_acc": {class: acc}}}`` in plain Python numbers (nan where a value
    is unknown, or for a class with no test image)."""
    out_dir = Path(out_dir)
    labels, images = np.asarray(labels), np.asarray(images)
    if attention_index is not None:
        attention_index = np.asarray(attention_index, dtype=np.int64)
    classes = [str(c) for c in classes]
    _validate(variants, labels, images, classes, attention_index, n_bins)
    for d in (out_dir, out_dir / "figures", out_dir / "curves"):  # fail before the rendering
        d.mkdir(parents=True, exist_ok=True)

    metrics = {v.name: variant_metrics(v.probs, labels, n_bins=n_bins) for v in variants}
    summary = {v.name: _summary(v, metrics[v.name], classes) for v in variants}
    colors = variant_colors(len(variants))
    best = max(variants, key=lambda v: summary[v.name]["top1"])  # the first of equals

    # (file name, PNG bytes, caption): every figure is rendered before anything is written
    figures: list[tuple[str, bytes, str]] = []

    def add(name: str, fig: Figure, caption: str) -> None:
        figures.append((name, png_bytes(fig), caption))

    add("per_class_accuracy.png", per_class_figure(summary, classes, colors),
        "Test accuracy per class, one bar per variant.")
    for v in variants:
        add(f"confusion_{v.name}.png",
            confusion_figure(v.name, metrics[v.name]["confusion"], classes,
                             summary[v.name]["top1"]),
            f"{v.name}: confusion matrix on the test split, rows normalised to the true class "
            "(its number of test images in brackets).")
    bins = {v.name: reliability_bins(v.probs, labels, n_bins) for v in variants}
    add("reliability.png", reliability_figure(bins, summary, colors, n_bins),
        "Reliability: accuracy against mean confidence in each confidence bin (the diagonal is "
        "perfect calibration; below it, over-confident); below, the share of test images per "
        "bin. ECE is the image-weighted mean gap.")
    add("curves.png", curves_figure(variants, colors),
        "Training curves per epoch: validation accuracy and loss, training loss.")
    add("acc_vs_params.png", tradeoff_figure(variants, summary, colors, x_of="num_params"),
        "Test top-1 against the number of parameters (log scale).")
    add("acc_vs_throughput.png", tradeoff_figure(variants, summary, colors, x_of="images_per_s"),
        "Test top-1 against inference throughput measured at evaluation (log scale).")
    add("misclassified.png",
        misclassified_figure(best.name, images, labels, best.probs, classes, n_misclassified),
        f"The most confident mistakes of the best variant ({best.name}): true → predicted class "
        "and the predicted class's probability.")
    if any(v.attention is not None for v in variants):
        add("attention.png",
            attention_figure(variants, images, labels, attention_index, classes, colors),
            "Attention rollout of each variant, upsampled (bilinear) over the image, with the "
            "variant's prediction (✓ right, ✗ wrong).")

    fig_dir = out_dir / "figures"
    for name, png, _ in figures:
        atomic_write(fig_dir / name, lambda tmp, png=png: tmp.write_bytes(png))
    atomic_write_text(out_dir / "per_class.csv", per_class_csv(summary, classes))
    for v in variants:
        atomic_write_text(out_dir / "curves" / f"{v.name}.csv", curves_csv(v.history))
    common = dict(dataset=dataset, num_classes=len(classes), num_images=len(labels),
                  n_bins=n_bins)
    atomic_write_text(out_dir / "report.md", markdown_report(summary, variants, **common))
    atomic_write_text(out_dir / "report.html", html_report(summary, variants, figures, **common))
    return summary
