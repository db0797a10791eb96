"""Mixed precision: fp16's loss-scaler state survives a resume (on the CPU, through Lightning's
own MixedPrecision plugin with a CPU GradScaler, and on a GPU when there is one), and bf16 is the
GPU default (GPU only). On a GPU machine: ``pytest tests/training/test_precision.py``.
"""

import json
import os
import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pipeline.config import parse_params
from pipeline.models import ImageClassifier, VisionTransformer
from pipeline.models.device import resolve_accelerator, resolve_precision
from pipeline.training.fit import TrainingJob, fit

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=CUDA)]


def _fit(tiny_params, digits_dir, out_dir, patch_trainer, precision, callbacks=(), epochs=4,
         device="cuda"):
    p = parse_params(tiny_params)
    trainer = p.base.trainer.model_copy(update={
        "accelerator": "gpu" if device == "cuda" else "cpu", "precision": precision})
    sp = p.scratch["scratch"]
    sp = sp.model_copy(update={"train": sp.train.model_copy(
        update={"epochs": epochs, "batch_size": 32})})
    L.seed_everything(0)
    model = ImageClassifier(VisionTransformer(sp.model.vit_config(num_classes=10)))

    def fp16_on_cpu(kw):
        # Lightning swaps 16-mixed for bf16 on a CPU (and resolve_precision for 32-true); its
        # MixedPrecision plugin itself runs fp16 autocast and a GradScaler on a CPU
        kw.pop("precision")
        kw["plugins"] = [*kw["plugins"],
                         MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))]

    with pytest.MonkeyPatch.context() as mp:
        patch_trainer(*callbacks, mp=mp,
                      edit=fp16_on_cpu if (device, precision) == ("cpu", "16-mixed") else None)
        job = TrainingJob(name="scratch", stage="train_scratch", recipe=sp, seed=0,
                          data_dir=digits_dir, out_dir=out_dir,
                          logged_params={"precision": precision})
        return fit(job, model, trainer, "precision")


@CUDA
def test_bf16_is_the_gpu_default(tiny_params, digits_dir, tmp_path, patch_trainer):
    p = parse_params(tiny_params)
    trainer = p.base.trainer.model_copy(update={"accelerator": "auto"})
    assert trainer.precision == "bf16-mixed"  # params.yaml's default
    assert resolve_precision(trainer.precision, resolve_accelerator(trainer.accelerator)) == \
        ("bf16-mixed", None)

    seen = {}

    class Look(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen["precision"] = trainer.precision
            seen["device"] = pl_module.device.type
            with trainer.precision_plugin.forward_context():
                seen["dtype"] = pl_module(batch[0]).dtype

    result = _fit(tiny_params, digits_dir, tmp_path / "m", patch_trainer, "bf16-mixed", [Look()],
                  epochs=1)
    assert seen == {"precision": "bf16-mixed", "device": "cuda", "dtype": torch.bfloat16}
    assert 0 <= result.best_val_acc <= 1


class _SetScale(L.Callback):
    """An unusual loss scale, so that a restored scaler cannot be mistaken for a fresh one."""

    def on_train_start(self, trainer, pl_module):
        scaler = trainer.precision_plugin.scaler
        assert scaler._scale is None  # not used yet: it starts from _init_scale
        scaler._init_scale = 1024.0


class _SigtermAt(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 2 and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGTERM)


class _RecordScale(L.Callback):
    def __init__(self):
        self.at_start = None

    def on_train_start(self, trainer, pl_module):
        self.at_start = trainer.precision_plugin.scaler.state_dict()


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_loss_scaler_state_survives_a_resume(tiny_params, digits_dir, tmp_path, patch_trainer,
                                                  device):
    ref = _fit(tiny_params, digits_dir, tmp_path / "ref", patch_trainer, "16-mixed", [_SetScale()],
               device=device)
    ref_weights = torch.load(tmp_path / "ref" / "last.ckpt", weights_only=True)["state_dict"]

    out = tmp_path / "resumed"
    with pytest.raises(SIGTERMException):
        _fit(tiny_params, digits_dir, out, patch_trainer, "16-mixed", [_SetScale(), _SigtermAt()],
             device=device)
    saved = torch.load(out / "last.ckpt", weights_only=True)
    scaler = saved["MixedPrecision"]  # Lightning's MixedPrecision plugin state: the GradScaler
    assert saved["epoch"] == 1 and scaler["scale"] <= 1024.0

    record = _RecordScale()
    result = _fit(tiny_params, digits_dir, out, patch_trainer, "16-mixed", [record], device=device)
    assert result.run_id == json.loads((out / "resume.json").read_text())["run_id"]
    assert record.at_start["scale"] == scaler["scale"]  # not GradScaler's fresh 65536
    assert record.at_start["_growth_tracker"] == scaler["_growth_tracker"]

    weights = torch.load(out / "last.ckpt", weights_only=True)["state_dict"]
    diff = max((weights[k].float() - ref_weights[k].float()).abs().max().item()
               for k in ref_weights)
    name = torch.cuda.get_device_name() if device == "cuda" else "the CPU"
    print(f"\nfp16 resumed vs uninterrupted on {name}: "
          f"max abs weight diff {diff:.3g}, best val acc {result.best_val_acc:.4f} vs "
          f"{ref.best_val_acc:.4f}, loss scale {scaler['scale']}")
    assert diff <= (1e-3 if device == "cuda" else 1e-6)
    assert result.best_val_acc == pytest.approx(ref.best_val_acc, abs=1e-6)
