"""Evaluate trained variants on the test split.

``load_trained`` rebuilds a model from a Lightning checkpoint alone (its config travels in the
hyperparameters); ``evaluate_model`` returns top-1 / top-5 / loss / images-per-second and the
test probabilities; ``forward_gflops`` counts a forward pass with torch's own FLOP counter. The
side-by-side report is :mod:`pipeline.report`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_accuracy

from .models import CheckpointError, ViTConfig, VisionTransformer
from .training.preprocess import DevicePreprocess


def load_trained(ckpt_path: str | Path) -> tuple[VisionTransformer, dict]:
    """(model in eval mode, hyperparameters) from a checkpoint written by our training stages."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: run its training stage first (dvc repro)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        hp = ckpt["hyper_parameters"]
        cfg = ViTConfig(**hp["model_config"])
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()
                 if k.startswith("model.")}
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    model = VisionTransformer(cfg)
    model.load_state_dict(state)
    return model.eval(), hp


@dataclass(frozen=True)
class EvalResult:
    top1: float
    top5: float
    loss: float
    images_per_s: float
    num_params: int
    probs: np.ndarray  # (N, K) float32 softmax probabilities

    @property
    def predictions(self) -> np.ndarray:
        """(N,) predicted class indices."""
        return self.probs.argmax(-1)


@torch.no_grad()
def evaluate_model(
    model: VisionTransformer,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Run ``model`` over uint8 (N, H, W, C) ``images``; throughput excludes the first batch."""
    cfg = model.cfg
    pre = DevicePreprocess(cfg.img_size, cfg.in_chans).to(device)
    model = model.eval().to(device)
    logits, seconds, timed = [], 0.0, 0
    for i, start in enumerate(range(0, len(images), batch_size)):
        batch = torch.from_numpy(np.array(images[start : start + batch_size]))  # copy off the mmap
        t0 = time.perf_counter()
        x = batch.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            out = model(pre(x)).float()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i > 0 or len(images) <= batch_size:  # the first batch pays for warm-up
            seconds += time.perf_counter() - t0
            timed += len(batch)
        logits.append(out.cpu())
    all_logits = torch.cat(logits)
    y = torch.from_numpy(np.array(labels, dtype=np.int64))  # a writable copy
    k = cfg.num_classes
    return EvalResult(
        top1=multiclass_accuracy(all_logits, y, k, average="micro").item(),
        top5=multiclass_accuracy(all_logits, y, k, top_k=min(5, k), average="micro").item(),
        loss=F.cross_entropy(all_logits, y).item(),
        images_per_s=timed / seconds if seconds > 0 else float("nan"),
        num_params=sum(p.numel() for p in model.parameters()),
        probs=all_logits.softmax(-1).numpy().astype(np.float32),
    )


def forward_gflops(model: VisionTransformer) -> float:
    """GFLOPs of one forward pass of one image (a multiply-add counts 2), by
    ``torch.utils.flop_counter`` on the model's own input size; the preprocessing is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.cfg
    x = torch.zeros(1, cfg.in_chans, cfg.img_size, cfg.img_size,
                    device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() / 1e9
