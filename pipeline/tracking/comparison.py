"""The comparison in MLflow: the parent run over every cell's training run, the test metrics in
each cell's run, and the study's aggregates and the report in the parent.

A comparison is a parent run (tag ``pipeline.role=parent``, keyed by ``pipeline.group``: a hash of
the params the trained models depend on) with one child run per cell (MLflow's
``mlflow.parentRunId``). Grouping happens in one place, :func:`log_comparison`, called by the
``evaluate`` stage, the one stage that sees every cell: training runs know nothing of
comparisons. A failure to log is reported, not fatal: the results on disk are the record.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RecordError, TrackingError
from ..layout import CellKey, pretraining_dir
from ..records import RunRecord
from .datasets import split_datasets
from .names import KIND, KIND_TAG, flatten
from .uri import client, git_commit, tracking_uri

if TYPE_CHECKING:
    from ..config import Params
    from ..evaluation.cell import CellResult
    from ..evaluation.study import Study

log = logging.getLogger(__name__)

GROUP_TAG = "pipeline.group"
ROLE_TAG = "pipeline.role"
PARENT_TAG = "mlflow.parentRunId"
# a variant run's colour in the UI's table and charts, by its place in the comparison (MLflow
# would otherwise give every child of a parent the same one); matplotlib's tab10
COLOR_TAG = "mlflow.runColor"
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")


PARAMS_FILE = "params.json"  # the parent's artifact: the params its models depend on
DESCRIPTION_TAG = "mlflow.note.content"  # the run page's description (markdown)
NAME_LIMIT = 250


@dataclass(frozen=True)
class Group:
    """One comparison: the key of its params, the params themselves (flattened, dotted keys) and
    the variants it compares."""

    key: str
    variants: tuple[str, ...]
    dataset: str
    params: Mapping[str, object]


def comparison_group(params: Params) -> Group:
    """The :class:`Group` of a :class:`pipeline.config.Params`."""
    return Group(key=params.group_key(), variants=tuple(params.trained_variants),
                 dataset=params.base.dataset, params=flatten(params.group_params()))


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:21] + "..."


def changes(before: Mapping[str, object], after: Mapping[str, object]) -> list[str]:
    """``key old→new`` for every param that differs (``+key new``, ``-key``: added, removed)."""
    out = []
    for k in sorted(set(before) | set(after)):
        if k not in before:
            out.append(f"+{k} {_short(after[k])}")
        elif k not in after:
            out.append(f"-{k}")
        elif before[k] != after[k]:
            out.append(f"{k} {_short(before[k])}→{_short(after[k])}")
    return out


def parent_name(group: Group, previous: Mapping[str, object] | None) -> str:
    """What differs from the experiment's previous comparison first (cut to fit), then the
    dataset, the variants and the key: two parents' names differ where they can be seen."""
    tail = f"{group.dataset}: {' vs '.join(group.variants)} [{group.key[:8]}]"
    if previous is None:
        return tail[:NAME_LIMIT]
    diff = changes(previous, group.params)
    head = "; ".join(diff) if diff else "same params"
    room = NAME_LIMIT - len(tail) - 3
    if len(head) > room:
        head = head[:max(room - 3, 20)] + "..."
    return f"{head} | {tail}"[:NAME_LIMIT]


def _previous_params(mlflow, experiment_id: str) -> dict[str, object] | None:
    """The params of the experiment's newest comparison, None without one (or without them)."""
    found = mlflow.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'parent'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        return None
    try:
        path = mlflow.download_artifacts(found[0].info.run_id, PARAMS_FILE)
        return json.loads(Path(path).read_text())
    except Exception:  # noqa: BLE001 - a parent logged before params were kept: no diff
        return None


def comparison_parent(mlflow, experiment_id: str, group: Group) -> str:
    """The run id of ``group``'s parent run in the experiment, created (FINISHED: a container,
    not a job; its start is when the comparison was first made, which orders comparisons) if
    there is none yet, named by :func:`parent_name`, its params logged as ``params.json``.
    Marks the experiment as model training for the UI."""
    mlflow.set_experiment_tag(experiment_id, KIND_TAG, KIND)
    found = mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.`{GROUP_TAG}` = '{group.key}' and tags.`{ROLE_TAG}` = 'parent'",
        order_by=["attributes.start_time ASC"], max_results=1,
    )
    if found:
        return found[0].info.run_id
    name = parent_name(group, _previous_params(mlflow, experiment_id))
    tags = {GROUP_TAG: group.key, ROLE_TAG: "parent", "variants": ", ".join(group.variants)}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = mlflow.create_run(experiment_id, run_name=name, tags=tags)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, PARAMS_FILE)
        path.write_text(json.dumps(dict(group.params), indent=1, default=str))
        mlflow.log_artifact(run.info.run_id, str(path))
    mlflow.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + key: an experiment tag the UI opens as a view
# the cells' figures the view charts, one bar per variant: the mean over its cells
VIEW_METRICS = (("test/acc", "test top-1"), ("test/acc_tta", "test top-1 with TTA"),
                ("test/ece", "test ECE"))


def view_key(parent_run: str) -> str:
    """The key of a comparison's saved view (``viewStateShareKey=<key>`` in the UI's URL)."""
    return f"comparison-{parent_run[:12]}"


def comparison_view(parent_run: str) -> dict:
    """The MLflow UI's view state (3.x, what its "Share" button stores) of one comparison: its
    cells only, every one shown (not the first 10), grouped by variant with each group's
    metrics the mean over its cells, and a first chart section of one bar per variant for
    :data:`VIEW_METRICS`; the chart search keeps the test figures in sight."""
    section = "comparison"
    return {
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent_run}' and tags.`variant` LIKE '%'",
        "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
        "lifecycleFilter": "Active", "modelVersionFilter": "All Runs", "datasetsFilter": [],
        "selectedColumns": [*(f"metrics.`{m}`" for m, _ in VIEW_METRICS),
                            "tags.`variant`", "tags.`budget`", "tags.`seed`"],
        "columnOrder": [], "columnWidths": {}, "runsExpanded": {}, "runsPinned": [],
        "runsHidden": [], "runsVisibilityMap": {}, "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": [
            {"uuid": f"{section}-{metric}", "type": "BAR", "runsCountToCompare": 100,
             "metricSectionId": section, "deleted": False, "isGenerated": False,
             "metricKey": metric, "displayName": f"{label}: mean over each variant's cells"}
            for metric, label in VIEW_METRICS],
        "compareRunSections": [{"uuid": section, "name": "Each variant over all its cells",
                                "display": True, "isReordered": True, "deleted": False,
                                "isGenerated": False}],
        "viewMaximized": False, "runListHidden": False, "isAccordionReordered": True,
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "tag", "groupByData": "variant"}]},
        "groupsExpanded": {}, "autoRefreshEnabled": False, "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True, "chartsSearchFilter": "test/",
    }


# a cell's cells.json key -> its MLflow metric name, the same in every cell's run
TEST_METRICS = {"top1": "test/acc", "top5": "test/acc_top5", "loss": "test/loss",
                "ece": "test/ece"}
# with test-time augmentation, beside the plain ones
TTA_METRICS = {"top1": "test/acc_tta", "top5": "test/acc_top5_tta", "loss": "test/loss_tta",
               "ece": "test/ece_tta"}


def cell_metrics(result: CellResult) -> dict[str, float]:
    """What a cell's run gets after evaluation: ``test/*`` (with TTA ``test/*_tta``) and
    ``model/gflops``."""
    out = {metric: float(getattr(result.metrics, key)) for key, metric in TEST_METRICS.items()}
    out["test/images_per_s"] = float(result.images_per_s)
    out["model/gflops"] = float(result.gflops)
    if result.tta is not None:
        out.update({metric: float(getattr(result.tta, key))
                    for key, metric in TTA_METRICS.items()})
    return out


def _points(x: float) -> float:
    return round(100 * float(x), 2)


def study_metrics(study: Study) -> dict[str, float]:
    """The parent's view of the study, in percentage points rounded to 0.01:
    ``gain.<ft>-<scratch>.<budget>`` first (MLflow lists metrics by name), with tuned cells
    ``gain_shift.<ft>-<scratch>.<budget>`` (tuned minus fixed gain), ``top1_mean.<variant>.
    <budget>``, with TTA ``top1_tta_mean.*`` and ``tta_effect.*``, each with ``_low`` and
    ``_high``; per search ``search_val_acc.*`` (points), ``search_seconds.*``,
    ``search_gflops.*``, ``search_trials.*``."""
    summary = [("top1_mean", f"{a.variant}.{a.budget}", a.top1) for a in study.aggregates]
    summary += [("gain", f"{g.finetune}-{g.scratch}.{g.budget}", g.diff) for g in study.gains]
    summary += [("gain_shift", f"{g.finetune}-{g.scratch}.{g.budget}", g.diff)
                for g in study.shifts]
    for t in study.tta:
        summary += [("top1_tta_mean", f"{t.variant}.{t.budget}", t.top1),
                    ("tta_effect", f"{t.variant}.{t.budget}", t.effect)]
    out = {f"{name}{what}.{which}": _points(value) for name, which, iv in summary
           for what, value in (("", iv.mean), ("_low", iv.low), ("_high", iv.high))}
    for s in study.searches:  # the tuning summary: the choice's val score and the search's cost
        key = f"{s.variant}.{s.budget}"
        if s.chosen is not None:
            out[f"search_val_acc.{key}"] = _points(s.chosen.value)
        out[f"search_seconds.{key}"] = round(float(s.seconds), 1)
        out[f"search_gflops.{key}"] = round(float(s.flops / 1e9), 1)
        out[f"search_trials.{key}"] = float(len(s.record.trials))
    return out


def pretraining_runs(params: Params, models_dir: Path) -> dict[str, str]:
    """``{pretrain_<name>: run id}`` of the pretraining runs of ours (``source: train``) that
    finished; they join the comparison as well."""
    runs = {}
    for name, pt in params.pretrained.items():
        run_dir = pretraining_dir(name, models_dir)
        if pt.source == "train" and (run_dir / RunRecord.FILE).is_file():
            try:
                run_id = RunRecord.read(run_dir).run_id
            except RecordError as e:
                log.warning("%s", e)
                continue
            if run_id:
                runs[f"pretrain_{name}"] = run_id
    return runs


def log_comparison(params: Params, results: Sequence[CellResult], study: Study, *,
                   test_dir: Path, models_dir: Path, report_dir: Path,
                   confusion: Mapping[CellKey, Path],
                   model_ids: Mapping[CellKey, str], description: str = "") -> str | None:
    """Every cell's run (and our pretraining runs) under the comparison's parent run; each cell's
    :func:`cell_metrics`, linked to its logged model (``model_ids``: the model page shows them)
    and to the test split's dataset; ``confusion`` (a cell's confusion CSV) into that cell's run;
    :func:`study_metrics`, the report and ``description`` (markdown: the run page shows it first)
    in the parent. A failure is reported, not fatal. Returns the parent run id."""
    try:
        mlflow = client()
        test = split_datasets(test_dir)["test"]
        exp = mlflow.get_experiment_by_name(params.base.mlflow_experiment)
        if exp is None:
            raise TrackingError(f"no experiment {params.base.mlflow_experiment!r}")
        group = comparison_group(params)
        members = {str(r.key): r.run.run_id for r in results if r.run.run_id}
        members.update(pretraining_runs(params, models_dir))
        parent = comparison_parent(mlflow, exp.experiment_id, group)
        for key, run_id in members.items():
            if mlflow.get_run(run_id).data.tags.get(PARENT_TAG) != parent:
                log.info("%s: run %s goes under this comparison's parent run %s", key, run_id,
                         parent)
                mlflow.set_tag(run_id, PARENT_TAG, parent)
                mlflow.set_tag(run_id, GROUP_TAG, group.key)
        colors = {v: COLORS[i % len(COLORS)] for i, v in enumerate(params.trained_variants)}
        by_key = {r.key: r for r in results}
        for r in results:
            run_id = r.run.run_id
            if not run_id:
                continue
            mlflow.set_tag(run_id, COLOR_TAG, colors[r.key.variant])
            for metric, value in cell_metrics(r).items():
                mlflow.log_metric(run_id, metric, value, model_id=model_ids.get(r.key),
                                  dataset_name=test.name, dataset_digest=test.digest)
        for key, csv in confusion.items():  # the cells the report's figures show
            if by_key[key].run.run_id:
                mlflow.log_artifact(by_key[key].run.run_id, str(csv), "evaluation")
        for metric, value in study_metrics(study).items():
            mlflow.log_metric(parent, metric, value)
        if description:
            mlflow.set_tag(parent, DESCRIPTION_TAG, description)
        mlflow.set_experiment_tag(exp.experiment_id, SHARED_VIEW_TAG + view_key(parent),
                                  json.dumps(comparison_view(parent)))
        mlflow.log_artifacts(parent, str(report_dir), "report")
        return parent
    except Exception as e:  # noqa: BLE001 - any tracking failure must not lose the results
        log.warning("could not log the test results to MLflow (%s): %s", tracking_uri(), e)
        return None
