"""The pure ``state_dict -> state_dict`` step of loading weights: a checkpoint already in the timm
layout (ours) fitted to a model config, as timm's ``checkpoint_filter_fn`` does. It strips wrapper
prefixes, drops the classifier head when the task changes (the new head is zero-initialised, as the
ViT paper fine-tunes), resizes the position embeddings when the patch grid differs (the one resize
in the code base), and otherwise fails naming the features of the checkpoint the config lacks
(:mod:`pipeline.models.diagnose`: register tokens, average pooling, a MAP head, ...) above the full
list of missing / unexpected keys and shape clashes. :mod:`pipeline.models.converters` brings other
layouts to timm's first.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from .diagnose import checkpoint_causes, is_square
from .variants import ViTConfig
from .vit import VisionTransformer

_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
_HEAD_KEYS = ("head.weight", "head.bias")

# How each library resamples position embeddings to another grid when it loads its own
# checkpoint, so a checkpoint loaded at a new resolution matches that library's model:
POS_EMBED_RESAMPLING: dict[str, dict] = {
    # timm checkpoint_filter_fn -> resample_abs_pos_embed defaults
    "timm": dict(mode="bicubic", antialias=True),
    # transformers ViTEmbeddings.interpolate_pos_encoding
    "hf": dict(mode="bicubic", antialias=False),
    # torchvision.models.vision_transformer.interpolate_embeddings
    "torchvision": dict(mode="bicubic", antialias=False, align_corners=True),
    # timm _load_weights (its .npz loader)
    "npz_vit": dict(mode="bilinear", antialias=False),
    "npz_big_vision": dict(mode="bilinear", antialias=False),
}

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

    The ``num_prefix_tokens`` positions ([CLS], registers; 0 where the position embeddings cover
    the patches only) are kept; the patch positions are interpolated as an image. The defaults are
    timm's ``resample_abs_pos_embed`` (bicubic, antialias), so both give the same numbers; other
    libraries resample otherwise (``formats.POS_EMBED_RESAMPLING``)."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if not is_square(grid.shape[1]):
        raise CheckpointError(f"pos_embed has {grid.shape[1]} patch positions after "
                              f"{num_prefix_tokens} prefix token(s): not a square grid")
    old = math.isqrt(grid.shape[1])
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


def fit_to_model(
    state: dict[str, torch.Tensor], cfg: ViTConfig, *, keep_head: bool = False,
    fmt: str = "timm",
) -> dict[str, torch.Tensor]:
    """Fit a state dict in the timm layout to our model for ``cfg``: the one place position
    embeddings are resized (as library ``fmt`` resamples them, see ``POS_EMBED_RESAMPLING``;
    ``cfg.pos_embed_prefix`` rows kept, as timm's ``checkpoint_filter_fn``) and the head is
    replaced. A checkpoint that does not fit gets a CheckpointError whose first line names the
    cause (:func:`~pipeline.models.diagnose.checkpoint_causes`), then the keys and shapes.

    By default the head is replaced by a zero-initialised one (a new task, even with the same class
    count); ``keep_head=True`` keeps a trained head whose shape fits (same task, e.g. inference)."""
    state = strip_wrapper_prefixes(state)
    want = expected_shapes(cfg)
    out = {k: v for k, v in state.items() if k not in _HEAD_KEYS}

    pe, prefix = out.get("pos_embed"), cfg.pos_embed_prefix
    if isinstance(pe, torch.Tensor) and pe.ndim == 3 and tuple(pe.shape) != want["pos_embed"] \
            and pe.shape[-1] == want["pos_embed"][-1] and is_square(pe.shape[1] - prefix):
        # (only where cfg's prefix leaves a square grid; otherwise the checkpoint has other
        # prefix tokens, which the error below names)
        out["pos_embed"] = resize_pos_embed(pe, cfg.grid_size, prefix, **POS_EMBED_RESAMPLING[fmt])

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
        # the cause first (what the checkpoint has that cfg lacks), then the keys and shapes
        first, *more = checkpoint_causes(state, cfg) or [""]
        lines = [
            "checkpoint does not fit ViT config "
            f"(embed_dim={cfg.embed_dim}, depth={cfg.depth}, patch={cfg.patch_size}, "
            f"img={cfg.img_size}): {first}".rstrip(),
            *more,
            *([f"missing keys ({len(missing)}): {missing[:20]}"] if missing else []),
            *([f"unexpected keys ({len(unexpected)}): {unexpected[:20]}"] if unexpected else []),
            *([f"shape clashes ({len(clashes)}): {clashes[:20]}"] if clashes else []),
        ]
        raise CheckpointError("\n  ".join(lines))
    return {k: out[k].float() if out[k].is_floating_point() else out[k] for k in want}


def timm_to_ours(
    state: dict[str, torch.Tensor], cfg: ViTConfig, *, keep_head: bool = False
) -> dict[str, torch.Tensor]:
    """Map a timm ``VisionTransformer`` state dict onto ours (:func:`fit_to_model` with timm's
    resampling)."""
    return fit_to_model(state, cfg, keep_head=keep_head, fmt="timm")
