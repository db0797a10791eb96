"""The classifier every caller runs: uint8 images (B, H, W, C) -> logits, i.e. the device-side
preprocessing (:class:`~pipeline.models.preprocess.DevicePreprocess`) and the ViT, in one module.

Training (:mod:`pipeline.training.lightning_module`), evaluation, ``predict``, ``serve`` and the
MLflow model all go through :class:`ImageClassifier`, and all choose their precision by one rule
(:mod:`pipeline.models.device`), so a trained model gives the same logits wherever it runs.

    >>> clf = ImageClassifier(build_vit("S/16", img_size=224, num_classes=10))
    >>> clf(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .device import autocast
from .preprocess import VIT_MEAN, VIT_STD, DevicePreprocess
from .vit import VisionTransformer, ViTConfig


class ImageClassifier(nn.Module):
    """uint8 images -> logits (B, num_classes). ``images``: one (B, H, W, C) batch, or a sequence
    of (H, W, C) images whose sizes may differ (each is resized on its own, as in training)."""

    def __init__(self, vit: VisionTransformer, preprocess: DevicePreprocess | None = None, *,
                 mean: Sequence[float] = VIT_MEAN, std: Sequence[float] = VIT_STD) -> None:
        """``preprocess``, or one for the ViT's input size that normalises with ``mean``/``std``
        (the weights' own: ``model.mean``/``std`` in params)."""
        super().__init__()
        self.preprocess = preprocess or DevicePreprocess(vit.cfg.img_size, vit.cfg.in_chans,
                                                         tuple(mean), tuple(std))
        self.vit = vit

    @property
    def cfg(self) -> ViTConfig:
        return self.vit.cfg

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            x = self.preprocess(images)
        else:  # (B, C, S, S) from images of any sizes
            x = torch.cat([self.preprocess(im.unsqueeze(0)) for im in images])
        return self.vit(x)


@torch.no_grad()
def batched_logits(classifier: ImageClassifier, images: np.ndarray, *, batch_size: int,
                   device: torch.device, dtype: torch.dtype | None = None
                   ) -> tuple[torch.Tensor, float]:
    """(logits (N, K) float32 on the CPU, images per second) of uint8 (N, H, W, C) ``images``,
    ``batch_size`` at a time; the throughput leaves out the first batch (warm-up) unless it is
    the only one."""
    classifier = classifier.eval().to(device)
    logits, seconds, timed = [], 0.0, 0
    for i, start in enumerate(range(0, len(images), batch_size)):
        batch = torch.from_numpy(np.array(images[start : start + batch_size]))  # off the mmap
        t0 = time.perf_counter()
        with autocast(device, dtype):
            out = classifier(batch.to(device, non_blocking=True)).float()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i > 0 or len(images) <= batch_size:
            seconds += time.perf_counter() - t0
            timed += len(batch)
        logits.append(out.cpu())
    k = classifier.cfg.num_classes
    all_logits = torch.cat(logits) if logits else torch.zeros(0, k)
    return all_logits, (timed / seconds if seconds > 0 else float("nan"))


def forward_gflops(vit: VisionTransformer) -> float:
    """GFLOPs of one forward pass of one image (a multiply-add counts 2), by
    ``torch.utils.flop_counter`` on the model's own input size; the preprocessing is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = vit.cfg
    x = torch.zeros(1, cfg.in_chans, cfg.img_size, cfg.img_size,
                    device=next(vit.parameters()).device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        vit(x)
    return counter.get_total_flops() / 1e9
