"""Checkpoints that are whole and finite, or not written at all.

Lightning's ``TorchCheckpointIO`` already serialises in memory and writes through an fsspec
transaction (a temporary file moved into place), so a crash while saving leaves the previous
``last.ckpt`` as it was. This adds the other half: a checkpoint whose weights hold a NaN or inf is
refused, with the name of the first bad tensor, so no checkpoint ever records a diverged model.
:func:`read_weights` reads the ViT's weights back out of one (to export the trained-model file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import CheckpointError


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


def read_weights(ckpt_path: str | Path, prefix: str = "model.vit.") -> dict[str, torch.Tensor]:
    """The ViT's weights in a checkpoint written by our training (the LightningModule holds the
    :class:`~pipeline.models.ImageClassifier` as ``model``); CheckpointError naming the file when
    it cannot be read."""
    path = Path(ckpt_path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix(prefix): v for k, v in ckpt["state_dict"].items()
                 if k.startswith(prefix)}
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on a bad file
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt: "
                              f"{type(e).__name__}: {e})") from None
    if not state:
        raise CheckpointError(f"{path} holds no weights under {prefix!r}: not a checkpoint of "
                              "this pipeline's training")
    return state
