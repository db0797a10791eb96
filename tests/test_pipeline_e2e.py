"""End to end: ``dvc repro`` of the real dvc.yaml in a temporary workspace with tiny params.

Digits (bundled with scikit-learn, offline) as the data set; the pretrained weights are a
safetensors checkpoint written from a randomly initialised timm ViT (``pretrained.source: file``),
standing in for the hub download. Asserts the metrics, both MLflow runs with their metrics, a
no-op second ``dvc repro``, and that a fine-tuning param edit re-runs only finetune + evaluate.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import timm
import yaml
from safetensors.torch import save_file

from pipeline.workspace import make_workspace, stage_env

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _dvc(ws, *args) -> str:
    env = {**stage_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{ws.parent / 'mlflow.db'}"}
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"dvc {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, depth=1,
                            num_classes=1000)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
              str(root / "ref.safetensors"))
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["base"].update(dataset="digits", mlflow_experiment="e2e")
    p["base"]["trainer"].update(accelerator="cpu", num_workers=0, devices=1)
    p["prepare"].update(val_fraction=0.1, max_train=300, max_test=100, download=False)
    p["pretrained"].update(source="file", path=str(root / "ref.safetensors"))
    model = {"variant": "Ti/16", "img_size": 16, "patch_size": None, "embed_dim": None,
             "depth": 1, "num_heads": None, "mlp_ratio": None, "dropout": 0.0,
             "attn_dropout": 0.0, "drop_path": 0.0}
    for section in ("train_scratch", "finetune"):
        p[section]["model"] = dict(model)
        p[section]["train"].update(epochs=2, batch_size=64, warmup_epochs=0.5)
    p["evaluate"]["batch_size"] = 64
    (root / "params.tiny.yaml").write_text(yaml.safe_dump(p))
    ws = make_workspace(root / "ws", root / "params.tiny.yaml")
    first = _dvc(ws, "repro")
    second = _dvc(ws, "repro")
    p["finetune"]["train"]["optimizer"]["lr"] = 0.01
    p["finetune"]["model"]["drop_path"] = 0.1
    (ws / "params.yaml").write_text(yaml.safe_dump(p))
    status = _dvc(ws, "status")
    third = _dvc(ws, "repro")
    return dict(ws=ws, db=root / "mlflow.db", first=first, second=second, status=status,
                third=third)


def test_first_repro_runs_every_stage_and_writes_metrics(workspace):
    assert _ran(workspace["first"]) == ["prepare", "pretrained", "train_scratch", "finetune",
                                        "evaluate"]
    for variant in ("scratch", "finetune"):
        m = json.loads((workspace["ws"] / "results" / variant / "metrics.json").read_text())
        assert 0.0 <= m["top1"] <= m["top5"] <= 1.0
        assert m["test_images"] == 100 and m["num_params"] > 0 and m["images_per_s"] > 0
        rows = (workspace["ws"] / "results" / variant / "confusion.csv").read_text().splitlines()
        assert rows[0] == "actual,predicted" and len(rows) == 101
    assert "| scratch |" in (workspace["ws"] / "results" / "comparison.md").read_text()


def test_both_runs_are_in_mlflow_with_metrics(workspace):
    client = mlflow.MlflowClient(f"sqlite:///{workspace['db']}")
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    latest = {}
    for r in sorted(runs, key=lambda r: r.info.start_time):
        latest[r.info.run_name] = r
    assert set(latest) == {"scratch", "finetune"}
    for name, run in latest.items():
        assert run.info.status == "FINISHED"
        assert {"val/acc", "train/loss_epoch", "test/acc", "test/acc_top5"} <= set(run.data.metrics)
        assert run.data.tags["stage"] in ("train_scratch", "finetune")
        assert run.data.params["model.variant"] == "Ti/16"
    assert "finetune.freeze_epochs" in latest["finetune"].data.params
    # evaluate registered each variant's model (pt2, served by `mlflow models serve`), from the
    # run that trained it; the finetune edit test below registers a second finetune version
    for name in ("scratch", "finetune"):
        version = client.get_model_version(f"vit-cifar10-{name}", "1")
        assert client.get_run(version.run_id).info.run_name == name


def test_second_repro_does_nothing(workspace):
    assert _ran(workspace["second"]) == []


def test_finetune_edit_reruns_only_finetune_and_evaluate(workspace):
    assert "finetune" in workspace["status"]
    assert "train_scratch" not in workspace["status"] and "pretrained" not in workspace["status"]
    assert _ran(workspace["third"]) == ["finetune", "evaluate"]
