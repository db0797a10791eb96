"""What the Trainer runs on, beyond plain Lightning arguments: the strategy, torch.compile and the
FLOP count that turns throughput into MFU.

- ``strategy: fsdp`` (and ``fsdp_cpu_offload``) shards per transformer block (each
  :class:`~pipeline.models.vit.Block` is one FSDP unit, as for L/16 and H/14 one needs), keeps
  the original parameters (so the param groups and the frozen-backbone schedule see them), and
  saves full, unsharded checkpoints on rank 0: the same files as on one device. Any other name
  goes to Lightning as it is.
- ``compile: true`` compiles the ViT's forward in place (``nn.Module.compile``), so the
  parameters keep their names: ``torch.compile(model)`` would wrap it and prefix every
  checkpoint key with ``_orig_mod.``.
- :func:`train_flops_per_batch` counts one training step's FLOPs (forward and backward, a
  multiply-add counts 2) on the meta device; Lightning's ``ThroughputMonitor`` divides
  FLOPs/s by the device's peak (its own table) for ``train/device/mfu``.
"""

from __future__ import annotations

import torch
from lightning.fabric.utilities.throughput import measure_flops
from lightning.pytorch.strategies import FSDPStrategy, Strategy

from ..models import VisionTransformer, ViTConfig
from ..models.vit import Block


def build_strategy(name: str) -> str | Strategy:
    if name in ("fsdp", "fsdp_cpu_offload"):
        return FSDPStrategy(
            auto_wrap_policy={Block},
            sharding_strategy="FULL_SHARD",
            state_dict_type="full",
            cpu_offload=name == "fsdp_cpu_offload",
        )
    return name


def compile_model(model: VisionTransformer, backend: str = "inductor") -> VisionTransformer:
    """Compile ``model.forward`` in place; its ``state_dict`` keys do not change."""
    model.compile(backend=backend)
    return model


def train_flops_per_batch(cfg: ViTConfig, batch_size: int) -> int:
    """FLOPs of one training step of a ``batch_size`` batch: forward, loss and backward."""
    with torch.device("meta"):
        model = VisionTransformer(cfg)
        x = torch.empty(batch_size, cfg.in_chans, cfg.img_size, cfg.img_size)
    return measure_flops(model, lambda: model(x), lambda y: y.sum())
