"""End to end: ``dvc repro`` of the real dvc.yaml in a temporary workspace with tiny params.

Digits (bundled with scikit-learn, offline) as the data set; the pretrained weights are a
safetensors checkpoint written from a randomly initialised timm ViT (``pretrained.source: file``),
standing in for the hub download. Three variants (two from scratch, one fine-tuned) expand through
``foreach``. Asserts the metrics and report, the MLflow runs as children of one parent with their
metrics, a no-op second ``dvc repro``, and that a fine-tuning param edit re-runs only that variant
and evaluate, whose new parent run then holds all three variants.
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
    return re.findall(r"Running stage '([\w@-]+)'", output)


VARIANTS = ("scratch", "scratch_deep", "finetune")


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
    p["pretrained"] = {"ref": {"source": "file", "path": str(root / "ref.safetensors")}}
    model = {"variant": "Ti/16", "img_size": 16, "patch_size": None, "embed_dim": None,
             "depth": 1, "num_heads": None, "mlp_ratio": None, "dropout": 0.0,
             "attn_dropout": 0.0, "drop_path": 0.0}
    scratch, finetune = p["scratch"]["scratch_ti4"], p["finetune"]["finetune_b16"]
    for v in (scratch, finetune):
        v["model"] = dict(model)
        v["train"].update(epochs=2, batch_size=64, warmup_epochs=0.5)
    scratch["augment"]["crop_padding"] = 1
    finetune["pretrained"] = "ref"
    deep = {**scratch, "model": {**model, "depth": 2}}
    p["scratch"] = {"scratch": scratch, "scratch_deep": deep}
    p["finetune"] = {"finetune": finetune}
    p["evaluate"]["batch_size"] = 64
    (root / "params.tiny.yaml").write_text(yaml.safe_dump(p))
    ws = make_workspace(root / "ws", root / "params.tiny.yaml")
    first = _dvc(ws, "repro")
    second = _dvc(ws, "repro")
    finetune["train"]["optimizer"]["lr"] = 0.003
    finetune["model"]["drop_path"] = 0.1
    (ws / "params.yaml").write_text(yaml.safe_dump(p))
    status = _dvc(ws, "status")
    third = _dvc(ws, "repro")
    # what a code edit re-runs, as DVC sees it (dvc.yaml's deps; nothing is re-run here)
    edited = {}
    for name in ("pipeline/report/page.py", "pipeline/models/vit.py", "pipeline/config.py"):
        path = ws / name
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        edited[name] = _dvc(ws, "status")
        path.write_text(text)
    return dict(ws=ws, db=root / "mlflow.db", first=first, second=second, status=status,
                third=third, edited=edited)


def test_first_repro_runs_every_stage_and_writes_metrics(workspace):
    ran = _ran(workspace["first"])
    assert sorted(ran) == sorted(["prepare", "pretrained@ref", "train_scratch@scratch",
                                  "train_scratch@scratch_deep", "finetune@finetune", "evaluate"])
    assert ran[0] == "prepare" and ran[-1] == "evaluate"
    assert ran.index("pretrained@ref") < ran.index("finetune@finetune")
    ws = workspace["ws"]
    metrics = json.loads((ws / "results" / "metrics.json").read_text())
    assert list(metrics) == list(VARIANTS)
    for variant, m in metrics.items():
        assert 0.0 <= m["top1"] <= m["top5"] <= 1.0 and 0.0 <= m["ece"] <= 1.0
        assert m["test_images"] == 100 and m["num_params"] > 0 and m["images_per_s"] > 0
        assert m["gflops"] > 0 and m["epochs"] == 2
        rows = (ws / "results" / "confusion" / f"{variant}.csv").read_text().splitlines()
        assert rows[0] == "actual,predicted" and len(rows) == 101
        history = json.loads((ws / "models" / variant / "history.json").read_text())
        assert [r["epoch"] for r in history] == [0, 1]
        assert (ws / "results" / "report" / "curves" / f"{variant}.csv").is_file()
    assert metrics["scratch_deep"]["num_params"] > metrics["scratch"]["num_params"]
    report = ws / "results" / "report"
    assert all(f"| {v} |" in (report / "report.md").read_text() for v in VARIANTS)
    html = (report / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 7
    # DVC draws what it can: the confusion matrices and the overlaid val accuracy curves
    shown = _dvc(ws, "plots", "show", "--json")
    assert "results/confusion/finetune.csv" in shown and "val accuracy per epoch" in shown


def _by_name(client, exp_id, group: str | None = None):
    runs = client.search_runs([exp_id], order_by=["attributes.start_time ASC"])
    return {r.info.run_name: r for r in runs
            if group is None or r.data.tags.get("pipeline.group") == group}


def test_runs_are_children_of_one_parent_with_metrics(workspace):
    client = mlflow.MlflowClient(f"sqlite:///{workspace['db']}")
    exp = client.get_experiment_by_name("e2e")
    parents = client.search_runs([exp.experiment_id],
                                 filter_string="tags.`pipeline.role` = 'parent'")
    assert len(parents) == 2  # the first comparison, and the one after the finetune edit
    first = min(parents, key=lambda r: r.info.start_time)
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{first.info.run_id}'")
    # training runs know nothing of comparisons: evaluate put the three under the parent, and
    # after the finetune edit the new finetune run and the two reused scratch runs under the
    # new parent
    assert workspace["first"].count("goes under this comparison's parent") == 3
    assert workspace["third"].count("goes under this comparison's parent") == 3
    # the finetune edit re-trained only "finetune", whose old run stays with the first parent
    assert {r.info.run_name for r in children} == {"finetune"}
    latest = max(parents, key=lambda r: r.info.start_time)
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{latest.info.run_id}'")
    by_name = {r.info.run_name: r for r in children}
    assert set(by_name) == set(VARIANTS)
    for name, run in by_name.items():
        assert run.info.status == "FINISHED"
        assert {"val/acc", "train/loss_epoch", "test/acc", "test/acc_top5", "test/ece",
                "model/gflops"} <= set(run.data.metrics)
        assert run.data.tags["stage"] == ("finetune" if name == "finetune" else "train_scratch")
        assert run.data.params["model.variant"] == "Ti/16"
    assert "variant.freeze_epochs" in by_name["finetune"].data.params
    # the test metrics are the logged model's too, measured on the test split's dataset
    for run in by_name.values():
        models = client.search_logged_models([exp.experiment_id], filter_string=(
            f"source_run_id = '{run.info.run_id}'"))  # a reused run was evaluated twice
        accs = [{m.key: m for m in model.metrics}["test/acc"] for model in models]
        assert accs and all(a.dataset_name == "digits" for a in accs)
        assert run.data.metrics["test/acc"] in {a.value for a in accs}
    assert {f"test/acc.{v}" for v in VARIANTS} <= set(latest.data.metrics)
    assert "report/report.html" in {a.path for a in client.list_artifacts(latest.info.run_id,
                                                                          "report")}
    # evaluate registered each variant's model (pt2, served by `mlflow models serve`), from the
    # run that trained it; the finetune edit registered a second finetune version
    for name in VARIANTS:
        version = client.get_model_version(f"vit-cifar10-{name}", "1")
        assert client.get_run(version.run_id).info.run_name == name
    assert client.get_model_version("vit-cifar10-finetune", "2").run_id == \
        by_name["finetune"].info.run_id


def test_second_repro_does_nothing(workspace):
    assert _ran(workspace["second"]) == []


def test_finetune_edit_reruns_only_finetune_and_evaluate(workspace):
    assert "finetune@finetune" in workspace["status"]
    assert "train_scratch" not in workspace["status"] and "pretrained" not in workspace["status"]
    assert _ran(workspace["third"]) == ["finetune@finetune", "evaluate"]


def _stages_in(status: str) -> set[str]:
    """The stages ``dvc status`` reports as changed (lines ``<stage>:`` at the left margin)."""
    return {line[:-1] for line in status.splitlines()
            if line.endswith(":") and not line.startswith((" ", "\t"))}


def test_a_code_edit_reruns_exactly_the_stages_that_run_that_code(workspace):
    edited = workspace["edited"]
    assert _stages_in(edited["pipeline/report/page.py"]) == {"evaluate"}
    assert _stages_in(edited["pipeline/models/vit.py"]) == {
        "pretrained@ref", "train_scratch@scratch", "train_scratch@scratch_deep",
        "finetune@finetune", "evaluate"}  # not prepare: it does not build a model
    assert _stages_in(edited["pipeline/config.py"]) == {
        "prepare", "pretrained@ref", "train_scratch@scratch", "train_scratch@scratch_deep",
        "finetune@finetune", "evaluate"}
