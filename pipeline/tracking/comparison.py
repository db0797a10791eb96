"""The comparison in MLflow: the parent run over every cell's training run, the test metrics in
each cell's run, and the study's aggregates and the report in the parent.

A comparison is a parent run (tag ``pipeline.role=parent``, keyed by ``pipeline.group``: a hash of
the params the trained models depend on) with one child run per cell (MLflow's
``mlflow.parentRunId``). Grouping happens in one place, :func:`log_comparison`, called by the
``evaluate`` stage, the one stage that sees every cell: training runs know nothing of
comparisons. A failure to log is reported, not fatal: the results on disk are the record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RecordError, TrackingError
from ..layout import CellKey, pretraining_dir
from ..records import RunRecord
from .datasets import split_datasets
from .names import KIND, KIND_TAG
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


@dataclass(frozen=True)
class Group:
    """One comparison: the key of its params and the variants it compares."""

    key: str
    name: str
    variants: tuple[str, ...]


def comparison_group(params: Params) -> Group:
    """The :class:`Group` of a :class:`pipeline.config.Params`."""
    key = params.group_key()
    name = f"{params.base.dataset}: {' vs '.join(params.trained_variants)} [{key[:8]}]"
    return Group(key=key, name=name[:250], variants=tuple(params.trained_variants))


def comparison_parent(mlflow, experiment_id: str, group: Group) -> str:
    """The run id of ``group``'s parent run in the experiment, created (FINISHED: a container,
    not a job) if there is none yet. Marks the experiment as model training for the UI."""
    mlflow.set_experiment_tag(experiment_id, KIND_TAG, KIND)
    found = mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.`{GROUP_TAG}` = '{group.key}' and tags.`{ROLE_TAG}` = 'parent'",
        order_by=["attributes.start_time ASC"], max_results=1,
    )
    if found:
        return found[0].info.run_id
    tags = {GROUP_TAG: group.key, ROLE_TAG: "parent", "variants": ", ".join(group.variants)}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = mlflow.create_run(experiment_id, run_name=group.name, tags=tags)
    mlflow.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


# a cell's metrics.json key -> its MLflow metric name, the same in every cell's run
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


def study_metrics(study: Study) -> dict[str, float]:
    """The parent's view of the study: ``top1_mean.<variant>.<budget>``,
    ``gain.<ft>-<scratch>.<budget>``, with tuned cells ``gain_shift.<ft>-<scratch>.<budget>``
    (tuned minus fixed gain), with TTA ``top1_tta_mean.*`` and ``tta_effect.*``, each with
    ``_low`` and ``_high``; per search ``search_val_acc.*``, ``search_seconds.*``,
    ``search_gflops.*``, ``search_trials.*``."""
    summary = [("top1_mean", f"{a.variant}.{a.budget}", a.top1) for a in study.aggregates]
    summary += [("gain", f"{g.finetune}-{g.scratch}.{g.budget}", g.diff) for g in study.gains]
    summary += [("gain_shift", f"{g.finetune}-{g.scratch}.{g.budget}", g.diff)
                for g in study.shifts]
    for t in study.tta:
        summary += [("top1_tta_mean", f"{t.variant}.{t.budget}", t.top1),
                    ("tta_effect", f"{t.variant}.{t.budget}", t.effect)]
    out = {f"{name}{what}.{which}": value for name, which, iv in summary
           for what, value in (("", iv.mean), ("_low", iv.low), ("_high", iv.high))}
    for s in study.searches:  # the tuning summary: the choice's val score and the search's cost
        key = f"{s.variant}.{s.budget}"
        if s.chosen is not None:
            out[f"search_val_acc.{key}"] = float(s.chosen.value)
        out[f"search_seconds.{key}"] = float(s.seconds)
        out[f"search_gflops.{key}"] = float(s.flops / 1e9)
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
                   model_ids: Mapping[CellKey, str]) -> str | None:
    """Every cell's run (and our pretraining runs) under the comparison's parent run; each cell's
    :func:`cell_metrics`, linked to its logged model (``model_ids``: the model page shows them)
    and to the test split's dataset; ``confusion`` (a cell's confusion CSV) into that cell's run;
    :func:`study_metrics` and the report in the parent. A failure is reported, not fatal.
    Returns the parent run id."""
    try:
        mlflow = client()
        test = split_datasets(test_dir)["test"]
        exp = mlflow.get_experiment_by_name(params.base.mlflow_experiment)
        if exp is None:
            raise TrackingError(f"no experiment {params.base.mlflow_experiment!r}")
        group = comparison_group(params)
        parent = comparison_parent(mlflow, exp.experiment_id, group)
        members = {str(r.key): r.run.run_id for r in results if r.run.run_id}
        members.update(pretraining_runs(params, models_dir))
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
        mlflow.log_artifacts(parent, str(report_dir), "report")
        return parent
    except Exception as e:  # noqa: BLE001 - any tracking failure must not lose the results
        log.warning("could not log the test results to MLflow (%s): %s", tracking_uri(), e)
        return None
