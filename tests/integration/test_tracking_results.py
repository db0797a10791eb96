"""What the evaluate stage logs, called on its own (``pipeline.tracking``): the shown cells'
models logged and registered (:func:`register_models`), then the comparison
(:func:`log_comparison`): every cell's run under one parent, its test metrics linked to its
model and to the test split's dataset, the study's aggregates and the report in the parent;
and a store that fails is reported, not fatal."""

from __future__ import annotations

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
from pipeline.tracking.comparison import GROUP_TAG, PARENT_TAG, ROLE_TAG, log_comparison
from pipeline.tracking.serving import register_models
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
    register_models({v: (c.trained, c.run.run_id) for c, r in results
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
                            model_ids={shown[v]: i for v, i in model_ids.items()})
    assert parent is not None
    p = client.get_run(parent)
    assert p.data.tags[ROLE_TAG] == "parent" and p.data.tags[GROUP_TAG] == params.group_key()
    assert p.data.metrics["gain.finetune-scratch.all"] == pytest.approx(
        study.gains[0].diff.mean)
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
