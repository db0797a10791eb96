"""Pretrained weights: read a ViT checkpoint (timm, transformers, torchvision or Google's
``.npz``; ``pipeline.models.formats`` tells them apart) and map it onto our model.

The mapping is a pure ``state_dict -> state_dict`` function (as timm's ``checkpoint_filter_fn``):
our parameter names follow timm's, so it strips wrapper prefixes, drops the classifier head when the
class count differs (the new head is zero-initialised, as the ViT paper fine-tunes), resizes the
position embeddings (bicubic, as timm) when the patch grid differs, and fails with the full list of
missing / unexpected keys and shape clashes otherwise.

    >>> state = read_checkpoint("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k")  # timm layout
    >>> model.load_state_dict(timm_to_ours(state, model.cfg))
    >>> load_pretrained(model, "ViT-B_16.npz")  # any format, resampled as its library does
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .vit import ViTConfig, VisionTransformer

DEFAULT_HUB_ID = "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
_HEAD_KEYS = ("head.weight", "head.bias")


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


def expected_shapes(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of our model's state dict for ``cfg``, built on the meta device (no memory)."""
    return dict(_expected_shapes(cfg))


@functools.lru_cache(maxsize=32)  # ViTConfig is frozen; building H/14 even on meta takes ~0.1 s
def _expected_shapes(cfg: ViTConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):
        model = VisionTransformer(cfg)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def resize_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: int,
    num_prefix_tokens: int = 1,
    *,
    mode: str = "bicubic",
    antialias: bool = True,
    align_corners: bool | None = None,
) -> torch.Tensor:
    """Resample (1, prefix + g*g, D) position embeddings to a new square grid, bicubic.

    The [CLS] position is kept; the patch positions are interpolated as an image. The defaults are
    timm's ``resample_abs_pos_embed`` (bicubic, antialias), so both give the same numbers; other
    libraries resample otherwise (``formats.POS_EMBED_RESAMPLING``)."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = math.isqrt(grid.shape[1])
    if old * old != grid.shape[1]:
        raise CheckpointError(f"pos_embed has {grid.shape[1]} patch positions: not a square grid")
    if old == new_grid:
        return pos_embed
    D = grid.shape[-1]
    grid = grid.float().reshape(1, old, old, D).permute(0, 3, 1, 2)  # (1, D, g, g)
    grid = F.interpolate(
        grid, size=(new_grid, new_grid), mode=mode, antialias=antialias, align_corners=align_corners
    )
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, D).to(pos_embed.dtype)
    return torch.cat((prefix, grid), dim=1)


def strip_wrapper_prefixes(state: dict) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}`` and strip ``module.`` / ``_orig_mod.`` /
    ``model.`` key prefixes (Lightning, DDP, ``torch.compile``)."""
    for key in ("state_dict", "model"):  # Lightning / training-script wrappers
        if key in state and isinstance(state[key], dict):
            state = state[key]
    out = {}
    for k, v in state.items():
        while k.startswith(_WRAPPER_PREFIXES):  # e.g. Lightning's "model." + compile's "_orig_mod."
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def timm_to_ours(
    state: dict[str, torch.Tensor], cfg: ViTConfig, *, keep_head: bool = False
) -> dict[str, torch.Tensor]:
    """Map a timm ``VisionTransformer`` state dict (class token, no register tokens) onto ours.

    By default the head is replaced by a zero-initialised one (a new task, even with the same class
    count); ``keep_head=True`` keeps a trained head whose shape fits (same task, e.g. inference)."""
    state = strip_wrapper_prefixes(state)
    want = expected_shapes(cfg)
    out = {k: v for k, v in state.items() if k not in _HEAD_KEYS}

    if "pos_embed" in out and "pos_embed" in want and out["pos_embed"].shape != want["pos_embed"]:
        if out["pos_embed"].shape[-1] == want["pos_embed"][-1]:
            out["pos_embed"] = resize_pos_embed(out["pos_embed"], cfg.grid_size)

    head = {k: state[k] for k in _HEAD_KEYS if k in state}
    if cfg.num_classes > 0:
        if keep_head and all(k in head and tuple(head[k].shape) == want[k] for k in _HEAD_KEYS):
            out.update(head)
        else:  # new task: a zero-initialised head, as the ViT paper fine-tunes
            out.update({k: torch.zeros(want[k]) for k in _HEAD_KEYS})

    missing = sorted(set(want) - set(out))
    unexpected = sorted(set(out) - set(want))
    clashes = [
        f"{k}: checkpoint {tuple(out[k].shape)} vs model {want[k]}"
        for k in sorted(set(want) & set(out))
        if tuple(out[k].shape) != want[k]
    ]
    if missing or unexpected or clashes:
        raise CheckpointError(
            "checkpoint does not fit ViT config "
            f"(embed_dim={cfg.embed_dim}, depth={cfg.depth}, patch={cfg.patch_size}, "
            f"img={cfg.img_size}):"
            + (f"\n  missing keys ({len(missing)}): {missing[:20]}" if missing else "")
            + (f"\n  unexpected keys ({len(unexpected)}): {unexpected[:20]}" if unexpected else "")
            + (f"\n  shape clashes ({len(clashes)}): {clashes[:20]}" if clashes else "")
        )
    return {k: out[k].float() if out[k].is_floating_point() else out[k] for k in want}


def read_checkpoint(source: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint of any supported format and return it in the timm layout (= ours).

    ``source`` is a local file (.safetensors, .pth/.pt/.bin/.ckpt, .npz) or a hub id; the layout
    (timm, transformers, torchvision, Google .npz) is detected from the key names. Position
    embeddings stay at the checkpoint's own resolution."""
    from .formats import to_timm  # formats builds on this module

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
    from .formats import to_ours  # formats builds on this module

    model.load_state_dict(to_ours(read_state_dict(source), model.cfg, keep_head=keep_head))
    return model


def save_checkpoint(model: VisionTransformer, path: str | Path) -> Path:
    """Write the weights as timm-format safetensors (our names are timm's), atomically,
    with the model config as metadata."""
    import json

    from safetensors.torch import save_file

    from ..atomic import atomic_write

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"vit_config": json.dumps(model.cfg.to_dict())}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
