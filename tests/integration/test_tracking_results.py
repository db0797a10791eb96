"""What the evaluate stage logs, called on its own (``pipeline.tracking``): the shown cells'
models logged and registered (:func:`register_models`), then the comparison
(:func:`log_comparison`): every cell's run under one parent, its test metrics linked to its
model and to the test split's dataset, the study's aggregates and the report in the parent;
and a store that fails is reported, not fatal."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch

from corrupt_helpers import trained_variant
from pipeline.config import parse_params
from pipeline.data import load_prepared
from pipeline.evaluation.cell import evaluate_cell, load_cell
from pipeline.evaluation.study import summarise
from pipeline.layout import cell_dir, cell_keys
from pipeline.tracking.comparison import (
    DESCRIPTION_TAG,
    GROUP_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SHARED_VIEW_TAG,
    log_comparison,
    view_key,
)
from pipeline.tracking.serving import model_name, register_models
from pipeline.tracking.uri import tracking_uri


@pytest.fixture
def evaluated(tiny_params, digits_test_dir, tmp_path):
    """Two seeds of each variant of the tiny params, as training leaves them (a model file and
    run.json naming a real MLflow run), evaluated on the digits test split."""
    tiny_params["base"]["seeds"] = [0, 1]
    params = parse_params(tiny_params)
    manifest, splits = load_prepared(digits_test_dir)
    images, labels = splits["test"]
    labels = np.asarray(labels, dtype=np.int64)
    client = mlflow.MlflowClient(tracking_uri())
    exp = client.create_experiment(params.base.mlflow_experiment)
    models = tmp_path / "models"
    results = []
    for i, key in enumerate(cell_keys(params.variants, ["all"], [0, 1])):
        run = client.create_run(exp, run_name=str(key))
        client.set_tag(run.info.run_id, "variant", key.variant)  # as training tags it
        client.set_terminated(run.info.run_id, "FINISHED")  # trained
        trained_variant(cell_dir(key, models), manifest["classes"], seed=i, img_size=8,
                        embed_dim=16, depth=1, varied=True, run_id=run.info.run_id,
                        experiment_id=exp, tracking_uri=tracking_uri(), epochs=1, labelled=128)
        cell = load_cell(key, models, manifest["classes"])
        results.append((cell, evaluate_cell(cell, params.variant(key.variant)[0], images,
                                            labels, batch_size=64,
                                            device=torch.device("cpu"))))
    study = summarise([r.study_cell(labels) for _, r in results])
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.html").write_text("<html></html>")
    return params, results, study, report, digits_test_dir, models, manifest, client


def test_every_cell_goes_under_one_parent_with_its_metrics(evaluated, tmp_path):
    params, results, study, report, data, models, manifest, client = evaluated
    shown = {r.key.variant: r.key for _, r in results if r.key.seed == 0}
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    fluent = (tracking._tracking_uri, registry._registry_uri)  # MLflow's process-wide URIs
    model_ids: dict[str, str] = {}
    register_models({v: (c.trained, c.run.run_id, model_name(k)) for c, r in results
                     for v, k in shown.items() if r.key == k},
                    prefix="vit-test", image_shape=tuple(manifest["image_shape"]),
                    model_ids=model_ids)
    assert set(model_ids) == set(params.variants)
    assert (tracking._tracking_uri, registry._registry_uri) == fluent  # put back as they were
    confusion = tmp_path / "scratch.csv"
    confusion.write_text("actual,predicted\n")
    parent = log_comparison(params, [r for _, r in results], study, test_dir=data,
                            models_dir=models, report_dir=report,
                            confusion={shown["scratch"]: confusion},
                            model_ids={shown[v]: i for v, i in model_ids.items()},
                            description="**The answer.**")
    assert parent is not None
    p = client.get_run(parent)
    assert p.data.tags[ROLE_TAG] == "parent" and p.data.tags[GROUP_TAG] == params.group_key()
    assert p.data.metrics["gain.finetune-scratch.all"] == round(  # points
        100 * study.gains[0].diff.mean, 2)
    assert p.data.tags[DESCRIPTION_TAG] == "**The answer.**"
    assert "params.json" in {a.path for a in client.list_artifacts(parent)}
    # the saved view the UI opens (viewStateShareKey): the cells grouped by variant, all shown,
    # a bar per variant of the mean test top-1 first
    view = json.loads(client.get_experiment(p.info.experiment_id).tags[
        SHARED_VIEW_TAG + view_key(parent)])
    assert view["groupBy"] == {"aggregateFunction": "average",
                               "groupByKeys": [{"mode": "tag", "groupByData": "variant"}]}
    assert view["runsHiddenMode"] == "SHOW_ALL" and parent in view["searchFilter"]
    assert view["compareRunCharts"][0]["metricKey"] == "test/acc"
    in_view = client.search_runs([p.info.experiment_id], filter_string=view["searchFilter"])
    assert {r.info.run_id for r in in_view} == {r.run.run_id for _, r in results}
    assert {"top1_mean.scratch.all", "top1_mean_low.scratch.all"} <= set(p.data.metrics)
    assert "report/report.html" in {a.path for a in client.list_artifacts(parent, "report")}
    for _, r in results:
        run = client.get_run(r.run.run_id)
        assert run.data.tags[PARENT_TAG] == parent
        assert run.data.metrics["test/acc"] == pytest.approx(r.metrics.top1)
    scratch = client.get_run(results[0][1].run.run_id)
    assert [a.path for a in client.list_artifacts(scratch.info.run_id, "evaluation")] == [
        "evaluation/scratch.csv"]
    version = mlflow.MlflowClient(tracking_uri(), registry_uri=tracking_uri()).get_model_version(
        "vit-test-finetune", "1")
    assert version.run_id == [
        r.run.run_id for _, r in results if r.key == shown["finetune"]][0]
    model = client.get_logged_model(model_ids["finetune"])
    assert model.name == model_name(shown["finetune"]) == "finetune-all-seed0"
    # evaluated again with no cell trained since: the same models, no new registered version
    again_ids: dict[str, str] = {}
    register_models({v: (c.trained, c.run.run_id, model_name(k)) for c, r in results
                     for v, k in shown.items() if r.key == k},
                    prefix="vit-test", image_shape=tuple(manifest["image_shape"]),
                    model_ids=again_ids)
    assert again_ids == model_ids
    registry_client = mlflow.MlflowClient(tracking_uri(), registry_uri=tracking_uri())
    assert [v.version for v in registry_client.search_model_versions(
        "name = 'vit-test-finetune'")] == [1]
    # a second evaluation finds the same parent
    again = log_comparison(params, [r for _, r in results], study, test_dir=data,
                           models_dir=models, report_dir=report, confusion={}, model_ids={})
    assert again == parent


def test_a_store_that_fails_is_reported_not_fatal(evaluated, monkeypatch, caplog):
    params, results, study, report, data, models, _, _ = evaluated
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////no/such/dir/m.db")
    parent = log_comparison(params, [r for _, r in results], study, test_dir=data,
                            models_dir=models, report_dir=report, confusion={}, model_ids={})
    assert parent is None and "could not log the test results to MLflow" in caplog.text
