"""The comparison report of the evaluate stage: every trained variant on the same test split.

``build_report`` takes one :class:`VariantResult` per variant (its
:class:`~pipeline.evaluation.metrics.ClassificationMetrics` on the test split, its training
history and cost figures) and, optionally, the label-budget
:class:`~pipeline.evaluation.study.Study` (every variant at every label budget and seed,
aggregated over seeds into intervals by :func:`pipeline.evaluation.study.summarise`), and writes,
under ``out_dir``:

- with a study, first on the page: ``figures/curve.png`` (test top-1 against labelled images per
  class, log x, "all" at its real mean per class; a line per variant with its 95% interval as band
  and error bars, the title naming the interval: Student's t over n seeds, or for one seed a
  bootstrap over the test images), ``figures/gain.png`` (fine-tuned minus scratch per budget with
  its paired interval, a line at 0), the study's tables ("mean ± half-width" per variant and
  budget; each gain with its 95% CI and whether it excludes 0; with test-time augmentation, a
  table of the plain top-1 beside the TTA top-1 and the effect of TTA with its 95% CI) and how the
  intervals were computed; ``report.md`` starts with the same tables; ``curve.csv``
  (``variant,kind,budget,per_class,labelled,mean,low,high,n,method``) and ``gain.csv`` hold the
  numbers, as fractions, for DVC plots;
- ``figures/*.png``: per-class accuracy, a confusion matrix per variant, a reliability diagram,
  the training curves, accuracy against parameters and against throughput, the best variant's most
  confident mistakes and, when rollout maps are given, attention overlays;
- ``report.html``: ONE self-contained page (the PNGs inlined as base64 data URIs, no scripts, no
  external assets) with the table of variants and every figure;
- ``report.md``: the same table in markdown;
- ``per_class.csv`` and ``curves/<variant>.csv``: the numbers behind the figures, for DVC plots.

Modules:

- :mod:`.tables`: number formatting, the table of variants, the pretraining-gain sentence,
  the study's tables (:func:`study_rows`, :func:`study_markdown`), ``report.md`` and the CSV
  files (:func:`curve_csv`, :func:`gain_csv` for the study);
- :mod:`.figures`: every per-variant figure (matplotlib), rasterised in memory by ``png_bytes``;
- :mod:`.study`: the study's figures, :func:`curve_figure` and :func:`gain_figure`;
- :mod:`.page`: :class:`VariantResult`, the HTML page and :func:`build_report`.

Design:

- The report computes no metric: they are computed once, from each variant's logits, by
  :func:`pipeline.evaluation.metrics.classification_metrics` (torchmetrics), and the report
  renders those numbers (the confusion figure shows ``metrics.confusion``, the reliability diagram
  ``metrics.reliability``, whose bins are those of ``metrics.ece``; the mistakes shown are picked
  from ``metrics.probs`` and ``metrics.predictions``). Every variant's metrics must be of the
  given labels (checked against the confusion matrix) and share their number of ECE bins.
- Everything is rendered in memory first (matplotlib's object API on an Agg canvas: no pyplot,
  no global backend switch), then written with :mod:`pipeline.atomic`, ``report.html`` last: a
  failure leaves no report, or the previous one, never a partial file. The directories are made
  before the rendering, so an unwritable ``out_dir`` fails at once. Files of an earlier report
  that this one does not write (a dropped variant's confusion matrix) are left alone: DVC
  removes a stage's outputs before it runs.
- One colour per variant (in the order given) in every figure; markers tell scratch from
  finetune.
- Imports only :mod:`pipeline.atomic`, :mod:`pipeline.evaluation.metrics`,
  :mod:`pipeline.evaluation.study` (and its :mod:`~pipeline.evaluation.stats`), numpy, torch and
  matplotlib.

    >>> v = VariantResult(name="finetune", kind="finetune", model="768d/12L/16p@224",
    ...                   num_params=85_800_000, gflops=17.6, train_seconds=4100.0,
    ...                   images_per_s=380.0, metrics=classification_metrics(logits, y),
    ...                   history=history)
    >>> build_report(Path("results/report"), [v, ...], labels=y, images=x, classes=classes,
    ...              dataset="cifar10", study=summarise(cells))
"""

from .figures import (
    misclassified_figure,
    most_confident_mistakes,
    png_bytes,
    variant_colors,
)
from .page import VariantResult, build_report, html_report
from .study import budget_positions, curve_figure, gain_figure
from .tables import (
    curve_csv,
    curves_csv,
    gain_csv,
    human_duration,
    markdown_report,
    per_class_csv,
    pretraining_gain,
    study_markdown,
    study_rows,
)

__all__ = [
    "VariantResult",
    "budget_positions",
    "build_report",
    "curve_csv",
    "curve_figure",
    "curves_csv",
    "gain_csv",
    "gain_figure",
    "html_report",
    "human_duration",
    "markdown_report",
    "misclassified_figure",
    "most_confident_mistakes",
    "per_class_csv",
    "png_bytes",
    "pretraining_gain",
    "study_markdown",
    "study_rows",
    "variant_colors",
]
