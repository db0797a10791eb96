"""Where a model runs and at which precision: one rule for training and for inference.

Training hands Lightning :func:`resolve_precision`'s precision name; evaluation, ``predict`` and
serving autocast to :func:`autocast_dtype`, which is the same rule read as a dtype, so a trained
model gives the same logits wherever it runs:

- on a CPU, a mixed or bf16 precision runs as ``32-true`` (fp32: mixed precision is slower there,
  and Lightning would swap ``16-mixed`` for bf16), with a notice;
- on a GPU without bf16, a bf16 precision runs as ``16-mixed`` (fp16), with a notice;
- otherwise as asked: ``bf16-mixed`` / ``bf16-true`` autocast to bf16, ``16-mixed`` to fp16,
  ``32-true`` not at all.

``precision`` is a Lightning precision name as in params (``base.trainer.precision``).
"""

from __future__ import annotations

import contextlib

import torch

MIXED = ("bf16-mixed", "16-mixed", "bf16-true")  # the precisions that need a GPU
_AUTOCAST = {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16,
             "16-mixed": torch.float16}


def resolve_accelerator(accelerator: str) -> str:
    """Lightning's accelerator name for a ``base.trainer.accelerator`` value (``auto``: ``gpu``
    where CUDA is, else ``cpu``; ``cuda`` is ``gpu``)."""
    if accelerator != "auto":
        return "gpu" if accelerator == "cuda" else accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def inference_device(accelerator: str = "auto") -> torch.device:
    """Where inference runs for a ``base.trainer.accelerator`` value: CUDA when asked for (or
    ``auto`` and present), else the CPU."""
    return torch.device("cuda" if resolve_accelerator(accelerator) == "gpu" else "cpu")


def resolve_precision(precision: str, accelerator: str) -> tuple[str, str | None]:
    """The precision to run with on ``accelerator`` (a Lightning name: ``cpu``, ``gpu``, ...),
    and a notice when the requested one had to change."""
    if accelerator == "cpu" and precision in MIXED:
        return "32-true", f"precision {precision} needs a GPU; running 32-true on the CPU"
    if accelerator == "gpu" and precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
        return "16-mixed", f"this GPU has no bf16; running 16-mixed instead of {precision}"
    return precision, None


def autocast_dtype(device: torch.device | str, precision: str | None = None) -> torch.dtype | None:
    """The dtype inference autocasts to on ``device`` (None: plain fp32), by
    :func:`resolve_precision`; ``precision`` None: the best the device has (bf16 on a GPU that
    has it, else fp16; fp32 on a CPU)."""
    device = torch.device(device)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    resolved, _ = resolve_precision(precision or "bf16-mixed", accelerator)
    return _AUTOCAST.get(resolved)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
