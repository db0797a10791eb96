"""Mixup and CutMix on the device, per batch, with torchvision's ``transforms.v2`` ops.

Mixup (Zhang et al. 2018) blends two images and their labels with ``lam ~ Beta(a, a)``; CutMix (Yun
et al. 2019) pastes a box of area ``1 - lam`` from another image and mixes the labels by area. With
both on, each batch takes one of them at random (as timm's ``switch_prob=0.5``); ``prob`` is the
fraction of batches mixed at all. They run on the normalised float batch, after the CPU pipeline,
so no worker pays for them. Every draw comes from torch's global CPU generator, which Lightning
seeds and :class:`pipeline.training.resume.Resumable` saves, so a resumed run mixes the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


class BatchMix:
    """``(images (B, C, H, W) float, labels (B,) int) -> (images, soft targets (B, K))``."""

    def __init__(self, num_classes: int, *, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 prob: float = 1.0) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0.0 <= prob <= 1.0:
            raise ValueError(f"need alphas >= 0 and prob in [0, 1]; got mixup_alpha={mixup_alpha}, "
                             f"cutmix_alpha={cutmix_alpha}, prob={prob}")
        ops = []
        if mixup_alpha > 0:
            ops.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            ops.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.num_classes = num_classes
        self.prob = prob if ops else 0.0
        self.op = None if not ops else ops[0] if len(ops) == 1 else v2.RandomChoice(ops)

    @classmethod
    def create(cls, num_classes: int, *, mixup_alpha: float, cutmix_alpha: float,
               prob: float) -> BatchMix | None:
        """A :class:`BatchMix`, or None when it would mix nothing."""
        mix = cls(num_classes, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob)
        return mix if mix.prob > 0 else None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
        if self.op is not None and torch.rand(()).item() < self.prob:
            return self.op(images, labels)
        return images, F.one_hot(labels, self.num_classes).to(images.dtype)
