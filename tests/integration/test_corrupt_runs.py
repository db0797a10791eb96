"""Damaged files where training and the stage CLIs meet them: ``last.ckpt`` and ``resume.json``
at resume (a real Lightning checkpoint), and the ``train`` and ``evaluate`` CLIs end to end on a
damaged manifest or model file: one line naming the file and the way out (exit 2, no traceback),
and nothing that was good is lost."""

import io
import json
import os
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from corrupt_helpers import one_line_naming, snapshot, trained_variant
from pipeline.data import read_manifest
from pipeline.errors import ResumeError
from pipeline.layout import BEST_CKPT, LAST_CKPT, RESUME_FILE
from pipeline.training.resume import check_checkpoint, decide, rng_state

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "0123456789abcdef"


# --------------------------------------------------------------------------- last.ckpt


class _Tiny(L.LightningModule):
    """Enough of a model for Lightning to write a full training checkpoint: hyper-parameters,
    optimizer and LR-scheduler state, loops."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.ReLU(),
                                       torch.nn.Linear(width, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-3)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(32, 8, generator=g),
                             torch.randint(0, 2, (32,), generator=g))
        return DataLoader(data, batch_size=8)


class _RngState(L.Callback):
    """Carries the RNG state in the checkpoint as the pipeline's ``Resumable`` does."""

    @property
    def state_key(self) -> str:
        return "Resumable"

    def state_dict(self):
        return {"rng": rng_state(), "train_seconds": 1.0}


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """The dir of a run stopped after its first epoch: a real Lightning ``last.ckpt``, a
    ``best.ckpt`` and the ``resume.json`` naming its MLflow run (about a second of training)."""
    out = tmp_path_factory.mktemp("interrupted") / "scratch"
    L.seed_everything(0)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=out,
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=out, filename="last",
                                                       enable_version_counter=False),
                   _RngState()])
    trainer.fit(_Tiny())
    shutil.copyfile(out / LAST_CKPT, out / BEST_CKPT)
    (out / RESUME_FILE).write_text(json.dumps({"fingerprint": "fp", "run_id": RUN_ID,
                                         "tracking_uri": "sqlite:///mlflow.db"}))
    return out


@pytest.fixture
def run_dir(interrupted_run, tmp_path) -> Path:
    out = tmp_path / "models" / "scratch"
    shutil.copytree(interrupted_run, out)
    return out


def test_an_intact_last_ckpt_is_resumed_from(run_dir):
    assert check_checkpoint(run_dir / LAST_CKPT) is None
    start = decide(run_dir, "fp")
    assert start.resuming and start.ckpt_path == run_dir / LAST_CKPT and start.run_id == RUN_ID


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _damaged_pickle(data: bytes) -> bytes:
    """The zip whole, but bytes in the middle of its ``data.pkl`` overwritten."""
    pkl = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    assert pkl.filename.endswith("data.pkl") and pkl.compress_type == zipfile.ZIP_STORED
    start = pkl.header_offset + 30 + len(pkl.filename) + len(pkl.extra) + pkl.file_size // 2
    return data[:start] + b"\xf5" * 32 + data[start + 32:]


def _weights_only(data: bytes) -> bytes:
    ckpt = torch.load(io.BytesIO(data), weights_only=True)
    return _saved({"state_dict": ckpt["state_dict"], "epoch": ckpt["epoch"]})


@pytest.mark.parametrize(
    ("corrupt", "why"),
    [
        (_cut, "is truncated (its zip directory is missing)"),
        (lambda data: data[:-64], "is truncated"),
        (lambda data: random.Random(0).randbytes(4096),
         "is corrupt or not a checkpoint (not a PyTorch file: it starts with b'"),
        (_damaged_pickle, "is corrupt or not a checkpoint ("),
        (lambda data: b"", "is empty (no data)"),
        (_weights_only, "is not a full Lightning training checkpoint (no global_step, loops, "
                        "optimizer_states"),
        (lambda data: _saved([1, 2, 3]), "is not a Lightning checkpoint (it holds a list)"),
    ],
    ids=["half", "tail_cut", "garbage", "damaged_pickle", "empty", "weights_only", "not_a_dict"],
)
def test_a_corrupt_last_ckpt_stops_the_resume_in_one_line_and_deletes_nothing(
        run_dir, corrupt, why):
    last = run_dir / LAST_CKPT
    last.write_bytes(corrupt(last.read_bytes()))
    before = snapshot(run_dir)

    with pytest.raises(ResumeError) as err:
        decide(run_dir, "fp")  # before trainer.fit, where Lightning would die with a traceback

    message = str(err.value)
    one_line_naming(message, last, "set PIPELINE_FRESH=1 to train afresh")
    assert f"{last} {why}" in message
    assert RUN_ID in message and f"move {run_dir / BEST_CKPT} away first" in message
    assert snapshot(run_dir) == before  # best.ckpt, resume.json, even the bad last.ckpt
    start = decide(run_dir, "fp", fresh=True)  # the way out it names
    assert start.clear and not start.resuming and start.abandon[0]["run_id"] == RUN_ID


# --------------------------------------------------------------------------- resume.json


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (lambda good: good[: len(good) // 2], "Unterminated string"),
        (lambda good: b"[]", "a JSON list, not an object"),
        (lambda good: b'{"fingerprint": "fp"}', "no 'run_id' string"),
        (lambda good: b'{"fingerprint": null, "run_id": 3}', "no 'fingerprint' or 'run_id'"),
        (lambda good: b"\xff\xfe" + good, "'utf-8' codec can't decode byte 0xff"),
        (lambda good: b"", "Expecting value"),
    ],
    ids=["truncated", "list", "missing_key", "wrong_types", "not_utf8", "empty"],
)
def test_a_corrupt_resume_json_stops_the_resume_in_one_line_and_deletes_nothing(
        run_dir, content, why):
    state = run_dir / RESUME_FILE
    state.write_bytes(content(state.read_bytes()))
    before = snapshot(run_dir)

    with pytest.raises(ResumeError) as err:
        decide(run_dir, "fp")

    message = str(err.value)
    one_line_naming(message, state, "set PIPELINE_FRESH=1 to train afresh")
    assert f"{state} is unreadable (" in message and why in message
    assert snapshot(run_dir) == before
    start = decide(run_dir, "fp", fresh=True)  # the way out it names works
    assert start.clear and not start.resuming and start.abandon is None


# --------------------------------------------------------------------------- a stage CLI


def test_a_stage_on_a_corrupt_file_prints_one_error_line_and_exits_2(
        digits_dir, tmp_path, tiny_params):
    """The real CLI of the train stage, in its own process: exit 2 and one ``error:`` line."""
    prepared = tmp_path / "data" / "prepared"
    shutil.copytree(digits_dir, prepared)
    manifest = prepared / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:50])  # a half-copied manifest
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))

    res = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.train", "scratch", "--data", "data/prepared",
         "--out", "models/scratch"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    [line] = res.stderr.strip().splitlines()  # one line, and nothing else
    assert line.startswith(f"error: cannot read {Path('data/prepared/manifest.json')} (")
    assert "dvc repro prepare" in line
    assert not (tmp_path / "models" / "scratch").exists()


def test_evaluate_on_a_corrupt_model_file_prints_one_line_and_keeps_the_last_results(
        digits_dir, digits_test_dir, tmp_path, tiny_params):
    """The evaluate stage's CLI reads every variant's files before it writes anything: a bad one
    is named in one line (exit 2), and the results of the last good evaluation stay as they
    were."""
    classes = read_manifest(digits_dir)["classes"]
    for seed, variant in enumerate(("scratch", "finetune")):  # the one cell each of tiny_params
        trained_variant(tmp_path / "models" / variant / "all" / "seed0", classes, seed=seed)
    bad = tmp_path / "models" / "finetune" / "all" / "seed0" / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[:-100])  # a half-copied file
    results = tmp_path / "results"
    results.mkdir()
    (results / "metrics.json").write_text('{"scratch": {"top1": 0.9}}\n')  # the last good one
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))

    res = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.evaluate", "--test", str(digits_test_dir),
         "--models", "models", "--out", "results"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": "sqlite:///m.db"})

    assert res.returncode == 2, res.stderr
    [line] = res.stderr.strip().splitlines()
    one_line_naming(line, Path("models/finetune/all/seed0/model.safetensors"), "dvc repro")
    assert [p.name for p in results.iterdir()] == ["metrics.json"]
    assert (results / "metrics.json").read_text() == '{"scratch": {"top1": 0.9}}\n'
