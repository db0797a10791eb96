"""Why a checkpoint does not fit a config, named by the feature the checkpoint has, not by the
missing keys it leaves: one line per feature, either with the ``model.<field>`` (``ViTConfig``,
params' ``model`` section) that fits it or saying this ViT does not support it. Read from the key
names and shapes of a state dict in the timm layout (pure, no model):

    >>> checkpoint_causes(state, cfg)
    ['the checkpoint has 4 register tokens (reg_token); set model.reg_tokens: 4']

What the weights cannot show is not checked: the MLP activation (``act``: timm's model name says
it, ``*_clip_quickgelu_*`` and OpenAI's CLIP use quick-GELU, SigLIP's tanh GELU), the LayerNorm
eps (CLIP 1e-5) and the number of heads.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import torch

from .variants import ViTConfig

# key pattern (searched) -> the feature it is part of; none of these is supported
_UNSUPPORTED = [
    (r"(^|\.)attn_pool\.|(^|/)MAPHead_0/",
     "attention pooling (a MAP head, attn_pool: SigLIP, timm's global_pool='map')"),
    (r"^(dist_token|head_dist\.)", "a distillation token (dist_token, head_dist: DeiT distilled)"),
    (r"\.mlp\.(fc1_g|fc1_x|w12|w3)\.", "SwiGLU MLPs (mlp.fc1_g / fc1_x or w12 / w3)"),
    (r"^patch_embed\.norm\.", "a LayerNorm in the patch embedding (patch_embed.norm)"),
    (r"\.attn\.[qk]_norm\.", "query / key normalisation (attn.q_norm, attn.k_norm)"),
    (r"\.(attn|mlp)\.norm\.", "LayerNorms inside the attention or the MLP (attn.norm, mlp.norm)"),
    (r"relative_position|rel_pos|(^|\.)rope\b|freqs_",
     "relative position biases or rotary embeddings (relative_position_*, rel_pos, rope: BEiT, "
     "EVA)"),
    (r"(^|\.)gamma_[12]$",
     "LayerScale under its original names (gamma_1, gamma_2: the BEiT / DeiT III repositories; "
     "load timm's conversion, where they are ls1.gamma / ls2.gamma)"),
    (r"^(mask_token|register_tokens)$",
     "DINOv2's or BEiT's own layout (mask_token, register_tokens); load timm's conversion, e.g. "
     "timm/vit_base_patch14_dinov2.lvd142m"),
    (r"(^|\.)lambda_", "differential attention (lambda_q1, ...)"),
]
_BLOCK = re.compile(r"blocks\.(\d+)\.")


def checkpoint_causes(state: dict[str, torch.Tensor], cfg: ViTConfig) -> list[str]:
    """One line per feature of ``state`` (timm layout) that ``cfg`` does not fit: unsupported
    ones first, then each with the ``model.<field>`` to set. Empty when no feature explains it."""
    keys = set(state)
    lines = [f"the checkpoint uses {what}, which this ViT does not support"
             for pattern, what in _UNSUPPORTED if any(re.search(pattern, k) for k in keys)]
    lines += [f"the checkpoint has {what}, which this ViT does not support"
              for what in _unsupported_shapes(state)]
    return lines + _fixable(state, cfg)


def _unsupported_shapes(state: dict) -> list[str]:
    keys = set(state)
    out = []
    if "patch_embed.proj.weight" in keys and "pos_embed" not in keys:
        out.append("no absolute position embeddings (no pos_embed)")
    if "blocks.0.attn.proj.weight" in keys and "blocks.0.attn.proj.bias" not in keys:
        out.append("no biases in the attention and MLP projections (timm's proj_bias=False)")
    fc1, fc2 = state.get("blocks.0.mlp.fc1.weight"), state.get("blocks.0.mlp.fc2.weight")
    if fc1 is not None and fc2 is not None and fc1.shape[0] == 2 * fc2.shape[-1]:
        out.append("a packed SwiGLU MLP (mlp.fc1 twice as wide as mlp.fc2's input: DINOv2 giant)")
    if "patch_embed.proj.weight" in keys and not {"norm.weight", "fc_norm.weight"} & keys:
        out.append("no final LayerNorm (neither norm nor fc_norm)")
    return out


def _fixable(state: dict, cfg: ViTConfig) -> list[str]:
    """Features ``cfg`` can be set to, where the checkpoint's differ from ``cfg``'s."""
    keys = set(state)
    out = _sizes(state, cfg)

    cls = "cls_token" in keys
    fc = "fc_norm.weight" in keys
    pool = "avg" if fc or not cls else "token"  # timm's rule: fc_norm comes with avg pooling
    want = {"class_token": cls, "global_pool": pool}
    settings = [f"model.{k}: {_yaml(v)}" for k, v in want.items() if getattr(cfg, k) != v]
    pooled = replace(cfg, **want)
    if pooled.use_fc_norm != fc:
        settings.append(f"model.fc_norm: {_yaml(fc)}")
    if settings:
        what = ("a class token" if cls else "no class token") + (
            " and token pooling (cls_token, norm)" if pool == "token" else
            " and average pooling with the LayerNorm after it (fc_norm)" if fc else
            " and average pooling with the LayerNorm before it (norm, no fc_norm)")
        out.append(f"the checkpoint has {what}; set {_and(settings)}")

    reg = state.get("reg_token")
    n_reg = reg.shape[1] if isinstance(reg, torch.Tensor) and reg.ndim == 3 else 0
    if n_reg != cfg.reg_tokens:
        what = f"{n_reg} register tokens (reg_token)" if n_reg else "no register tokens"
        out.append(f"the checkpoint has {what}; set model.reg_tokens: {n_reg}")

    embed_class = _embeds_prefix(state.get("pos_embed"), int(cls) + n_reg)
    if embed_class is not None and embed_class == cfg.no_embed_class:
        what = ("position embeddings for the class / register tokens too" if embed_class else
                "position embeddings for the patches only (added before the class / register "
                "tokens are prepended)")
        out.append(f"the checkpoint has {what}; set model.no_embed_class: "
                   f"{_yaml(not embed_class)}")

    for present, field, name, fits in (
        ("norm_pre.weight" in keys, "pre_norm", "a LayerNorm before the blocks (norm_pre: CLIP)",
         cfg.pre_norm),
        (any(k.endswith(".ls1.gamma") for k in keys), "layer_scale",
         "LayerScale (blocks.N.ls1.gamma)", cfg.layer_scale is not None),
        (any(k.endswith(".attn.qkv.bias") for k in keys), "qkv_bias",
         "qkv biases (blocks.N.attn.qkv.bias)", cfg.qkv_bias),
    ):
        if present == fits:
            continue
        if field == "layer_scale":
            value = "1e-5 (any value: the checkpoint's gammas replace it)" if present else "null"
        else:
            value = _yaml(present)
        what = name if present else "no " + name.split(" (")[0].removeprefix("a ")
        out.append(f"the checkpoint has {what}; set model.{field}: {value}")
    return out


def _sizes(state: dict, cfg: ViTConfig) -> list[str]:
    """The checkpoint's width, depth, patch size and MLP width, where they differ from ``cfg``."""
    out = []
    w = state.get("patch_embed.proj.weight")
    if isinstance(w, torch.Tensor) and w.ndim == 4:
        dim, patch = w.shape[0], w.shape[-1]
        if dim != cfg.embed_dim:
            out.append(f"the checkpoint is {dim} wide (patch_embed.proj); set model.embed_dim: "
                       f"{dim}, or the variant of that width")
        if patch != cfg.patch_size:
            out.append(f"the checkpoint has {patch}x{patch} px patches; use a /{patch} variant "
                       f"(model.patch_size: {patch} with variant custom)")
        fc1 = state.get("blocks.0.mlp.fc1.weight")
        fc2 = state.get("blocks.0.mlp.fc2.weight")
        if isinstance(fc1, torch.Tensor) and isinstance(fc2, torch.Tensor) \
                and fc1.shape[0] == fc2.shape[-1] and fc1.shape[0] != int(dim * cfg.mlp_ratio):
            out.append(f"the checkpoint's MLPs are {fc1.shape[0]} wide; set model.mlp_ratio: "
                       f"{fc1.shape[0] / dim:g}")
    depth = 1 + max((int(m[1]) for k in state if (m := _BLOCK.match(k))), default=-1)
    if depth and depth != cfg.depth:
        out.append(f"the checkpoint has {depth} blocks; set model.depth: {depth}")
    return out


def _embeds_prefix(pos_embed, prefix: int) -> bool | None:
    """Whether ``pos_embed`` has rows for the ``prefix`` tokens too (timm's default) or for the
    patches only (``no_embed_class``); None when there are no prefix tokens or both fit."""
    if not isinstance(pos_embed, torch.Tensor) or pos_embed.ndim != 3 or not prefix:
        return None
    n = pos_embed.shape[1]
    with_prefix, patches_only = is_square(n - prefix), is_square(n)
    return with_prefix if with_prefix != patches_only else None


def is_square(n: int) -> bool:
    """Whether ``n`` patch positions make a (non-empty) square grid."""
    return n > 0 and math.isqrt(n) ** 2 == n


def _yaml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
