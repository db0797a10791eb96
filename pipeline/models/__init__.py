"""Plain PyTorch models: the from-scratch ViT, its variant table and pretrained-weight mapping."""

from .pretrained import (
    DEFAULT_HUB_ID,
    CheckpointError,
    load_pretrained,
    read_checkpoint,
    resize_pos_embed,
    save_checkpoint,
    timm_to_ours,
)
from .variants import VARIANTS, build_vit, parse_variant, variant_config
from .vit import ViTConfig, VisionTransformer

__all__ = [
    "DEFAULT_HUB_ID",
    "VARIANTS",
    "CheckpointError",
    "ViTConfig",
    "VisionTransformer",
    "build_vit",
    "load_pretrained",
    "parse_variant",
    "read_checkpoint",
    "resize_pos_embed",
    "save_checkpoint",
    "timm_to_ours",
    "variant_config",
]
