"""The one variant table, and the one place that builds a model by name.

Sizes from the ViT paper (Dosovitskiy et al. 2021, Table 1) plus the DeiT sizes Ti and S
(Touvron et al. 2021), as big_vision's ``decode_variant`` names them: ``"B/16"`` is ViT-Base with
16x16 patches. Any patch size is allowed (``"S/4"`` for 32 px CIFAR images).

    >>> build_vit("B/16", img_size=224, num_classes=10).cfg.embed_dim
    768
"""

from __future__ import annotations

import re
from typing import Any

from .vit import ViTConfig, VisionTransformer

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


def build_vit(variant: str = "custom", **overrides: Any) -> VisionTransformer:
    return VisionTransformer(variant_config(variant, **overrides))
