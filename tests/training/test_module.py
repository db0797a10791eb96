"""The LightningModule: schedule, param groups, device preprocessing, frozen-then-unfrozen."""

import math

import lightning as L
import pytest
import torch

from pipeline.config import FinetuneParams, StageParams
from pipeline.models import DevicePreprocess, ImageClassifier, VisionTransformer, build_vit
from pipeline.training import ViTClassifier, param_groups, warmup_cosine

MODEL_8PX = {"variant": "custom", "img_size": 8, "patch_size": 4, "embed_dim": 16, "depth": 1,
             "num_heads": 2}


def _params(optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=1.0, epochs=1,
            freeze_epochs=None, backbone_lr_scale=1.0) -> StageParams:
    """A recipe with no label smoothing and no Mixup/CutMix (the LightningModule's old defaults);
    ``freeze_epochs`` set: a fine-tune recipe with that frozen start."""
    data = {"model": dict(MODEL_8PX),
            "train": {"epochs": epochs, "batch_size": 16, "warmup_epochs": warmup_epochs,
                      "optimizer": {"name": optimizer, "lr": lr, "weight_decay": weight_decay}},
            "augment": {"crop_padding": 0, "hflip": False}}
    if freeze_epochs is None:
        return StageParams.model_validate(data)
    return FinetuneParams.model_validate({**data, "pretrained": "tiny",
                                          "freeze_epochs": freeze_epochs,
                                          "backbone_lr_scale": backbone_lr_scale})


def _classifier(params: StageParams) -> ImageClassifier:
    return ImageClassifier(VisionTransformer(params.model.vit_config(num_classes=3)))


def test_warmup_cosine_shape():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(5, 0, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_weight_decay_only_on_matrices_and_backbone_lr_scaled():
    model = build_vit("Ti/4", img_size=16, num_classes=3, depth=1)
    groups = {g["name"]: g for g in param_groups(model, lr=1.0, weight_decay=0.1,
                                                 backbone_lr_scale=0.25)}
    assert set(groups) == {"backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay"}
    assert all(p.ndim >= 2 for p in groups["backbone_decay"]["params"])
    assert all(p.ndim < 2 for p in groups["backbone_no_decay"]["params"])
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0
    assert groups["backbone_decay"]["lr"] == 0.25 and groups["head_decay"]["lr"] == 1.0
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_device_preprocess_expands_gray_resizes_and_normalises():
    pre = DevicePreprocess(img_size=24)
    x = torch.full((2, 8, 8, 1), 255, dtype=torch.uint8)
    out = pre(x)
    assert out.shape == (2, 3, 24, 24) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.ones_like(out))  # (1 - 0.5) / 0.5
    with pytest.raises(ValueError, match="expected uint8 images"):
        pre(torch.zeros(2, 8, 8, 1))
    with pytest.raises(ValueError, match="images have 2 channels, the model expects 3"):
        pre(torch.zeros(2, 8, 8, 2, dtype=torch.uint8))


class _Data(L.LightningDataModule):
    def __init__(self, n=64, classes=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 256, (n, 8, 8, 3), dtype=torch.uint8, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)

    def train_dataloader(self):
        ds = torch.utils.data.TensorDataset(self.x, self.y)
        return torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True)


class _Snapshot(L.Callback):
    """Copies of the weights and the optimizer state at the end of every epoch."""

    def __init__(self):
        self.weights, self.state_sizes = [], []

    def on_train_epoch_end(self, trainer, pl_module):
        vit = pl_module.model.vit
        self.weights.append({k: v.detach().clone() for k, v in vit.state_dict().items()})
        opt = trainer.optimizers[0]
        self.state_sizes.append({g["name"]: sum(1 for p in g["params"] if opt.state.get(p))
                                 for g in opt.param_groups})


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_backbone_frozen_first_then_trained(optimizer):
    torch.manual_seed(0)
    params = _params(optimizer, lr=0.05, weight_decay=0.1, warmup_epochs=0, epochs=2,
                     freeze_epochs=1, backbone_lr_scale=0.5)
    assert (params.backbone().freeze_epochs, params.backbone().lr_scale) == (1, 0.5)
    model = _classifier(params)
    start = {k: v.clone() for k, v in model.vit.state_dict().items()}
    module = ViTClassifier(model, params)
    snap = _Snapshot()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[snap],
                        limit_val_batches=0)
    trainer.fit(module, datamodule=_Data())
    after_frozen, after_unfrozen = snap.weights
    backbone = [k for k in start if not k.startswith("head.")]
    for k in backbone:  # epoch 0: not a single backbone weight moved (no decay, no momentum)
        assert torch.equal(after_frozen[k], start[k]), k
    assert not torch.equal(after_frozen["head.weight"], start["head.weight"])
    assert snap.state_sizes[0]["backbone_decay"] == 0  # the optimizer never saw the backbone
    assert snap.state_sizes[0]["head_decay"] == 1
    assert any(not torch.equal(after_unfrozen[k], after_frozen[k]) for k in backbone)
    assert snap.state_sizes[1]["backbone_decay"] > 0


def test_non_finite_loss_names_the_step():
    params = _params()
    model = _classifier(params)
    with torch.no_grad():
        model.vit.head.bias.fill_(float("nan"))
    module = ViTClassifier(model, params)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    with pytest.raises(FloatingPointError, match="non-finite training loss .* global step 0"):
        trainer.fit(module, datamodule=_Data())


def test_batch_mix_gives_soft_targets_that_sum_to_one_and_follow_the_seed():
    from pipeline.training.mixing import BatchMix

    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 4
    mix = BatchMix(4, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0)
    torch.manual_seed(0)
    a, ta = mix(x, y)
    torch.manual_seed(0)
    b, tb = mix(x, y)
    assert torch.equal(a, b) and torch.equal(ta, tb)
    assert ta.shape == (8, 4) and torch.allclose(ta.sum(1), torch.ones(8))
    assert not torch.equal(a, x) and (ta.max(1).values < 1).all()  # mixed, images and labels
    off = BatchMix(4, mixup_alpha=0.8, prob=0.0)
    same, onehot = off(x, y)
    assert torch.equal(same, x) and torch.equal(onehot.argmax(1), y) and onehot.max() == 1
    assert BatchMix(4).prob == 0.0  # no alpha: nothing to mix
    with pytest.raises(ValueError, match="prob"):
        BatchMix(4, mixup_alpha=1.0, prob=2.0)
