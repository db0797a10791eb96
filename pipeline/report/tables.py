"""The report's text: number formatting, the table of variants (markdown here, HTML in
:mod:`.page`), the pretraining-gain sentence, the label-budget study's tables
(:func:`study_rows`, :func:`study_markdown`; with test-time augmentation, its table beside the
plain figures) and the CSV files behind the figures."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..evaluation.stats import Interval
    from ..evaluation.study import Study
    from .page import VariantResult

STUDY_CURVE_COLUMNS = ("variant", "kind", "budget", "per_class", "labelled", "mean", "low",
                       "high", "n", "method")
STUDY_GAIN_COLUMNS = ("finetune", "scratch", "budget", "per_class", "labelled", "mean", "low",
                      "high", "n", "method", "excludes_zero")
CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
_HISTORY_KEYS = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss",
                 "val_acc": "val/acc", "lr": "lr"}
TEXT_COLUMNS = ("variant", "kind", "pair", "budget")  # the study tables' left-aligned columns


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


SINGLE_RUN_NOTE = ("The rows and figures below show one run per variant (its largest label "
                   "budget, first seed): compare the variants by the study above, not by these "
                   "single runs.")


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
                    num_images: int, n_bins: int, study: Study | None = None) -> str:
    """The table of variants; with a ``study``, its tables (:func:`study_markdown`) come first."""
    header, rows, marks = table(variants)
    left = {"variant", "kind", "model"}
    lines = [f"# ViT from scratch vs pretrained: {dataset} test split", ""]
    if study is not None:
        lines += ["## Test accuracy against the label budget", "", study_markdown(study),
                  "## Per-variant results", ""]
    lines += [
        f"{num_images} test images, {num_classes} classes. Best accuracy in bold; ECE: expected "
        f"calibration error over {n_bins} equal-width confidence bins. Figures: report.html.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if h in left else "---:" for h in header) + "|",
    ]
    for cells, best in zip(rows, marks):
        cells = [c.replace("|", "\\|") for c in cells]
        lines.append("| " + " | ".join(f"**{c}**" if b else c for c, b in zip(cells, best)) + " |")
    gain = pretraining_gain(variants) if study is None else SINGLE_RUN_NOTE
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


# ------------------------------------------------------------------ the label-budget study


def budget_header(budget: str) -> str:
    return "all labels" if budget == "all" else f"{budget} per class"


def _pm(iv: Interval, signed: bool = False) -> str:
    """``74.9 ± 2.1`` (percent), ``+16.0 ± 3.1`` for a difference; ``–`` without an interval."""
    mean = f"{100 * iv.mean:{'+' if signed else ''}.1f}"
    return f"{mean} ± {100 * iv.half_width:.1f}" if math.isfinite(iv.half_width) else mean


def _gain_cell(iv: Interval) -> str:
    """``+16.0 ± 3.1 (95% CI 12.9 to 19.1; excludes 0)``."""
    if not math.isfinite(iv.low):
        return f"{_pm(iv, True)} (no interval)"
    verdict = "excludes 0" if iv.excludes_zero else "includes 0"
    return (f"{_pm(iv, True)} ({iv.level * 100:g}% CI {100 * iv.low:.1f} to "
            f"{100 * iv.high:.1f}; {verdict})")


def _seed_counts(ns: set[int]) -> str:
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
                     f"{_seed_counts({iv.n for iv in t})}")
    if boot:
        lead = "" if t else f"{boot[0].level * 100:g}% interval, "
        parts.append(f"{lead}1 seed: {pre}bootstrap over test images")
    if any(iv.method == "single" for iv in intervals):
        parts.append("1 seed: no interval")
    return sep.join(parts)


def _mark(iv: Interval, mixed: bool) -> str:
    return " (b)" if mixed and iv.method == "bootstrap" else ""


def study_rows(study: Study) -> list[tuple[str, list[str], list[list[str]]]]:
    """The study's tables as (title, header, rows of cells): test top-1 per variant (rows) and
    budget (columns), "mean ± half-width" in %, then the pretraining gain per fine-tuned/scratch
    pair and budget with its interval and whether it excludes 0; "–" where a cell is missing.
    With test-time augmentation, last, :func:`tta_rows`. A bootstrap (one-seed) cell is marked
    "(b)" when the table also has t intervals."""
    budgets = list(study.budgets)
    mixed = len({a.top1.method for a in study.aggregates}) > 1
    cells: dict[str, dict[str, str]] = {}
    kinds: dict[str, str] = {}
    for a in study.aggregates:
        kinds.setdefault(a.variant, a.kind)
        cells.setdefault(a.variant, {})[a.budget] = _pm(a.top1) + _mark(a.top1, mixed)
    top = ("Test top-1 (%), mean ± half-width of the 95% interval",
           ["variant", "kind", *map(budget_header, budgets)],
           [[v, kinds[v], *(cells[v].get(b, "–") for b in budgets)] for v in cells])
    tables = [top]
    if study.gains:
        gains: dict[str, dict[str, str]] = {}
        mixed = len({g.diff.method for g in study.gains}) > 1
        for g in study.gains:
            gains.setdefault(f"{g.finetune} − {g.scratch}", {})[g.budget] = \
                _gain_cell(g.diff) + _mark(g.diff, mixed)
        tables.append(("Pretraining gain: fine-tuned minus scratch test top-1 (points), paired "
                       "seed by seed",
                       ["pair", *map(budget_header, budgets)],
                       [[p, *(row.get(b, "–") for b in budgets)] for p, row in gains.items()]))
    if study.tta:
        tables.append(tta_rows(study))
    return tables


def tta_rows(study: Study) -> tuple[str, list[str], list[list[str]]]:
    """Test-time augmentation beside the plain figures, one row per (variant, budget): the plain
    test top-1 (as in the first table), the TTA top-1 ("mean ± half-width", %) and the effect
    of TTA (TTA minus plain, points, paired seed by seed) with its interval."""
    plain = {(a.variant, a.budget): a.top1 for a in study.aggregates}
    mixed = len({iv.method for t in study.tta for iv in (t.top1, plain[t.variant, t.budget])}) > 1
    mixed_effect = len({t.effect.method for t in study.tta}) > 1
    rows = [[t.variant, t.kind, budget_header(t.budget),
             _pm(plain[t.variant, t.budget]) + _mark(plain[t.variant, t.budget], mixed),
             _pm(t.top1) + _mark(t.top1, mixed),
             _gain_cell(t.effect) + _mark(t.effect, mixed_effect)] for t in study.tta]
    return (f"Test-time augmentation ({study.tta_views}): test top-1 (%), plain and with TTA, "
            "mean ± half-width of the 95% interval; effect of TTA: TTA minus plain (points), "
            "paired seed by seed",
            ["variant", "kind", "budget", "plain top-1", "with TTA", "effect of TTA"], rows)


def study_sentence(study: Study) -> str:
    """How the intervals were computed, in one sentence."""
    tops = [a.top1 for a in study.aggregates] + [t.top1 for t in study.tta]
    diffs = [g.diff for g in study.gains] + [t.effect for t in study.tta]
    text = f"Accuracies: {interval_basis(tops, paired=False)}."
    if study.gains:
        text += f" Gains: {interval_basis([g.diff for g in study.gains], paired=True)}."
    if study.tta:
        text += (" Effects of TTA: "
                 f"{interval_basis([t.effect for t in study.tta], paired=True)}.")
    if any(iv.method == "t" for iv in (*tops, *diffs)):
        what = "a gain or an effect of TTA" if study.tta else "the gain"
        text += (f" Student's t: mean ± t·s/√n over the seeds ({what}: over the seed-by-seed "
                 "differences).")
    if any(iv.method == "bootstrap" for iv in (*tops, *diffs)):
        text += (" Bootstrap: a percentile interval over the test images of the one seed "
                 "(test-set noise only, not the seed-to-seed variation).")
    if len({iv.method for iv in tops}) > 1 or len({iv.method for iv in diffs}) > 1:
        text += " (b) marks such a one-seed cell."
    return text


def study_markdown(study: Study) -> str:
    """The study's tables in markdown, then :func:`study_sentence`."""
    lines = [f"Seeds: {', '.join(map(str, study.seeds))}. Budgets: labelled training images per "
             "class.", ""]
    for title, header, rows in study_rows(study):
        lines += [f"**{title}**", "",
                  "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" if h in TEXT_COLUMNS else "---:" for h in header) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
    lines.append(study_sentence(study))
    return "\n".join(lines) + "\n"


def _study_csv(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue()


def curve_csv(study: Study, num_classes: int) -> str:
    """variant,kind,budget,per_class,labelled,mean,low,high,n,method: one row per (variant,
    budget); accuracies as fractions, ``per_class`` = labelled / num_classes."""
    return _study_csv(STUDY_CURVE_COLUMNS, [
        [a.variant, a.kind, a.budget, _csv_cell(a.labelled / num_classes), a.labelled,
         _csv_cell(a.top1.mean), _csv_cell(a.top1.low), _csv_cell(a.top1.high), a.top1.n,
         a.top1.method] for a in study.aggregates])


def gain_csv(study: Study, num_classes: int) -> str:
    """finetune,scratch,budget,per_class,labelled,mean,low,high,n,method,excludes_zero: one row
    per pair and budget; differences as fractions."""
    return _study_csv(STUDY_GAIN_COLUMNS, [
        [g.finetune, g.scratch, g.budget, _csv_cell(g.labelled / num_classes), g.labelled,
         _csv_cell(g.diff.mean), _csv_cell(g.diff.low), _csv_cell(g.diff.high), g.diff.n,
         g.diff.method, str(g.diff.excludes_zero).lower()] for g in study.gains])
