"""Interrupted training resumes: same weights and metrics as a run that never stopped, in the same
MLflow run; a change of params starts afresh; nothing resumes silently from nothing. (A real
SIGKILL from outside, of the whole ``dvc repro``, is in tests/test_dvc_faults.py.)"""

import json
import os
import signal

import lightning as L
import mlflow
import pytest
import torch
from conftest import make_tiny_params
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pipeline.config import FinetuneRecipe, parse_params
from pipeline.errors import ResumeError
from pipeline.layout import RESUME_FILE
from pipeline.models import ImageClassifier, VisionTransformer
from pipeline.records import History
from pipeline.tracking.uri import tracking_uri
from pipeline.training import resume as resume_mod
from pipeline.training.fit import TrainingJob, fit
from pipeline.training.resume import decide

# dropout and stochastic depth on, so a resume that lost the RNG state would differ
NOISY = {"dropout": 0.1, "drop_path": 0.1}
EPOCHS = 3


def _params(tiny_params, freeze_epochs=0, layer_decay=None, repeats=1, **train):
    """The scratch recipe; with ``freeze_epochs``, as a fine-tune recipe: that frozen start, then
    the backbone at half the lr (and ``layer_decay`` per layer)."""
    p = parse_params(tiny_params)
    sp = p.scratch["scratch"]
    sp = sp.model_copy(update={
        "model": sp.model.model_copy(update=NOISY),
        "augment": sp.augment.model_copy(update={"repeats": repeats}),
        "train": sp.train.model_copy(update={"epochs": EPOCHS, "batch_size": 32, **train})})
    if freeze_epochs:
        sp = FinetuneRecipe(**{**sp.model_dump(), "pretrained": "tiny",
                               "freeze_epochs": freeze_epochs, "backbone_lr_scale": 0.5,
                               "layer_decay": layer_decay})
    return p, sp


def _fit(tiny_params, digits_dir, out_dir, *, freeze_epochs=0, **train):
    p, sp = _params(tiny_params, freeze_epochs, **train)
    L.seed_everything(0)
    model = ImageClassifier(VisionTransformer(sp.model.vit_config(num_classes=10)))
    job = TrainingJob(name="scratch", stage="train_scratch", recipe=sp, seed=0,
                      data_dir=digits_dir, out_dir=out_dir,
                      logged_params={"train": sp.model_dump()})
    return fit(job, model, p.base.trainer, "resume")


class _SigtermAt(L.Callback):
    """Sends this process a real SIGTERM in the middle of an epoch."""

    def __init__(self, epoch: int, batch: int = 2):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


def _interrupt(tiny_params, digits_dir, out, monkeypatch, patch_trainer, stop_epoch=1, **kw):
    """Train until a SIGTERM in the middle of ``stop_epoch``; the MLflow run id it left."""
    with monkeypatch.context() as m:
        patch_trainer(_SigtermAt(stop_epoch), mp=m)
        with pytest.raises(SIGTERMException):
            _fit(tiny_params, digits_dir, out, **kw)
    return json.loads((out / RESUME_FILE).read_text())["run_id"]


def _weights(ckpt):
    return torch.load(ckpt, weights_only=True)["state_dict"]


def _history(run_id, key):
    client = mlflow.MlflowClient(tracking_uri())
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits_dir):
    """Uninterrupted runs (scratch, and with a frozen backbone for 2 epochs) to compare with."""
    results = {}
    root = tmp_path_factory.mktemp("reference")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    try:
        for case, (_, kw) in CASES.items():
            out = root / case
            result = _fit(make_tiny_params(), digits_dir, out, **kw)
            _check_history(out, EPOCHS)
            results[case] = (_weights(out / "last.ckpt"), result.best_val_acc,
                             _history(result.run_id, "val/acc"),
                             _history(result.run_id, "val/loss"))
    finally:
        mp.undo()
    return results


def _check_history(out, epochs):
    """history.json: exactly one row per finished epoch, in order."""
    rows = History.read(out).epochs
    assert [r.epoch for r in rows] == list(range(epochs))
    assert all(0.0 <= r.val_acc <= 1.0 and r.train_loss > 0 for r in rows)
    return rows


# case: (the epoch killed, fit's kwargs); the tiny params are the scratch recipe: RandAugment,
# random erasing, Mixup/CutMix and label smoothing are on in every case. "unfrozen": killed in
# epoch 2 of a run frozen for 1, so it resumes from a checkpoint taken after the backbone was
# unfrozen (Lightning's BaseFinetuning re-freezes there, Lightning issue 21901; ours must not),
# with layer-wise lr decay, repeated augmentation and gradient accumulation on
CASES = {
    "scratch": (1, {"freeze_epochs": 0, "ema_decay": None}),
    "frozen-2": (1, {"freeze_epochs": 2, "ema_decay": None}),
    "ema": (1, {"freeze_epochs": 0, "ema_decay": 0.9}),
    "unfrozen": (2, {"freeze_epochs": 1, "ema_decay": None, "layer_decay": 0.7, "repeats": 2,
                     "accumulate_grad_batches": 2}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sigterm_then_resume_matches_an_uninterrupted_run(
        tiny_params, digits_dir, tmp_path, monkeypatch, patch_trainer, reference, case):
    out = tmp_path / "ckpt"
    stop_epoch, kw = CASES[case]
    ema_decay = kw["ema_decay"]
    run_id = _interrupt(tiny_params, digits_dir, out, monkeypatch, patch_trainer, stop_epoch,
                        **kw)
    client = mlflow.MlflowClient(tracking_uri())
    assert client.get_run(run_id).info.status == "KILLED"
    assert torch.load(out / "last.ckpt", weights_only=True)["epoch"] == stop_epoch - 1

    result = _fit(tiny_params, digits_dir, out, **kw)

    assert result.run_id == run_id  # the same MLflow run, finished now
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "1"
    assert "error" not in run.data.tags
    ref_weights, ref_best, ref_acc, ref_loss = reference[case]
    _check_history(out, EPOCHS)
    weights = _weights(out / "last.ckpt")
    if ema_decay:  # the checkpoint holds the average, and the raw weights beside it
        assert "current_model_state" in torch.load(out / "last.ckpt", weights_only=True)
        raw = reference["scratch"][0]
        assert any(not torch.equal(weights[k], raw[k]) for k in raw)
    # CPU, fixed seed: bit-identical in practice; the tolerance allows for kernel-order noise
    for name, value in ref_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=1e-6, msg=name)
    assert result.best_val_acc == pytest.approx(ref_best, abs=1e-6)
    # one val point per epoch, as uninterrupted (the killed epoch logged no val metrics)
    for key, ref in (("val/acc", ref_acc), ("val/loss", ref_loss)):
        history = _history(run_id, key)
        assert [s for s, _ in history] == [s for s, _ in ref]
        assert [v for _, v in history] == pytest.approx([v for _, v in ref], abs=1e-6)


def test_a_resume_without_the_rng_state_would_differ(
        tiny_params, digits_dir, tmp_path, monkeypatch, patch_trainer, reference):
    """Control: the comparison above can fail; restoring all but the RNG state is not enough."""
    out = tmp_path / "ckpt"
    _interrupt(tiny_params, digits_dir, out, monkeypatch, patch_trainer)
    monkeypatch.setattr(resume_mod, "set_rng_state", lambda state: None)
    _fit(tiny_params, digits_dir, out)
    weights, ref = _weights(out / "last.ckpt"), reference["scratch"][0]
    assert any(not torch.allclose(weights[k], ref[k], atol=1e-6) for k in ref)


def test_a_resume_that_refroze_the_backbone_would_differ(
        tiny_params, digits_dir, tmp_path, monkeypatch, patch_trainer, reference):
    """Control for the "unfrozen" case: a resumed run whose backbone is frozen again (what
    Lightning's BaseFinetuning does on resume, issue 21901) ends elsewhere, and is caught."""
    from pipeline.training.lightning_module import LitClassifier

    out = tmp_path / "ckpt"
    stop_epoch, kw = CASES["unfrozen"]
    _interrupt(tiny_params, digits_dir, out, monkeypatch, patch_trainer, stop_epoch, **kw)
    monkeypatch.setattr(LitClassifier, "backbone_frozen", property(lambda self: True))
    _fit(tiny_params, digits_dir, out, **kw)
    weights, ref = _weights(out / "last.ckpt"), reference["unfrozen"][0]
    assert any(not torch.allclose(weights[k], ref[k], atol=1e-6) for k in ref)


def test_changed_params_start_afresh_and_end_the_orphan_killed(
        tiny_params, digits_dir, tmp_path, monkeypatch, patch_trainer):
    out = tmp_path / "ckpt"
    old = _interrupt(tiny_params, digits_dir, out, monkeypatch, patch_trainer)
    client = mlflow.MlflowClient(tracking_uri())
    client.update_run(old, status="RUNNING")  # as a SIGKILL leaves it

    result = _fit(tiny_params, digits_dir, out, epochs=2)

    assert result.run_id != old
    orphan = client.get_run(old)
    assert orphan.info.status == "KILLED"
    assert orphan.data.tags["error"] == "abandoned: params changed; a new run was started"
    assert "resumed" not in client.get_run(result.run_id).data.tags
    # the latest epoch, though val/acc need not have improved in it
    assert torch.load(out / "last.ckpt", weights_only=True)["epoch"] == 1


def test_fresh_start_is_forced_with_the_env_var(
        tiny_params, digits_dir, tmp_path, monkeypatch, patch_trainer):
    out = tmp_path / "ckpt"
    old = _interrupt(tiny_params, digits_dir, out, monkeypatch, patch_trainer, epochs=2)
    monkeypatch.setenv("PIPELINE_FRESH", "1")
    result = _fit(tiny_params, digits_dir, out, epochs=2)
    assert result.run_id != old
    assert "resumed" not in mlflow.MlflowClient(tracking_uri()).get_run(result.run_id).data.tags


def test_decide_never_resumes_from_nothing_or_guesses(tmp_path, caplog):
    out = tmp_path / "m"
    assert decide(out, "fp") == resume_mod.Start(out, "fp")  # nothing there: afresh

    out.mkdir()
    (out / "last.ckpt").write_bytes(b"from somewhere")
    with pytest.raises(ResumeError, match=f"{out} holds files but no {RESUME_FILE}"):
        decide(out, "fp")  # files of unknown origin are not resumed from, nor deleted
    assert decide(out, "fp", fresh=True).clear

    (out / RESUME_FILE).write_text("{not json")
    with pytest.raises(ResumeError, match=f"{out / RESUME_FILE} is unreadable"):
        decide(out, "fp")

    state = {"fingerprint": "fp", "run_id": "r1", "tracking_uri": "sqlite:///x.db"}
    (out / RESUME_FILE).write_text(json.dumps(state))
    # a last.ckpt is resumed from only when it is a full Lightning checkpoint (tests of damaged
    # ones: tests/test_corrupt_files.py)
    with pytest.raises(ResumeError, match="last.ckpt is corrupt or not a checkpoint"):
        decide(out, "fp")
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 1, "loops": {},
                "optimizer_states": []}, out / "last.ckpt")
    start = decide(out, "fp")
    assert start.resuming and start.run_id == "r1" and start.ckpt_path == out / "last.ckpt"

    (out / "last.ckpt").unlink()  # stopped before its first checkpoint
    start = decide(out, "fp")
    assert not start.resuming and start.clear
    assert start.abandon == (state, "stopped before its first checkpoint; restarted")
    assert "nothing to resume from" in caplog.text

    (out / "last.ckpt").write_bytes(b"x")
    (out / "run.json").write_text("{}")  # finished: DVC re-runs it because something changed
    start = decide(out, "fp")
    assert start.clear and not start.resuming and start.abandon is None
