"""Plain PyTorch models: the from-scratch ViT, its variant table and pretrained-weight mapping."""

from .formats import FORMATS, POS_EMBED_RESAMPLING, detect_format, to_ours, to_timm
from .pretrained import (
    DEFAULT_HUB_ID,
    CheckpointError,
    load_pretrained,
    read_checkpoint,
    read_state_dict,
    resize_pos_embed,
    save_checkpoint,
    timm_to_ours,
)
from .variants import VARIANTS, build_vit, parse_variant, variant_config
from .vit import ViTConfig, VisionTransformer

__all__ = [
    "DEFAULT_HUB_ID",
    "FORMATS",
    "POS_EMBED_RESAMPLING",
    "VARIANTS",
    "CheckpointError",
    "ViTConfig",
    "VisionTransformer",
    "build_vit",
    "detect_format",
    "load_pretrained",
    "parse_variant",
    "read_checkpoint",
    "read_state_dict",
    "resize_pos_embed",
    "save_checkpoint",
    "timm_to_ours",
    "to_ours",
    "to_timm",
    "variant_config",
]
