"""Plain PyTorch models: the from-scratch ViT, its variant table, the classifier every caller runs,
the trained-model file and the mapping of pretrained weights. Knows nothing of Lightning, MLflow
or DVC.

    variants.py    ViTConfig, the variant table ("B/16") - no torch, the params schema uses it
    vit.py         VisionTransformer, build_vit
    preprocess.py  DevicePreprocess: uint8 images -> normalised input at the model's size
    classifier.py  ImageClassifier (preprocess + ViT), autocast_dtype, batched_logits
    artifact.py    the trained-model file: save_checkpoint, load_classifier
    mapping.py     a timm-layout state dict fitted to a config (head, position embeddings)
    diagnose.py    what a checkpoint that does not fit has (registers, a MAP head, ...), named
    formats.py     transformers / torchvision / Google .npz layouts -> timm's
    pretrained.py  read a checkpoint file or hub id; load_pretrained

Names are imported on first use (PEP 562), so ``from pipeline.models.variants import ...`` in
the params schema does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import CheckpointError
from ..lazy import lazy_exports

_EXPORTS = {
    "ViTConfig": "variants",
    "VARIANTS": "variants",
    "parse_variant": "variants",
    "variant_config": "variants",
    "VisionTransformer": "vit",
    "build_vit": "vit",
    "DevicePreprocess": "preprocess",
    "ImageClassifier": "classifier",
    "autocast_dtype": "classifier",
    "batched_logits": "classifier",
    "forward_gflops": "classifier",
    "inference_device": "classifier",
    "MODEL_FILE": "artifact",
    "TrainedModel": "artifact",
    "load_classifier": "artifact",
    "save_checkpoint": "artifact",
    "POS_EMBED_RESAMPLING": "mapping",
    "fit_to_model": "mapping",
    "resize_pos_embed": "mapping",
    "timm_to_ours": "mapping",
    "FORMATS": "formats",
    "detect_format": "formats",
    "to_ours": "formats",
    "to_timm": "formats",
    "DEFAULT_HUB_ID": "pretrained",
    "load_pretrained": "pretrained",
    "read_checkpoint": "pretrained",
    "read_state_dict": "pretrained",
}
__all__ = [
    "CheckpointError", "DEFAULT_HUB_ID", "DevicePreprocess", "FORMATS", "ImageClassifier",
    "MODEL_FILE", "POS_EMBED_RESAMPLING", "TrainedModel", "VARIANTS", "ViTConfig",
    "VisionTransformer", "autocast_dtype", "batched_logits", "build_vit", "detect_format",
    "fit_to_model", "forward_gflops", "inference_device", "load_classifier", "load_pretrained",
    "parse_variant", "read_checkpoint", "read_state_dict", "resize_pos_embed", "save_checkpoint",
    "timm_to_ours", "to_ours", "to_timm", "variant_config",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from .artifact import MODEL_FILE, TrainedModel, load_classifier, save_checkpoint
    from .classifier import (
        ImageClassifier,
        autocast_dtype,
        batched_logits,
        forward_gflops,
        inference_device,
    )
    from .formats import FORMATS, detect_format, to_ours, to_timm
    from .mapping import POS_EMBED_RESAMPLING, fit_to_model, resize_pos_embed, timm_to_ours
    from .pretrained import DEFAULT_HUB_ID, load_pretrained, read_checkpoint, read_state_dict
    from .preprocess import DevicePreprocess
    from .variants import VARIANTS, ViTConfig, parse_variant, variant_config
    from .vit import VisionTransformer, build_vit
