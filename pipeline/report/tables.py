"""The report's tables and text: the table of variants (:func:`table`; markdown in
:func:`markdown_report`, HTML in :mod:`.page`), the label-budget study's tables
(:func:`study_rows`, :func:`study_markdown`; with test-time augmentation, its table beside the
plain figures, :func:`tta_rows`) and how their intervals were computed (:func:`study_sentence`).

The gain of pretraining is the study's, paired seed by seed
(:class:`~pipeline.evaluation.study.Study` ``.gains``); without a study the report states none."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..layout import TUNED_SUFFIX
from .format import (
    budget_header,
    budget_words,
    gain_cell,
    human_duration,
    interval_basis,
    num,
    pct,
    pm,
)

if TYPE_CHECKING:
    from ..evaluation.stats import Interval
    from ..evaluation.study import Study
    from .types import VariantResult

# the study tables' left-aligned columns
TEXT_COLUMNS = ("variant", "kind", "pair", "budget", "search", "method", "space", "selection",
                "chosen")
SINGLE_RUN_NOTE = ("The rows and figures below show one run per variant (its largest label "
                   "budget, first seed): compare the variants by the study above, not by these "
                   "single runs.")


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
        rows.append([v.name, v.kind, v.model, pct(m.top1), pct(m.top5), num(m.loss, ".4f"),
                     pct(m.ece), num(v.num_params / 1e6, ".3g"), num(v.gflops, ".3g"),
                     human_duration(v.train_seconds), num(v.images_per_s, ",.0f")])
        marks.append([False, False, False, m.top1 == best["top1"], m.top5 == best["top5"]]
                     + [False] * 6)
    return header, rows, marks


def markdown_report(variants: Sequence[VariantResult], *, dataset: str, num_classes: int,
                    num_images: int, n_bins: int, study: Study | None = None,
                    caveats: Sequence[str] = ()) -> str:
    """The headline and its caveats (:func:`lead_markdown`), then with a ``study`` its tables
    (:func:`study_markdown`), then the table of variants."""
    header, rows, marks = table(variants)
    left = {"variant", "kind", "model"}
    lines = [f"# ViT from scratch vs pretrained: {dataset} test split", "",
             *lead_markdown(study, caveats)]
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
    if study is not None:
        lines += ["", SINGLE_RUN_NOTE]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the label-budget study


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
        cells.setdefault(a.variant, {})[a.budget] = pm(a.top1) + _mark(a.top1, mixed)
    top = ("Test top-1 (%), mean ± half-width of the 95% interval",
           ["variant", "kind", *map(budget_header, budgets)],
           [[v, kinds[v], *(cells[v].get(b, "–") for b in budgets)] for v in cells])
    tables = [top]
    if study.gains:
        gains: dict[str, dict[str, str]] = {}
        mixed = len({g.diff.method for g in study.gains}) > 1
        for g in study.gains:
            gains.setdefault(f"{g.finetune} − {g.scratch}", {})[g.budget] = \
                gain_cell(g.diff) + _mark(g.diff, mixed)
        tables.append(("Pretraining gain: fine-tuned minus scratch test top-1 (points), paired "
                       "seed by seed",
                       ["pair", *map(budget_header, budgets)],
                       [[p, *(row.get(b, "–") for b in budgets)] for p, row in gains.items()]))
    if study.shifts:
        tables.append(shift_rows(study))
    if study.searches:
        tables.append(search_rows(study))
    if study.tta:
        tables.append(tta_rows(study))
    return tables


def shift_rows(study: Study) -> tuple[str, list[str], list[list[str]]]:
    """The tuned comparison beside the fixed one, per pair and budget: the recipes' gain, the
    tuned cells' gain (both paired seed by seed) and their difference, paired by seed too."""
    gains = {(g.finetune, g.scratch, g.budget): g.diff for g in study.gains}
    rows = []
    for s in study.shifts:
        fixed = gains.get((s.finetune, s.scratch, s.budget))
        tuned = gains.get((s.finetune + "-tuned", s.scratch + "-tuned", s.budget))
        rows.append([f"{s.finetune} − {s.scratch}", budget_header(s.budget),
                     "–" if fixed is None else gain_cell(fixed),
                     "–" if tuned is None else gain_cell(tuned), gain_cell(s.diff)])
    return ("Pretraining gain, recipes as written against both arms tuned (points, paired seed "
            "by seed; the last column: tuned gain minus fixed gain)",
            ["pair", "budget", "fixed recipes", "both tuned", "tuned − fixed"], rows)


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def search_rows(study: Study) -> tuple[str, list[str], list[list[str]]]:
    """The protocol of each search: its space, method, selection rule, the choice with its
    validation top-1, and what it cost."""
    rows = []
    for s in study.searches:
        chosen = s.chosen
        rows.append([
            f"{s.variant} ({s.arm}) at {budget_header(s.budget)}", s.method_text(),
            s.space_text(), s.selection_text(),
            "none completed" if chosen is None else
            ", ".join(f"{k.rsplit('.', 1)[-1]}={_value(v)}" for k, v in chosen.params.items())
            + f" (trial {chosen.number})",
            "–" if chosen is None else pct(chosen.value),
            f"{human_duration(s.seconds)}, {s.flops / 1e12:.3g} TFLOPs"
            + (f" ({s.count('pruned')} pruned: {s.flops_saved / 1e12:.3g} TFLOPs saved)"
               if s.count("pruned") else "")])
    return ("Searches: chosen on validation top-1, never on the test split",
            ["search", "method", "space", "selection", "chosen", "val top-1", "cost"], rows)


def tta_rows(study: Study) -> tuple[str, list[str], list[list[str]]]:
    """Test-time augmentation beside the plain figures, one row per (variant, budget): the plain
    test top-1 (as in the first table), the TTA top-1 ("mean ± half-width", %) and the effect
    of TTA (TTA minus plain, points, paired seed by seed) with its interval."""
    plain = {(a.variant, a.budget): a.top1 for a in study.aggregates}
    mixed = len({iv.method for t in study.tta for iv in (t.top1, plain[t.variant, t.budget])}) > 1
    mixed_effect = len({t.effect.method for t in study.tta}) > 1
    rows = [[t.variant, t.kind, budget_header(t.budget),
             pm(plain[t.variant, t.budget]) + _mark(plain[t.variant, t.budget], mixed),
             pm(t.top1) + _mark(t.top1, mixed),
             gain_cell(t.effect) + _mark(t.effect, mixed_effect)] for t in study.tta]
    return (f"Test-time augmentation ({study.tta_views}): test top-1 (%), plain and with TTA, "
            "mean ± half-width of the 95% interval; effect of TTA: TTA minus plain (points), "
            "paired seed by seed",
            ["variant", "kind", "budget", "plain top-1", "with TTA", "effect of TTA"], rows)


def _ci(iv: Interval) -> str:
    """``95% CI 5.3 to 19.0, paired t over 5 seeds`` (or the one seed's bootstrap)."""
    if not math.isfinite(iv.low):
        return "no interval"
    over = (f"paired t over {iv.n} seeds" if iv.method == "t"
            else "bootstrap over the test images of one seed")
    return f"{iv.level * 100:g}% CI {100 * iv.low:.1f} to {100 * iv.high:.1f}, {over}"


def headline(study: Study) -> str | None:
    """The answer in one sentence: the gain at the largest budget, of the tuned pair where both
    arms were tuned (the recipes' gain beside it), else of the first pair; with its interval,
    what it is over, and whether it excludes 0. None without a pair."""
    if not study.gains:
        return None
    budget = study.budgets[-1]
    at = [g for g in study.gains if g.budget == budget] or list(study.gains)
    tuned = [g for g in at if g.finetune.endswith(TUNED_SUFFIX)
             and g.scratch.endswith(TUNED_SUFFIX)]
    main = (tuned or at)[0]
    d = main.diff
    verdict = ("" if d.excludes_zero or not math.isfinite(d.low)
               else "; the interval includes 0, so this run cannot tell it from no gain")
    text = (f"Pretraining {'adds' if d.mean >= 0 else 'costs'} {abs(100 * d.mean):.1f} points "
            f"of test top-1 ({_ci(d)}{verdict}): {main.finetune} against {main.scratch}"
            + (", both arms tuned with the same number of trials on validation data"
               if tuned else "")
            + f", trained on {budget_words(budget)} ({main.labelled:,} in all).")
    if tuned:
        base = (main.finetune.removesuffix(TUNED_SUFFIX), main.scratch.removesuffix(TUNED_SUFFIX))
        fixed = [g for g in at if (g.finetune, g.scratch) == base]
        if fixed:
            text += (f" With the recipes as written: {100 * fixed[0].diff.mean:+.1f} points "
                     f"({_ci(fixed[0].diff)}).")
    if len(study.budgets) > 1:
        text += " Every budget and pair is in the tables below."
    return text


def lead_markdown(study: Study | None, caveats: Sequence[str]) -> list[str]:
    """The page's first lines: the headline in bold, then what it does not show."""
    lines = []
    answer = headline(study) if study is not None else None
    if answer:
        lines += [f"**{answer}**", ""]
    if caveats:
        lines += ["What this does not show:", "", *(f"- {c}" for c in caveats), ""]
    return lines


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
