"""The report's HTML page (:func:`html_report`) and :func:`build_report`, which validates its
inputs, renders every file in memory (the figures of :mod:`.figures` and :mod:`.study_figures`,
the tables of :mod:`.tables`, the CSV texts of :mod:`.csvs`) and then writes them atomically,
``report.html`` last. With a label-budget :class:`~pipeline.evaluation.study.Study`, the page and
``report.md`` start with it. The top of :mod:`pipeline.report`: no other module of it imports
this one."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import atomic_write, atomic_write_text
from .csvs import curves_csv, per_class_csv, study_csvs
from .figures import (
    attention_figure,
    confusion_figure,
    curves_figure,
    misclassified_figure,
    per_class_figure,
    reliability_figure,
    tradeoff_figure,
)
from .study_figures import study_figures
from .style import png_bytes, variant_colors
from .tables import (
    SINGLE_RUN_NOTE,
    TEXT_COLUMNS,
    headline,
    markdown_report,
    study_rows,
    study_sentence,
    table,
)
from .types import VariantResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..evaluation.study import Study

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


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
p.headline { font-size: 1.25em; font-weight: bold; line-height: 1.4; margin: 0.6em 0 0.8em; }
div.caveats { background: #fff8e1; border-left: 4px solid #f0ad4e; padding: 0.2em 1em;
              margin-bottom: 1.5em; }
div.caveats li { margin: 0.3em 0; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
caption { text-align: left; font-weight: bold; padding-bottom: 0.3em; }
"""


def _figure_html(figures: Sequence[tuple[str, bytes, str]]) -> list[str]:
    out = []
    for name, png, caption in figures:
        data = base64.b64encode(png).decode("ascii")
        out += ["<figure>", f'<img src="data:image/png;base64,{data}" alt="{html.escape(name)}">',
                f"<figcaption>{html.escape(caption)}</figcaption>", "</figure>"]
    return out


def study_html(study: Study, figures: Sequence[tuple[str, bytes, str]]) -> list[str]:
    """The study's section: its figures, then its tables and how the intervals were computed."""
    e = html.escape
    out = ['<h2 id="study">Test accuracy against the label budget</h2>',
           f"<p>Seeds: {e(', '.join(map(str, study.seeds)))}. Budgets: labelled training "
           "images per class.</p>", *_figure_html(figures)]
    for title, header, rows in study_rows(study):
        out += ["<table>", f"<caption>{e(title)}</caption>",
                "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead>",
                "<tbody>"]
        for row in rows:
            out.append("<tr>" + "".join(
                f"<td>{e(c)}</td>" if h in TEXT_COLUMNS
                else f'<td class="num">{e(c)}</td>' for h, c in zip(header, row)) + "</tr>")
        out += ["</tbody>", "</table>"]
    out += [f"<p>{e(study_sentence(study))}</p>", "<h2>Per-variant results</h2>"]
    return out


def lead_html(study: Study | None, caveats: Sequence[str]) -> list[str]:
    """The headline (:func:`.tables.headline`) and what it does not show, under the title."""
    e = html.escape
    answer = headline(study) if study is not None else None
    out = [f'<p class="headline">{e(answer)}</p>'] if answer else []
    if caveats:
        out += ['<div class="caveats"><p>What this does not show:</p><ul>',
                *(f"<li>{e(c)}</li>" for c in caveats), "</ul></div>"]
    return out


def html_report(variants: Sequence[VariantResult], figures: Sequence[tuple[str, bytes, str]], *,
                dataset: str, num_classes: int, num_images: int, n_bins: int,
                study: Study | None = None,
                study_pngs: Sequence[tuple[str, bytes, str]] = (),
                caveats: Sequence[str] = ()) -> str:
    """The page; ``figures``: (file name, PNG bytes, caption), inlined in that order. Under the
    title the headline and its caveats; with a ``study``, its section (``study_pngs`` first)."""
    e = html.escape
    header, rows, marks = table(variants)
    numeric = set(range(3, len(header)))
    out = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>ViT from scratch vs pretrained: {e(dataset)}</title>",
        f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>ViT from scratch vs pretrained: {e(dataset)} test split</h1>",
        *lead_html(study, caveats),
        *(study_html(study, study_pngs) if study is not None else []),
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
    if study is not None:
        out.append(f'<p class="gain">{e(SINGLE_RUN_NOTE)}</p>')
    out += _figure_html(figures)
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _validate(variants: Sequence[VariantResult], labels: np.ndarray, images: np.ndarray,
              classes: Sequence[str], attention_index: np.ndarray | None) -> None:
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
    n_bins = {v.name: v.metrics.n_bins for v in variants}
    if len(set(n_bins.values())) > 1:
        raise ValueError(f"the variants' metrics must share their number of ECE bins: {n_bins}")
    n, k = len(labels), len(classes)
    for v in variants:
        m = v.metrics
        if m.probs.shape != (n, k):
            raise ValueError(f"{v.name}: metrics.probs must be (N={n}, K={k}), got "
                             f"{m.probs.shape}")
        if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= k:
            raise ValueError(f"labels must be integers in [0, K={k})")
        counted = np.bincount(labels * k + m.predictions, minlength=k * k).reshape(k, k)
        if not np.array_equal(counted, m.confusion):
            raise ValueError(f"{v.name}: its metrics were not computed with these labels")
        if v.attention is not None:
            if attention_index is None:
                raise ValueError(f"{v.name} has attention maps but no attention_index was given")
            if v.attention.ndim != 3 or len(v.attention) != len(attention_index):
                raise ValueError(f"{v.name}: attention must be (M={len(attention_index)}, g, g), "
                                 f"got {v.attention.shape}")


def build_report(out_dir: Path, variants: Sequence[VariantResult], *, labels: np.ndarray,
                 images: np.ndarray, classes: Sequence[str], dataset: str,
                 attention_index: np.ndarray | None = None, n_misclassified: int = 16,
                 study: Study | None = None, caveats: Sequence[str] = ()) -> None:
    """Write the report of ``variants`` (their metrics on the test split of ``labels`` and
    ``images``) into ``out_dir``; see :mod:`pipeline.report`. With a ``study`` (every variant at
    every label budget and seed), the page and ``report.md`` start with its curve, gain and
    tables, and ``curve.csv`` and ``gain.csv`` are written too. ValueError on inconsistent
    inputs, before anything is written."""
    out_dir = Path(out_dir)
    labels, images = np.asarray(labels), np.asarray(images)
    if attention_index is not None:
        attention_index = np.asarray(attention_index, dtype=np.int64)
    classes = [str(c) for c in classes]
    _validate(variants, labels, images, classes, attention_index)
    if study is not None and not study.aggregates:
        raise ValueError("the study has no aggregates")
    for d in (out_dir, out_dir / "figures", out_dir / "curves", out_dir / "study"):  # fail early
        d.mkdir(parents=True, exist_ok=True)

    n_bins = variants[0].metrics.n_bins
    names = list(dict.fromkeys([v.name for v in variants]
                               + ([a.variant for a in study.aggregates] if study else [])))
    all_colors = variant_colors(len(names))  # one colour per variant, in every figure
    colors = all_colors[:len(variants)]
    best = max(variants, key=lambda v: v.metrics.top1)  # the first of equals

    # (file name, PNG bytes, caption): every figure is rendered before anything is written
    figures: list[tuple[str, bytes, str]] = []

    def add(name: str, fig: Figure, caption: str) -> None:
        figures.append((name, png_bytes(fig), caption))

    lead: list[tuple[str, bytes, str]] = []  # the study's figures, at the top of the page
    if study is not None:
        for name, fig, caption in study_figures(study, dict(zip(names, all_colors)),
                                                len(classes)):
            lead.append((name, png_bytes(fig), caption))

    add("per_class_accuracy.png", per_class_figure(variants, classes, colors),
        "Test accuracy per class, one bar per variant.")
    for v in variants:
        add(f"confusion_{v.name}.png",
            confusion_figure(v.name, v.metrics.confusion, classes, v.metrics.top1),
            f"{v.name}: confusion matrix on the test split, rows normalised to the true class "
            "(its number of test images in brackets).")
    add("reliability.png", reliability_figure(variants, colors, n_bins),
        "Reliability: accuracy against mean confidence in each confidence bin (the diagonal is "
        "perfect calibration; below it, over-confident); below, the share of test images per "
        "bin. ECE is the image-weighted mean gap.")
    add("curves.png", curves_figure(variants, colors),
        "Training curves per epoch: validation accuracy and loss, training loss.")
    add("acc_vs_params.png", tradeoff_figure(variants, colors, x_of="num_params"),
        "Test top-1 against the number of parameters (log scale).")
    add("acc_vs_throughput.png", tradeoff_figure(variants, colors, x_of="images_per_s"),
        "Test top-1 against inference throughput measured at evaluation (log scale).")
    add("misclassified.png",
        misclassified_figure(best.name, images, labels, best.metrics, classes, n_misclassified),
        f"The most confident mistakes of the best variant ({best.name}): true → predicted class "
        "and the predicted class's probability.")
    if any(v.attention is not None for v in variants):
        add("attention.png",
            attention_figure(variants, images, labels, attention_index, classes, colors),
            "Attention rollout of each variant, upsampled (bilinear) over the image, with the "
            "variant's prediction (✓ right, ✗ wrong).")
    common = dict(dataset=dataset, num_classes=len(classes), num_images=len(labels),
                  n_bins=n_bins)
    markdown = markdown_report(variants, **common, study=study, caveats=caveats)
    page = html_report(variants, figures, **common, study=study, study_pngs=lead,
                       caveats=caveats)
    texts = {} if study is None else study_csvs(study, len(classes))  # path: text
    texts["per_class.csv"] = per_class_csv(variants, classes)
    for v in variants:
        texts[f"curves/{v.name}.csv"] = curves_csv(v.history)

    fig_dir = out_dir / "figures"
    for name, png, _ in [*lead, *figures]:
        atomic_write(fig_dir / name, lambda tmp, png=png: tmp.write_bytes(png))
    for name, text in texts.items():
        atomic_write_text(out_dir / name, text)
    atomic_write_text(out_dir / "report.md", markdown)
    atomic_write_text(out_dir / "report.html", page)
