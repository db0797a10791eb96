"""End to end: ``dvc repro`` of the real dvc.yaml in a temporary workspace with a tiny study.

Digits (bundled with scikit-learn, offline) as the data set; the pretrained weights are a
safetensors checkpoint written from a randomly initialised timm ViT (``pretrained.source: file``),
standing in for the hub download. Two variants (scratch, finetune) at two label budgets (3 images
per class, and all) with one seed, then two: four cells, then eight, each its own stage through DVC's ``matrix``;
each variant is also searched (2 trials per budget) and its choice trained as ``<variant>-tuned``
beside it: four searches, then eight tuned cells.
Asserts the metrics (every cell, and the study's aggregates with their intervals; the test-time
augmentation figures beside the plain ones), the report and its curve, every cell's MLflow run
under one parent, a no-op second ``dvc repro``, that a fine-tuning param edit re-runs only that
variant's cells and evaluate, that adding a seed runs only the new cells and evaluate, and which
stages a code edit re-runs.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import timm
import yaml
from safetensors.torch import save_file

from pipeline.records import History
from pipeline.workspace import commit_workspace, make_workspace, stage_env

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _dvc(ws, *args) -> str:
    env = {**stage_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{ws.parent / 'mlflow.db'}"}
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"dvc {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@-]+)'", output)


VARIANTS = ("scratch", "finetune")
TUNED = ("scratch-tuned", "finetune-tuned")
BUDGETS = ("3", "all")


def _cells(variant: str) -> list[str]:
    """The training stages of a variant (``<variant>-tuned``: of its tuned cells), one per
    budget: each trains every seed."""
    base = variant.removesuffix("-tuned")
    stage = "train_scratch" if base == "scratch" else "finetune"
    stage += "_tuned" if variant != base else ""
    return [f"{stage}@{base}-{b}" for b in BUDGETS]


def _searches(variant: str) -> list[str]:
    return [f"tune_{variant}@{variant}-{b}" for b in BUDGETS]


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
        v["train"].update(epochs=2, batch_size=64, warmup_epochs=0.5, min_steps=None)
    scratch["augment"]["crop_padding"] = 1
    finetune["pretrained"] = "ref"
    finetune["train"]["min_steps"] = 4  # budget 3 (30 images < 64): 5 passes, 2 batches/epoch
    p["base"]["seeds"] = [0]  # then a second seed is added
    p["prepare"]["budgets"] = [3, "all"]
    p["scratch"] = {"scratch": scratch}
    p["finetune"] = {"finetune": finetune}
    p["evaluate"]["batch_size"] = 64
    p["tune"] = {
        "scratch": {"scratch": {"trials": 2, "sampler": {"name": "random", "seed": 0},
                                "seed": 100, "epochs": 1,
                                "space": {"train.optimizer.lr": {"low": 1e-4, "high": 1e-2,
                                                                 "log": True}}}},
        "finetune": {"finetune": {"trials": 2, "sampler": {"name": "grid", "seed": 0},
                                  "seed": 100, "epochs": 1,
                                  "space": {"train.optimizer.lr": {"choices": [0.01, 0.03]}}}}}
    p["evaluate"]["tta"] = {"hflip": True, "shift": 1}  # every view: 10
    (root / "params.tiny.yaml").write_text(yaml.safe_dump(p))
    ws = make_workspace(root / "ws", root / "params.tiny.yaml")
    first = _dvc(ws, "repro")
    assert commit_workspace(ws, "the first run")  # what pipeline.workspace does after a repro
    second = _dvc(ws, "repro")
    finetune["train"]["optimizer"]["lr"] = 0.003
    finetune["model"]["drop_path"] = 0.1
    (ws / "params.yaml").write_text(yaml.safe_dump(p))
    status = _dvc(ws, "status")
    subprocess.run(["git", "checkout", "params.yaml"], cwd=ws, check=True)
    # the same edit as a DVC experiment: the workspace is a git repository
    third = _dvc(ws, "exp", "run", "-S", "finetune.finetune.train.optimizer.lr=0.003",
                 "-S", "finetune.finetune.model.drop_path=0.1")
    # --all: the tiny models' accuracies need not move with the edit; every row is listed
    diffs = {what: _dvc(ws, what, "diff", "--all") for what in ("metrics", "params")}
    diffs["gains"] = _dvc(ws, "metrics", "diff", "--all", "--targets", "results/metrics/gain")
    diffs["exp show"] = _dvc(ws, "exp", "show", "--no-pager", "--csv", "--drop", ".*",
                             "--keep", "Experiment|rev|.*/gain/.*mean")  # as the docs show it
    p["base"]["seeds"] = [0, 1]  # one more seed: only its cells (and evaluate) run
    (ws / "params.yaml").write_text(yaml.safe_dump(p))
    fourth = _dvc(ws, "repro")
    # what a code edit re-runs, as DVC sees it (dvc.yaml's deps; nothing is re-run here)
    edited = {}
    for name in ("pipeline/report/page.py", "pipeline/models/vit.py", "pipeline/config/params.py"):
        path = ws / name
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        edited[name] = _dvc(ws, "status")
        path.write_text(text)
    # noise in place of the test arrays: the training cells neither depend on them nor open
    # them (DVC sees prepare's output and evaluate's input changed, nothing else)
    test_files = {p: p.read_bytes() for p in (ws / "data" / "test").glob("*.npy")}
    for path in test_files:
        array = np.load(path)
        np.save(path, np.random.default_rng(0).permutation(array))
    edited["data/test"] = _dvc(ws, "status")
    for path, data in test_files.items():
        path.write_bytes(data)
    faults = _evaluate_faults(ws)
    return dict(ws=ws, db=root / "mlflow.db", first=first, second=second, status=status,
                third=third, fourth=fourth, edited=edited, diffs=diffs, faults=faults)


def _results(ws: Path) -> dict[str, bytes]:
    """What evaluate published, file by file (not a staging dir a killed run left)."""
    results = ws / "results"
    return {str(p.relative_to(results)): p.read_bytes() for p in sorted(results.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in
                                       p.relative_to(results).parts)}


def _evaluate_faults(ws: Path) -> dict:
    """``dvc repro`` of evaluate with a truncated model file, and killed (SIGKILL, the whole
    process group) while it writes its outputs: what is left of the results each time."""
    good = _results(ws)
    model = ws / "models" / "finetune" / "all" / "seed0" / "model.safetensors"
    data = model.read_bytes()
    model.write_bytes(data[:-100])
    env = {**stage_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{ws.parent / 'mlflow.db'}"}
    truncated = subprocess.run([sys.executable, "-m", "dvc", "repro", "-s", "evaluate"], cwd=ws,
                               env=env, capture_output=True, text=True, timeout=600)
    after_truncated = _results(ws)
    model.write_bytes(data)
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-f", "-s", "evaluate"],
                            cwd=ws, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, staged = time.monotonic() + 300, False
    while time.monotonic() < deadline and proc.poll() is None:
        if any((ws / "results").glob(".new-*")):  # evaluate is writing its outputs
            staged = True
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return dict(good=good, truncated=truncated, after_truncated=after_truncated, staged=staged,
                after_kill=_results(ws))


def test_first_repro_runs_every_cell_and_writes_the_study(workspace):
    ran = _ran(workspace["first"])
    assert sorted(ran) == sorted(["prepare", "pretrained@ref", *_cells("scratch"),
                                  *_cells("finetune"), *_searches("scratch"),
                                  *_searches("finetune"), *_cells("scratch-tuned"),
                                  *_cells("finetune-tuned"), "evaluate"])
    assert ran[0] == "prepare" and ran[-1] == "evaluate"
    assert all(ran.index("pretrained@ref") < ran.index(c) for c in _cells("finetune"))
    assert all(ran.index("pretrained@ref") < ran.index(c) for c in _searches("finetune"))
    for v in VARIANTS:  # a search before the cells that train its choice
        for search, cell in zip(_searches(v), _cells(v + "-tuned")):
            assert ran.index(search) < ran.index(cell)
    ws = workspace["ws"]
    # the figures of the last evaluate (after the second seed was added)
    cells = json.loads((ws / "results" / "cells.json").read_text())
    assert sorted(cells) == sorted(f"{v}/{b}/seed{s}" for v in VARIANTS + TUNED
                                   for b in BUDGETS for s in (0, 1))
    for key, m in cells.items():
        assert 0.0 <= m["top1"] <= m["top5"] <= 1.0 and 0.0 <= m["ece"] <= 1.0
        assert m["test_images"] == 100 and m["num_params"] > 0 and m["images_per_s"] > 0
        tta = m["tta"]  # beside the plain figures, never instead
        assert set(tta) == {"top1", "top5", "loss", "ece", "views"} and tta["views"] == 10
        assert 0.0 <= tta["top1"] <= tta["top5"] <= 1.0 and 0.0 <= tta["ece"] <= 1.0
        assert m["labelled"] == (30 if m["budget"] == "3" else 270)  # 3 per class; 90% of 300
        # the min_steps floor (finetune only) lengthens the small budget's epochs, not their
        # number: ceil(2 batches * 64 / 30) = 5 passes; 270 images give 4 batches on their own
        small, floored = m["budget"] == "3", m["variant"].startswith("finetune")
        assert m["epochs"] == 2
        assert (m["passes"], m["steps"]) == ((5, 4) if small and floored else
                                             (1, 2) if small else (1, 8))
        history = History.read(ws / "models" / key).epochs
        assert [r.epoch for r in history] == list(range(m["epochs"]))
    study = json.loads((ws / "results" / "study.json").read_text())
    assert study["seeds"] == [0, 1] and study["budgets"] == list(BUDGETS)
    for v in VARIANTS + TUNED:
        for b in BUDGETS:
            agg = study["top1"][v][b]
            tops = [cells[f"{v}/{b}/seed{s}"]["top1"] for s in (0, 1)]
            assert agg["method"] == "t" and agg["n"] == 2
            assert agg["mean"] == pytest.approx(sum(tops) / 2)
            assert agg["low"] <= agg["mean"] <= agg["high"]
            tta = study["tta_top1"][v][b]
            assert tta["mean"] == pytest.approx(
                sum(cells[f"{v}/{b}/seed{s}"]["tta"]["top1"] for s in (0, 1)) / 2)
            effect = study["tta_effect"][v][b]
            assert effect["paired"] and effect["mean"] == pytest.approx(tta["mean"] - agg["mean"])
    for b in BUDGETS:
        gain = study["gain"]["finetune-scratch"][b]
        diffs = [cells[f"finetune/{b}/seed{s}"]["top1"] - cells[f"scratch/{b}/seed{s}"]["top1"]
                 for s in (0, 1)]
        assert gain["mean"] == pytest.approx(sum(diffs) / 2) and gain["paired"]
        tuned = study["gain"]["finetune-tuned-scratch-tuned"][b]
        tdiffs = [cells[f"finetune-tuned/{b}/seed{s}"]["top1"]
                  - cells[f"scratch-tuned/{b}/seed{s}"]["top1"] for s in (0, 1)]
        assert tuned["mean"] == pytest.approx(sum(tdiffs) / 2)
        shift = study["gain_shift"]["finetune-scratch"][b]  # tuned gain minus fixed gain
        assert shift["mean"] == pytest.approx(tuned["mean"] - gain["mean"])
        assert shift["method"] == "t" and shift["n"] == 2
    assert set(study["gain"]) == {"finetune-scratch", "finetune-tuned-scratch-tuned"}
    # DVC's metrics: the same study in points, a file per gain and variant, no per-cell figures
    answer = ws / "results" / "metrics"
    assert sorted(str(p.relative_to(answer)) for p in answer.rglob("*.json")) == sorted(
        [*(f"gain/{pair}.json" for pair in study["gain"]), "gain_shift/finetune-scratch.json",
         *(f"top1/{v}.json" for v in VARIANTS + TUNED)])
    for pair, per_budget in study["gain"].items():
        got = json.loads((answer / "gain" / f"{pair}.json").read_text())
        assert got == {b: {k: round(100 * iv[k], 2) for k in ("mean", "low", "high")}
                       for b, iv in per_budget.items()}
    assert json.loads((answer / "top1" / "scratch.json").read_text())["all"]["mean"] == round(
        100 * study["top1"]["scratch"]["all"]["mean"], 2)
    # dvc metrics show: a row per file, a column per budget and bound: it fits a terminal
    shown = _dvc(ws, "metrics", "show").splitlines()
    assert shown[0].split() == ["Path", *(f"{b}.{k}" for b in sorted(BUDGETS)
                                         for k in ("high", "low", "mean"))]
    assert len(shown) == 1 + 2 + 1 + 4 and max(map(len, shown)) < 160
    assert shown[1].startswith("results/metrics/gain/")
    # the searches: their trials, their choice, and what the tuned cells trained
    for v in VARIANTS:
        for b in BUDGETS:
            search = study["tuning"][f"{v}/{b}"]
            assert search["trials"] == 2 and search["cost"]["gflops"] > 0
            chosen = json.loads((ws / "models" / f"{v}-tuned" / "choice" / b / "chosen.json"
                                 ).read_text())
            assert chosen["overrides"] == search["chosen"]["params"]
            lr = chosen["overrides"]["train.optimizer.lr"]
            for s in (0, 1):  # the cell trained exactly the chosen config: its model file and
                trained = _model_info(ws / "models" / f"{v}-tuned" / b / f"seed{s}")
                assert trained["params"]["variant"]["train"]["optimizer"]["lr"] == lr
                assert trained["params"]["tuned"]["overrides"] == chosen["overrides"]
            if v == "finetune":  # the grid: both points, one each
                lrs = sorted(t["params"]["train.optimizer.lr"] for t in json.loads(
                    (ws / "models" / "finetune-tuned" / "search" / b / "trials.json"
                     ).read_text())["trials"])
                assert lrs == [0.01, 0.03]
    report = ws / "results" / "report"
    for v in VARIANTS:
        rows = (ws / "results" / "confusion" / f"{v}.csv").read_text().splitlines()
        assert rows[0] == "actual,predicted" and len(rows) == 101
    md = (report / "report.md").read_text()
    assert all(f"| {v} |" in md for v in VARIANTS + TUNED)
    assert "Pretraining gain, recipes as written against both arms tuned" in md
    assert "**Searches: chosen on validation top-1, never on the test split**" in md
    assert (report / "figures" / "expected_max.png").stat().st_size > 10_000
    assert f"**Test-time augmentation ({study['tta_views']})" in md
    assert study["tta_views"].startswith("10 views")
    html = (report / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 8
    assert (report / "curve.csv").read_text().count("\n") == 1 + 2 * len(VARIANTS) * len(BUDGETS)
    # DVC draws every plot dvc.yaml names: per variant the study, the val curve, the confusion
    plots = json.loads(_dvc(ws, "plots", "show", "--json"))
    assert not plots.get("errors"), plots.get("errors")
    drawn = set(plots["data"])
    for v in VARIANTS:
        assert {f"results/report/study/{v}.csv", f"results/report/curves/{v}.csv",
                f"results/confusion/{v}.csv"} <= drawn, drawn


def _model_info(cell: Path) -> dict:
    """The info a cell's model file carries (its metadata: what it was trained with)."""
    from pipeline.models.model_file import load_model_file

    return load_model_file(cell / "model.safetensors").info


def _by_name(client, exp_id, group: str | None = None):
    runs = client.search_runs([exp_id], order_by=["attributes.start_time ASC"])
    return {r.info.run_name: r for r in runs
            if group is None or r.data.tags.get("pipeline.group") == group}


def test_every_cell_is_a_run_under_one_parent_with_metrics(workspace):
    uri = f"sqlite:///{workspace['db']}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name("e2e")
    parents = sorted(client.search_runs([exp.experiment_id],
                                        filter_string="tags.`pipeline.role` = 'parent'"),
                     key=lambda r: r.info.start_time)
    # the first study, the one after the finetune edit, the one with a third seed
    assert len(parents) == 3
    # training runs know nothing of comparisons: evaluate put every cell under the parent; after
    # the finetune edit the 2 new finetune cells and the 2 reused scratch ones; after the second
    # seed all 4 earlier cells and the 4 new ones
    assert workspace["first"].count("goes under this comparison's parent") == 8
    assert workspace["third"].count("goes under this comparison's parent") == 8
    assert workspace["fourth"].count("goes under this comparison's parent") == 16
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    # the finetune edit re-trained the finetune cells; their old runs stay with the first parent
    assert sorted(r.info.run_name for r in children) == sorted(
        f"{v}/{b}/seed0" for v in ("finetune", "finetune-tuned") for b in BUDGETS)
    latest = parents[-1]
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{latest.info.run_id}'")
    by_name = {r.info.run_name: r for r in children}
    assert set(by_name) == {f"{v}/{b}/seed{s}" for v in VARIANTS + TUNED for b in BUDGETS
                            for s in (0, 1)}
    for name, run in by_name.items():
        variant, budget, seed = name.split("/")
        assert run.info.status == "FINISHED"
        assert {"val/acc", "train/loss_epoch", "test/acc", "test/acc_top5", "test/ece",
                "model/gflops", "test/acc_tta", "test/acc_top5_tta", "test/loss_tta",
                "test/ece_tta"} <= set(run.data.metrics)
        stage = "finetune" if variant.startswith("finetune") else "train_scratch"
        assert run.data.tags["stage"] == stage + ("_tuned" if variant in TUNED else "")
        assert (run.data.tags["variant"], run.data.tags["budget"], run.data.tags["seed"]) == (
            variant, budget, seed.removeprefix("seed"))
        assert run.data.params["model.variant"] == "Ti/16"
    # a registered version per model that changed: the scratch cell shown (all/seed0) was never
    # trained again, the finetune one was after the edit
    versions = {v: sorted(int(m.version) for m in client.search_model_versions(
        f"name = 'vit-cifar10-{v}'")) for v in VARIANTS}
    assert versions == {"scratch": [1], "finetune": [1, 2]}
    # the parents: the answer first on the run page, and their names start with what changed
    assert latest.data.tags["mlflow.note.content"].startswith("**Pretraining ")
    assert parents[0].info.run_name.startswith("digits: scratch vs finetune")
    assert parents[1].info.run_name.startswith("finetune.finetune.model.drop_path 0.0→0.1; "
                                               "finetune.finetune.train.optimizer.lr ")
    assert parents[2].info.run_name.startswith("base.seeds [0]→[0, 1] | digits: ")
    assert "variant.freeze_epochs" in by_name["finetune/all/seed0"].data.params
    chosen = json.loads((workspace["ws"] / "models" / "finetune-tuned" / "choice" / "all"
                         / "chosen.json").read_text())
    tuned_params = by_name["finetune-tuned/all/seed0"].data.params  # MLflow says what it trained
    assert float(tuned_params["variant.train.optimizer.lr"]) == chosen["overrides"][
        "train.optimizer.lr"]
    assert float(tuned_params["tuned.val_acc"]) == pytest.approx(chosen["value"])
    # each search a parent run with its trials as children, each with its curve and state
    searches = client.search_runs([exp.experiment_id],
                                  filter_string="tags.`pipeline.role` = 'search'")
    assert {r.info.run_name for r in searches} >= {f"tune {v}/{b}" for v in VARIANTS
                                                   for b in BUDGETS}
    for search in searches:
        trials = client.search_runs([exp.experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{search.info.run_id}'"))
        assert len(trials) == 2 and all("val/acc" in t.data.metrics for t in trials)
        assert {t.data.tags["trial.state"] for t in trials} <= {"complete", "pruned", "failed"}
        assert search.info.status == "FINISHED" and "val/acc_best" in search.data.metrics
    # the parent holds the study: the mean and interval per variant and budget, and the gain
    for b in BUDGETS:
        assert {f"top1_mean.{v}.{b}" for v in VARIANTS} <= set(latest.data.metrics)
        assert {f"gain{w}.finetune-scratch.{b}" for w in ("", "_low", "_high")} <= set(
            latest.data.metrics)
        assert {f"gain_shift{w}.finetune-scratch.{b}" for w in ("", "_low", "_high")} <= set(
            latest.data.metrics)
        assert {f"search_val_acc.{v}.{b}" for v in VARIANTS} <= set(latest.data.metrics)
        assert {f"{name}{w}.{v}.{b}" for name in ("top1_tta_mean", "tta_effect")
                for w in ("", "_low", "_high") for v in VARIANTS} <= set(latest.data.metrics)
    assert "report/report.html" in {a.path for a in client.list_artifacts(latest.info.run_id,
                                                                          "report")}
    # the figures' cell of each variant (largest budget, first seed) is logged as an MLflow
    # model, its test metrics linked to it and to the test split's dataset, and registered
    for v in VARIANTS:
        run = by_name[f"{v}/all/seed0"]
        models = client.search_logged_models([exp.experiment_id], filter_string=(
            f"source_run_id = '{run.info.run_id}'"))  # a reused run was evaluated again
        accs = [{m.key: m for m in model.metrics}["test/acc"] for model in models]
        assert accs and all(a.dataset_name == "digits" for a in accs)
        assert run.data.metrics["test/acc"] in {a.value for a in accs}
        version = client.get_model_version(f"vit-cifar10-{v}", "1")
        assert client.get_run(version.run_id).info.run_name == f"{v}/all/seed0"


def test_second_repro_does_nothing(workspace):
    assert _ran(workspace["second"]) == []


def test_finetune_edit_reruns_only_its_cells_and_evaluate(workspace):
    assert all(c in workspace["status"] for c in _cells("finetune"))
    assert "train_scratch" not in workspace["status"] and "pretrained" not in workspace["status"]
    assert "tune_scratch" not in workspace["status"]
    # its search runs again (the recipe it searches changed), and its tuned cells
    assert sorted(_ran(workspace["third"])) == sorted([*_cells("finetune"), *_searches("finetune"),
                                                       *_cells("finetune-tuned"), "evaluate"])


def test_an_edit_as_a_dvc_experiment_diffs_against_the_last_run(workspace):
    metrics = workspace["diffs"]["metrics"].splitlines()
    assert metrics[0].split()[:4] == ["Path", "Metric", "HEAD", "workspace"], metrics
    rows = [line.split() for line in metrics[1:]]
    # a row per file, budget and bound (DVC orders the files as it likes; a bound the one-seed
    # shift has none of is left out): nothing per cell
    for pair in ("finetune-scratch", "finetune-tuned-scratch-tuned"):
        assert sum(r[0] == f"results/metrics/gain/{pair}.json" for r in rows) == 3 * len(BUDGETS)
    assert {r[0] for r in rows} == {
        "results/metrics/gain/finetune-scratch.json",
        "results/metrics/gain/finetune-tuned-scratch-tuned.json",
        "results/metrics/gain_shift/finetune-scratch.json",
        *(f"results/metrics/top1/{v}.json" for v in VARIANTS + TUNED)}, metrics
    assert not any("cells" in line or "images_per_s" in line for line in metrics)
    # the gains alone, as the docs show it: a row per pair, budget and bound
    gains = [line.split() for line in workspace["diffs"]["gains"].splitlines()[1:]]
    assert sorted({r[0] for r in gains}) == [
        "results/metrics/gain/finetune-scratch.json",
        "results/metrics/gain/finetune-tuned-scratch-tuned.json"]
    assert {r[1] for r in gains} == {f"{b}.{k}" for b in BUDGETS for k in ("high", "low", "mean")}
    params = workspace["diffs"]["params"]
    assert "finetune.finetune.train.optimizer.lr" in params and "0.003" in params
    assert "finetune.finetune.model.drop_path" in params
    # the experiments side by side, the gains' columns alone: the workspace (the experiment's
    # results, applied), the last commit, the experiment
    header, *rows = workspace["diffs"]["exp show"].splitlines()
    assert header.split(",") == ["Experiment", "rev", *(
        f"results/metrics/gain/{pair}.json:{b}.mean"
        for pair in ("finetune-scratch", "finetune-tuned-scratch-tuned") for b in BUDGETS)]
    assert [r.split(",")[1] for r in rows[:2]] == ["workspace", "main"] and len(rows) == 3


def test_the_last_good_results_survive_a_failed_or_killed_evaluate(workspace):
    faults = workspace["faults"]
    truncated = faults["truncated"]
    assert truncated.returncode != 0
    assert "models/finetune/all/seed0/model.safetensors" in truncated.stderr + truncated.stdout
    assert faults["after_truncated"] == faults["good"]
    assert faults["staged"], "evaluate was killed before it wrote anything"
    assert faults["after_kill"] == faults["good"]
    assert {"metrics/gain/finetune-scratch.json", "study.json", "cells.json",
            "report/report.html"} <= set(faults["good"])


def test_a_new_seed_trains_only_its_cells_and_evaluate(workspace):
    ran = _ran(workspace["fourth"])
    # every training stage runs (base.seeds is its param), not the searches: they chose for
    # every seed
    assert sorted(ran) == sorted([*(c for v in VARIANTS + TUNED for c in _cells(v)),
                                  "evaluate"])
    # each keeps its seed-0 cell (the same params and code) and trains seed 1 alone
    fourth = workspace["fourth"]
    assert fourth.count("/seed0 holds a finished run of the same params and code; kept") == 8
    assert fourth.count("/seed1 holds a finished run") == 0
    assert fourth.count("/seed1: best val/acc") == 8


def _stages_in(status: str) -> set[str]:
    """The stages ``dvc status`` reports as changed (lines ``<stage>:`` at the left margin)."""
    return {line[:-1] for line in status.splitlines()
            if line.endswith(":") and not line.startswith((" ", "\t"))}


def test_a_code_edit_reruns_exactly_the_stages_that_run_that_code(workspace):
    edited = workspace["edited"]
    cells = {c for v in VARIANTS + TUNED for c in _cells(v)}
    searches = {*_searches("scratch"), *_searches("finetune")}
    assert _stages_in(edited["pipeline/report/page.py"]) == {"evaluate"}
    assert _stages_in(edited["pipeline/models/vit.py"]) == {
        "pretrained@ref", *searches, *cells, "evaluate"}  # not prepare: it builds no model
    assert _stages_in(edited["pipeline/config/params.py"]) == {
        "prepare", "pretrained@ref", *searches, *cells, "evaluate"}
    # the test split reaches evaluate alone
    assert _stages_in(edited["data/test"]) == {"prepare", "evaluate"}
