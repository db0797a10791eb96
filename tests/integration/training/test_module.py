"""The LightningModule: schedule, param groups, device preprocessing, frozen-then-unfrozen."""

import math

import lightning as L
import pytest
import torch

from pipeline.config import FinetuneRecipe, Recipe
from pipeline.models import DevicePreprocess, ImageClassifier, VisionTransformer, build_vit
from pipeline.training import LitClassifier, param_groups, warmup_cosine

MODEL_8PX = {"variant": "custom", "img_size": 8, "patch_size": 4, "embed_dim": 16, "depth": 1,
             "num_heads": 2}


def _params(optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=1.0, epochs=1,
            freeze_epochs=None, backbone_lr_scale=1.0, layer_decay=None, accumulate=1,
            depth=1) -> Recipe:
    """A recipe with no label smoothing and no Mixup/CutMix (the LightningModule's old defaults);
    ``freeze_epochs`` set: a fine-tune recipe with that frozen start."""
    data = {"model": {**MODEL_8PX, "depth": depth},
            "train": {"epochs": epochs, "batch_size": 16, "warmup_epochs": warmup_epochs,
                      "optimizer": {"name": optimizer, "lr": lr, "weight_decay": weight_decay},
                      "accumulate_grad_batches": accumulate},
            "augment": {"crop_padding": 0, "hflip": False}}
    if freeze_epochs is None:
        return Recipe.model_validate(data)
    return FinetuneRecipe.model_validate({**data, "pretrained": "tiny",
                                          "freeze_epochs": freeze_epochs,
                                          "backbone_lr_scale": backbone_lr_scale,
                                          "layer_decay": layer_decay})


def _classifier(params: Recipe) -> ImageClassifier:
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


@pytest.mark.parametrize("options", [
    {},  # the paper's ViT; then registers, a pre-norm, LayerScale and fc_norm (average pooling)
    dict(reg_tokens=2, pre_norm=True, layer_scale=0.1, class_token=False, global_pool="avg"),
], ids=["paper", "registers-prenorm-fcnorm"])
def test_layer_decay_scales_each_layer_from_the_head_down(options):
    model = build_vit("Ti/4", img_size=16, num_classes=3, depth=3, **options)
    groups = param_groups(model, lr=2.0, weight_decay=0.1, backbone_lr_scale=0.5,
                          layer_decay=0.7)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(lr_of) == len(list(model.parameters()))  # every parameter, once
    for name, p in model.named_parameters():  # by hand: BEiT's numbering, depth 3
        if name.startswith("head."):
            want = 2.0
        elif name.startswith("blocks."):
            want = 2.0 * 0.5 * 0.7 ** (3 - int(name.split(".")[1]))  # block 2: one decay
        elif name.startswith(("norm.", "fc_norm.")):
            want = 2.0 * 0.5  # the final norm (before or after pooling) sits with the head
        else:
            assert name.split(".")[0] in ("cls_token", "reg_token", "pos_embed", "patch_embed",
                                          "norm_pre"), name
            want = 2.0 * 0.5 * 0.7 ** 4  # below block 0
        assert lr_of[id(p)] == pytest.approx(want), name
    if options:  # the new parameters are there, and numbered as above
        assert {"reg_token", "norm_pre", "fc_norm", "blocks"} <= \
            {n.split(".")[0] for n, _ in model.named_parameters()}
        assert model.layer_index("blocks.2.ls2.gamma") == 3
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names)) and "backbone_decay_layer2" in names
    assert all(g["weight_decay"] == (0.1 if "_decay" in g["name"] and "no_decay" not in g["name"]
                                     else 0.0) for g in groups)


class _LrLog(L.Callback):
    """Every param group's lr (by name) and the global step at every optimizer step."""

    def __init__(self):
        self.steps = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.steps.append((trainer.global_step,
                           {g["name"]: g["lr"] for g in optimizer.param_groups}))


def test_layer_decay_composes_with_the_frozen_start_and_accumulation():
    """64 images in batches of 16, 2 batches per optimizer step: 2 steps an epoch, 3 epochs.
    Every group's lr at every step against the schedule computed by hand."""
    torch.manual_seed(0)
    params = _params("sgd", lr=0.1, weight_decay=0.0, warmup_epochs=1, epochs=3,
                     freeze_epochs=1, backbone_lr_scale=0.5, layer_decay=0.6, accumulate=2,
                     depth=2)
    module = LitClassifier(_classifier(params), params)
    log = _LrLog()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[log],
                        limit_val_batches=0, accumulate_grad_batches=2)
    trainer.fit(module, datamodule=_Data())
    assert [s for s, _ in log.steps] == list(range(6))  # optimizer steps, not batches
    total, warmup, frozen = 6, 2, 2

    def hand(name: str, step: int) -> float:
        if name.startswith("head"):
            return 0.1 * warmup_cosine(step, warmup, total)
        layer = int(name.rsplit("layer", 1)[1])
        scale = 0.5 * 0.6 ** (2 + 1 - layer)
        if step < frozen:
            return 0.0
        return 0.1 * scale * warmup_cosine(step - frozen, warmup, total - frozen)

    for step, lrs in log.steps:
        assert set(lrs) >= {"head_decay", "backbone_decay_layer0", "backbone_decay_layer1",
                            "backbone_decay_layer2", "backbone_no_decay_layer3"}
        for name, lr in lrs.items():
            assert lr == pytest.approx(hand(name, step), rel=1e-12, abs=1e-15), (name, step)
    # and by hand for one: step 3 (the 2nd unfrozen step, end of its warmup), block 0
    assert log.steps[3][1]["backbone_decay_layer1"] == pytest.approx(0.1 * 0.5 * 0.6 ** 2)


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
    module = LitClassifier(model, params)
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
    module = LitClassifier(model, params)
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
