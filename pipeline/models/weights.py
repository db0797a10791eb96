"""Pretrained weights from outside: read a ViT checkpoint (timm, transformers, torchvision or Google's
``.npz``, a local file or a Hugging Face hub id) and load it into our model. The layouts are told
apart and mapped in :mod:`pipeline.models.converters`; fitting to a config (head, position embeddings)
is :mod:`pipeline.models.mapping`.

    >>> state = read_checkpoint("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k")  # timm layout
    >>> model.load_state_dict(timm_to_ours(state, model.cfg))
    >>> load_pretrained(model, "ViT-B_16.npz")  # any format, resampled as its library does
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from .converters import to_ours, to_timm
from .vit import VisionTransformer

DEFAULT_HUB_ID = "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"


def read_checkpoint(source: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint of any supported format and return it in the timm layout (= ours).

    ``source`` is a local file (.safetensors, .pth/.pt/.bin/.ckpt, .npz) or a hub id; the layout
    (timm, transformers, torchvision, Google .npz) is detected from the key names. Position
    embeddings stay at the checkpoint's own resolution."""
    return to_timm(read_state_dict(source))


def read_state_dict(source: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict as stored, in its own layout, from a local file or a hub id.

    A hub id (``owner/name`` that is not an existing path, optionally ``hf-hub:owner/name``) is
    fetched with ``huggingface_hub`` (cached under ``HF_HOME``); a ``.npz`` is read with
    ``numpy.load`` (no pickles), its arrays as tensors under their Flax names."""
    path = Path(str(source))
    if path.exists():
        return _read_file(path)
    repo_id = str(source).removeprefix("hf-hub:")
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise CheckpointError(f"pretrained checkpoint {str(source)!r}: no such file")
    return _read_file(_hub_download(repo_id))


def _hub_download(repo_id: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, "model.safetensors"))
    except LocalEntryNotFoundError as e:  # offline, and not in the local cache
        raise CheckpointError(_offline_message(repo_id, e)) from e
    except (RepositoryNotFoundError, EntryNotFoundError) as e:
        raise CheckpointError(
            f"hub id {repo_id!r} has no model.safetensors (is it a timm or transformers ViT "
            f"repo?): {e}"
        ) from e
    except Exception as e:  # no network, proxy, server error
        raise CheckpointError(_offline_message(repo_id, e)) from e


def _offline_message(repo_id: str, e: Exception) -> str:
    return (
        f"could not fetch pretrained weights {repo_id!r} from the Hugging Face hub "
        f"({type(e).__name__}: {e}). No network? Point pretrained.path at a local "
        "checkpoint, or run the offline quick run: make quick"
    )


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if path.suffix == ".npz":
            return _read_npz(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    import numpy as np

    with np.load(path, allow_pickle=False) as npz:
        state = {}
        for key in npz.files:
            array = npz[key]
            if array.dtype.kind not in "fiub":  # e.g. bfloat16 stored as raw 2-byte voids
                raise ValueError(f"array {key!r} has dtype {array.dtype}, not a number type")
            state[key] = torch.from_numpy(np.ascontiguousarray(array))
    return state


def load_pretrained(
    model: VisionTransformer, source: str | Path, *, keep_head: bool = False
) -> VisionTransformer:
    """Load ``source`` (path or hub id, any supported format) into ``model`` in place; returns
    the model. Position embeddings are resampled as the checkpoint's own library does."""
    model.load_state_dict(to_ours(read_state_dict(source), model.cfg, keep_head=keep_head))
    return model
