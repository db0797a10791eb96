"""The LightningModule that trains any of our ViTs: from scratch, or fine-tuned with a frozen start.

The model is passed in (an ``nn.Module`` that knows nothing of training). One ``model_step`` serves
every split; a torchmetrics object per split; log keys ``train/loss``, ``val/acc``, ``test/acc_top5``.

Frozen-then-unfrozen fine-tuning without toggling ``requires_grad``: DDP fixes the set of parameters
it synchronises when it wraps the model, so Lightning's ``BackboneFinetuning`` (which unfreezes
later and adds a param group) leaves the unfrozen backbone unsynchronised across ranks (Lightning
issue 20340). Here every parameter is in the optimizer from the first step, in param groups that
say whether it belongs to the backbone. While frozen, the backbone groups' learning rate is 0 and
their gradients are dropped after DDP's all-reduce and before the optimizer step, so the optimizer
skips them (no update, no momentum, no weight decay). At ``freeze_epochs`` the backbone groups start
their own warmup + cosine at ``lr * backbone_lr_scale`` (times their layer's decay under layer-wise
lr decay, :func:`param_groups`). Same behaviour on one device or many.

The schedule counts optimizer steps: under gradient accumulation (``train.accumulate_grad_batches``)
Lightning's ``estimated_stepping_batches`` is in steps and the step-interval scheduler advances
once per optimizer step, so warmup and the frozen start end at the same point of the data.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ..config import Recipe
from ..models.classifier import ImageClassifier
from .mixing import BatchMix


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Linear warmup from 0 to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def param_groups(
    model: nn.Module, *, lr: float, weight_decay: float, backbone_lr_scale: float,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """{backbone, head} x {decay, no decay} groups; decay only on >=2-D weights (nanoGPT).

    With ``layer_decay`` (layer-wise lr decay, BEiT/MAE) the backbone groups are also split per
    layer (:meth:`~pipeline.models.vit.VisionTransformer.layer_index`), each group's own ``lr``
    scaled by ``layer_decay ** (depth + 1 - layer)``: the last block's by ``layer_decay``, the
    embeddings' by ``layer_decay ** (depth + 1)``, the final norm's and the head's by 1. The
    scale lives in the group's ``lr``, which any scheduler multiplies (timm keeps it aside as
    ``lr_scale``, which only timm's schedulers apply)."""
    head = {id(p) for p in model.head_parameters()}
    top = model.cfg.depth + 1
    groups: dict[tuple[bool, bool, int], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            layer = model.layer_index(name) if layer_decay is not None else top
            groups.setdefault((id(p) in head, p.ndim >= 2, layer), []).append(p)
    out = []
    for (is_head, decay, layer), params in sorted(groups.items()):
        scale = 1.0 if is_head else backbone_lr_scale
        if layer_decay is not None:
            scale *= layer_decay ** (top - layer)
        name = f"{'head' if is_head else 'backbone'}_{'decay' if decay else 'no_decay'}"
        out.append(
            {
                "params": params,
                "lr": lr * scale,
                "weight_decay": weight_decay if decay else 0.0,
                "name": name if layer_decay is None or is_head else f"{name}_layer{layer}",
                "backbone": not is_head,
            }
        )
    return out


class LitClassifier(L.LightningModule):
    """Trains an :class:`~pipeline.models.ImageClassifier` with the recipe of one variant's params
    (``train``: optimizer, schedule, label smoothing; ``augment``: Mixup/CutMix on the device;
    a fine-tune variant's frozen-then-unfrozen backbone)."""

    def __init__(self, model: ImageClassifier, params: Recipe, *,
                 classes: list[str] | None = None) -> None:
        super().__init__()
        num_classes = model.cfg.num_classes
        self.params = params
        self.schedule = params.backbone()
        # the record in every checkpoint (the weights travel in the state dict)
        self.save_hyperparameters({"params": params.model_dump(mode="json"),
                                   "model_config": model.cfg.to_dict(),
                                   "classes": list(classes or [])})
        self.model = model  # uint8 images -> logits: model.preprocess, then model.vit
        self.criterion = nn.CrossEntropyLoss(label_smoothing=params.train.label_smoothing)
        aug = params.augment  # Mixup/CutMix of training batches; None: off
        self.mix = BatchMix.create(num_classes, mixup_alpha=aug.mixup_alpha,
                                   cutmix_alpha=aug.cutmix_alpha, prob=aug.mix_prob)
        top5 = min(5, num_classes)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_loss = MeanMetric()
        # losses weighted by batch size and synced as sums: exact means over uneven rank shares
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) images -> logits (B, num_classes)."""
        return self.model(images)

    def model_step(self, batch: tuple[torch.Tensor, torch.Tensor]):
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        return loss, logits, labels

    @property
    def backbone_frozen(self) -> bool:
        return self.current_epoch < self.schedule.freeze_epochs

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.mix is None:
            loss, logits, labels = self.model_step(batch)
        else:  # soft targets; train/acc is then against the unmixed labels
            images, labels = batch
            x, target = self.mix(self.model.preprocess(images), labels)
            logits = self.model.vit(x)
            loss = self.criterion(logits.float(), target.float())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at epoch {self.current_epoch}, "
                f"global step {self.global_step}"
            )
        self.train_acc(logits, labels)
        self.train_loss(loss.detach())
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        if self.schedule.freeze_epochs:
            self.log("train/backbone_frozen", float(self.backbone_frozen), on_step=False,
                     on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits, labels = self.model_step(batch)
        self.val_acc(logits, labels)
        self.val_top5(logits, labels)
        self.val_loss(loss, weight=len(labels))
        self.log("val/loss", self.val_loss, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)
        self.log("val/acc_top5", self.val_top5, on_epoch=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, labels = self.model_step(batch)
        self.test_acc(logits, labels)
        self.test_top5(logits, labels)
        self.test_loss(loss, weight=len(labels))
        self.log("test/loss", self.test_loss, on_epoch=True)
        self.log("test/acc", self.test_acc, on_epoch=True)
        self.log("test/acc_top5", self.test_top5, on_epoch=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """While the backbone is frozen, drop its (already all-reduced) gradients so the
        optimizer skips those parameters entirely. Runs before gradient clipping."""
        if self.backbone_frozen:
            for group in optimizer.param_groups:
                if group.get("backbone"):
                    for p in group["params"]:
                        p.grad = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        """Global-norm clipping; under FSDP through the root module's ``clip_grad_norm_``, which
        reduces the norm over the shards (Lightning's own clipping refuses FSDP)."""
        if not gradient_clip_val:
            return
        if isinstance(self.trainer.strategy, FSDPStrategy):
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        opt_p, schedule = self.params.train.optimizer, self.schedule
        groups = param_groups(self.model.vit, lr=opt_p.lr, weight_decay=opt_p.weight_decay,
                              backbone_lr_scale=schedule.lr_scale,
                              layer_decay=schedule.layer_decay)
        # One fused kernel for the whole update where torch has one (CUDA, CPU). Not with fp16's
        # loss scaler: a fused step unscales inside, so Lightning could not clip before it.
        can_fuse = self.device.type in ("cuda", "cpu") and self.trainer.precision != "16-mixed"
        fused = {"fused": True} if can_fuse else {}
        if opt_p.name == "sgd":
            opt = torch.optim.SGD(groups, lr=opt_p.lr, momentum=opt_p.momentum, **fused)
        else:
            opt = torch.optim.AdamW(groups, lr=opt_p.lr, betas=tuple(opt_p.betas), **fused)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs))
        warmup = round(self.params.train.warmup_epochs * per_epoch)
        frozen = schedule.freeze_epochs * per_epoch

        def head_lambda(step: int) -> float:
            return warmup_cosine(step, warmup, total)

        def backbone_lambda(step: int) -> float:
            if step < frozen:
                return 0.0
            return warmup_cosine(step - frozen, warmup, total - frozen)

        lambdas = [backbone_lambda if g["backbone"] else head_lambda for g in groups]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
