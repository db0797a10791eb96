"""The model config, the one variant table, and the names that map onto it (no torch here: the
params schema checks model configs without importing the model).

Sizes from the ViT paper (Dosovitskiy et al. 2021, Table 1) plus the DeiT sizes Ti and S
(Touvron et al. 2021), as big_vision's ``decode_variant`` names them: ``"B/16"`` is ViT-Base with
16x16 patches. Any patch size is allowed (``"S/4"`` for 32 px CIFAR images).

    >>> build_vit("B/16", img_size=224, num_classes=10).cfg.embed_dim
    768
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

GLOBAL_POOLS = ("token", "avg")
ACTIVATIONS = ("gelu", "quick_gelu", "gelu_tanh")  # exact GELU; x * sigmoid(1.702 x); tanh approx.


@dataclass(frozen=True)
class ViTConfig:
    """Everything needed to rebuild a model; saved with every checkpoint."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.0  # on embeddings, attention output projection and MLP
    attn_dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth rate of the last block (linear from 0)
    layer_norm_eps: float = 1e-6  # timm / torchvision / big_vision; transformers' ViT uses 1e-12
    # What the strongest public checkpoints add (timm's names and meanings; the defaults are the
    # paper's ViT, so a config without these keys is the model it always was):
    class_token: bool = True  # a learned [CLS] token before the patches
    global_pool: str = "token"  # GLOBAL_POOLS: the [CLS] token, or the mean of the patch tokens
    fc_norm: bool | None = None  # the final LayerNorm after pooling (None: with "avg" pooling)
    reg_tokens: int = 0  # register tokens after the [CLS] token (Darcet et al. 2024)
    no_embed_class: bool = False  # position embeddings for the patches only, prefix tokens none
    layer_scale: float | None = None  # LayerScale init of each residual branch (CaiT); None: off
    pre_norm: bool = False  # a LayerNorm before the blocks, patch projection without bias (CLIP)
    act: str = "gelu"  # the MLP's activation: ACTIVATIONS

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size={self.img_size} is not divisible by patch_size={self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}"
            )
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        for name in ("dropout", "attn_dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.layer_norm_eps < 1.0:
            raise ValueError(f"layer_norm_eps must be in (0, 1), got {self.layer_norm_eps}")
        for name, allowed in (("global_pool", GLOBAL_POOLS), ("act", ACTIVATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True; a model without a "
                             "class token pools with global_pool='avg'")
        if self.reg_tokens < 0:
            raise ValueError(f"reg_tokens must be >= 0, got {self.reg_tokens}")
        if self.layer_scale is not None and not self.layer_scale > 0.0:
            raise ValueError(f"layer_scale must be > 0 (or None: off), got {self.layer_scale}")

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the [CLS] token, then the register tokens."""
        return int(self.class_token) + self.reg_tokens

    @property
    def pos_embed_prefix(self) -> int:
        """Prefix tokens that have a position embedding: none with ``no_embed_class``."""
        return 0 if self.no_embed_class else self.num_prefix_tokens

    @property
    def use_fc_norm(self) -> bool:
        """Whether the final LayerNorm comes after pooling (``fc_norm``) instead of before."""
        return self.global_pool == "avg" if self.fc_norm is None else self.fc_norm

    def to_dict(self) -> dict:
        return asdict(self)

# name: (embed_dim, depth, num_heads, mlp_dim)
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "Ti": (192, 12, 3, 768),  # DeiT-Tiny
    "S": (384, 12, 6, 1536),  # DeiT-Small
    "B": (768, 12, 12, 3072),  # paper, Table 1
    "L": (1024, 24, 16, 4096),  # paper, Table 1
    "H": (1280, 32, 16, 5120),  # paper, Table 1
}

_VARIANT_RE = re.compile(r"^(?P<size>[A-Za-z]+)/(?P<patch>\d+)$")


def parse_variant(variant: str) -> tuple[str, int]:
    """``"B/16"`` -> ``("B", 16)``; raises ValueError naming the bad value."""
    m = _VARIANT_RE.match(variant.strip())
    if not m or m["size"] not in VARIANTS:
        raise ValueError(
            f"unknown ViT variant {variant!r}: expected SIZE/PATCH with SIZE in "
            f"{sorted(VARIANTS)} and PATCH an integer, e.g. 'B/16' or 'S/4'"
        )
    return m["size"], int(m["patch"])


def variant_config(variant: str, **overrides: Any) -> ViTConfig:
    """Config for a named variant; keyword overrides (img_size, num_classes, depth, ...) win.

    ``variant="custom"`` builds purely from the overrides (embed_dim, depth, num_heads, ...).
    """
    if variant == "custom":
        return ViTConfig(**overrides)
    size, patch = parse_variant(variant)
    dim, depth, heads, mlp_dim = VARIANTS[size]
    base = dict(
        patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp_dim / dim
    )
    unknown = set(overrides) - set(ViTConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown ViT config keys {sorted(unknown)} for variant {variant!r}")
    return ViTConfig(**{**base, **overrides})
