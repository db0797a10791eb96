"""The report's text: number formatting, the table of variants (markdown here, HTML in
:mod:`.page`), the pretraining-gain sentence and the CSV files behind the figures."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .page import VariantResult

CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
_HISTORY_KEYS = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss",
                 "val_acc": "val/acc", "lr": "lr"}


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


def _topk_label(variants: Sequence[VariantResult]) -> str:
    return f"top-{variants[0].metrics.top_k}"


def table(variants: Sequence[VariantResult]) -> tuple[list[str], list[list[str]],
                                                      list[list[bool]]]:
    """(header, rows of cells, which cells are the best of an accuracy column)."""
    header = ["variant", "kind", "model", "top-1", _topk_label(variants), "loss", "ECE",
              "params (M)", "GFLOPs", "train time", "images/s"]
    best = {key: max(getattr(v.metrics, key) for v in variants) for key in ("top1", "top5")}
    rows, marks = [], []
    for v in variants:
        m = v.metrics
        rows.append([v.name, v.kind, v.model, _pct(m.top1), _pct(m.top5), _num(m.loss, ".4f"),
                     _pct(m.ece), _num(v.num_params / 1e6, ".3g"), _num(v.gflops, ".3g"),
                     human_duration(v.train_seconds), _num(v.images_per_s, ",.0f")])
        marks.append([False, False, False, m.top1 == best["top1"], m.top5 == best["top5"]]
                     + [False] * 6)
    return header, rows, marks


def pretraining_gain(variants: Sequence[VariantResult]) -> str | None:
    """The sentence 'best finetune minus best scratch top-1', or None without one of each."""
    best = {}
    for kind in ("scratch", "finetune"):
        of_kind = [v for v in variants if v.kind == kind]
        if of_kind:
            best[kind] = max(of_kind, key=lambda v: v.metrics.top1)  # the first of equals
    if len(best) < 2:
        return None
    ft, sc = best["finetune"], best["scratch"]
    diff = 100 * (ft.metrics.top1 - sc.metrics.top1)
    return (f"Pretraining gain: best finetune ({ft.name}, {_pct(ft.metrics.top1)}) minus best "
            f"scratch ({sc.name}, {_pct(sc.metrics.top1)}) = {diff:+.2f} points top-1.")


def markdown_report(variants: Sequence[VariantResult], *, dataset: str, num_classes: int,
                    num_images: int, n_bins: int) -> str:
    header, rows, marks = table(variants)
    left = {"variant", "kind", "model"}
    lines = [
        f"# ViT from scratch vs pretrained: {dataset} test split",
        "",
        f"{num_images} test images, {num_classes} classes. Best accuracy in bold; ECE: expected "
        f"calibration error over {n_bins} equal-width confidence bins. Figures: report.html.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if h in left else "---:" for h in header) + "|",
    ]
    for cells, best in zip(rows, marks):
        cells = [c.replace("|", "\\|") for c in cells]
        lines.append("| " + " | ".join(f"**{c}**" if b else c for c, b in zip(cells, best)) + " |")
    gain = pretraining_gain(variants)
    if gain:
        lines += ["", gain]
    return "\n".join(lines) + "\n"


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


def per_class_csv(variants: Sequence[VariantResult], classes: Sequence[str]) -> str:
    """class,<variant>,... : test accuracy per class; empty for a class with no test image."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class", *(v.name for v in variants)])
    for i, c in enumerate(classes):
        w.writerow([c, *(_csv_cell(v.metrics.per_class[i]) for v in variants)])
    return buf.getvalue()
