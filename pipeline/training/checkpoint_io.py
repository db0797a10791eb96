"""Checkpoints that are whole and finite, or not written at all.

Lightning's ``TorchCheckpointIO`` already serialises in memory and writes through an fsspec
transaction (a temporary file moved into place), so a crash while saving leaves the previous
``last.ckpt`` as it was. This adds the other half: a checkpoint whose weights hold a NaN or inf is
refused, with the name of the first bad tensor, so no checkpoint ever records a diverged model.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def first_non_finite(state: dict[str, Any]) -> str | None:
    """Name of the first floating-point tensor in ``state`` with a NaN or inf, else None."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not torch.isfinite(value).all():
                return name
    return None


class FiniteCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        bad = first_non_finite(checkpoint.get("state_dict", {}))
        if bad is not None:
            raise FloatingPointError(
                f"refusing to write checkpoint {path}: weight {bad!r} is not finite "
                f"(epoch {checkpoint.get('epoch')}, step {checkpoint.get('global_step')}); "
                "the previous checkpoint is kept"
            )
        super().save_checkpoint(checkpoint, path, storage_options)
