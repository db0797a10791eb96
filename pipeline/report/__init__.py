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
  (``variant,kind,budget,per_class,labelled,mean,low,high,n,method``; its rows again per
  variant in ``study/<variant>.csv``) and ``gain.csv`` hold the numbers, as fractions, for DVC
  plots;
- ``figures/*.png``: per-class accuracy, a confusion matrix per variant, a reliability diagram,
  the training curves, accuracy against parameters and against throughput, the best variant's most
  confident mistakes and, when rollout maps are given, attention overlays;
- ``report.html``: ONE self-contained page (the PNGs inlined as base64 data URIs, no scripts, no
  external assets) with the table of variants and every figure;
- ``report.md``: the same table in markdown;
- ``per_class.csv`` and ``curves/<variant>.csv``: the numbers behind the figures, for DVC plots.

Modules, each importing only those above it (``types``, ``style`` and ``format`` are leaves;
``page`` is the top, imported by this ``__init__`` alone):

- :mod:`.types`: :class:`VariantResult`, the report's input (``VariantResult.of_cell`` builds it
  from an evaluated study cell and its :class:`~pipeline.records.History`);
- :mod:`.style`: how figures look and are rasterised: ``DPI``, ``figure``, :func:`png_bytes`,
  :func:`variant_colors`, the marker per kind;
- :mod:`.format`: numbers and intervals as text (:func:`human_duration`, percentages,
  "mean ± half-width", what an interval is);
- :mod:`.csvs`: every CSV text (:func:`curves_csv`, :func:`per_class_csv`, :func:`curve_csv`,
  :func:`gain_csv`, the per-variant study files, and :func:`confusion_csv` for the evaluate
  stage's ``confusion/<variant>.csv``);
- :mod:`.tables`: the table of variants, the study's tables (:func:`study_rows`,
  :func:`study_markdown`) and ``report.md`` (:func:`markdown_report`);
- :mod:`.figures`: every per-variant figure (matplotlib);
- :mod:`.study_figures`: the study's figures, :func:`curve_figure` and :func:`gain_figure`;
- :mod:`.page`: the HTML page (:func:`html_report`) and :func:`build_report`.

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
- One definition of the pretraining gain: the study's, fine-tuned minus scratch paired seed by
  seed (:attr:`pipeline.evaluation.study.Study.gains`). Without a study the report states no gain;
  with one, the per-variant rows (one run each) say to compare the variants by the study.
- Imports only :mod:`pipeline.atomic`, :mod:`pipeline.records`,
  :mod:`pipeline.evaluation.metrics`, :mod:`pipeline.evaluation.study` (and its
  :mod:`~pipeline.evaluation.stats`; :mod:`~pipeline.evaluation.cell` for type hints only),
  numpy, torch and matplotlib.

    >>> v = VariantResult(name="finetune", kind="finetune", model="768d/12L/16p@224",
    ...                   num_params=85_800_000, gflops=17.6, train_seconds=4100.0,
    ...                   images_per_s=380.0, metrics=classification_metrics(logits, y),
    ...                   history=History.read(run_dir).epochs)
    >>> v = VariantResult.of_cell(evaluate_cell(...), History.read(run_dir))  # the same, of a cell
    >>> build_report(Path("results/report"), [v, ...], labels=y, images=x, classes=classes,
    ...              dataset="cifar10", study=summarise(cells))
"""

from .csvs import confusion_csv, curve_csv, curves_csv, gain_csv, per_class_csv, study_csvs
from .figures import misclassified_figure, most_confident_mistakes
from .format import human_duration
from .page import build_report, html_report
from .study_figures import budget_positions, curve_figure, gain_figure
from .style import png_bytes, variant_colors
from .tables import markdown_report, study_markdown, study_rows
from .types import VariantResult

__all__ = [
    "VariantResult",
    "budget_positions",
    "build_report",
    "confusion_csv",
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
    "study_csvs",
    "study_markdown",
    "study_rows",
    "variant_colors",
]
