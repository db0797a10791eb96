"""Plain PyTorch models: the from-scratch ViT, its variant table, the classifier every caller runs,
the trained-model file and the mapping of pretrained weights. Knows nothing of Lightning, MLflow
or DVC.

    variants.py    ViTConfig, the variant table ("B/16") - no torch, the params schema uses it
    vit.py         VisionTransformer, build_vit
    preprocess.py  DevicePreprocess: uint8 images -> normalised input at the model's size
    classifier.py  ImageClassifier (preprocess + ViT), batched_logits, forward_gflops
    device.py      where a model runs, at which precision: one rule for training and inference
    model_file.py  the trained-model file: save_model_file, load_model_file
    mapping.py     a timm-layout state dict fitted to a config (head, position embeddings)
    diagnose.py    what a checkpoint that does not fit has (registers, a MAP head, ...), named
    converters.py  transformers / torchvision / Google .npz layouts -> timm's
    weights.py     read a checkpoint file or hub id; load_pretrained

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
    "autocast": "device",
    "autocast_dtype": "device",
    "inference_device": "device",
    "resolve_accelerator": "device",
    "resolve_precision": "device",
    "batched_logits": "classifier",
    "forward_gflops": "classifier",
    "TrainedModel": "model_file",
    "load_model_file": "model_file",
    "save_model_file": "model_file",
    "POS_EMBED_RESAMPLING": "mapping",
    "fit_to_model": "mapping",
    "resize_pos_embed": "mapping",
    "timm_to_ours": "mapping",
    "FORMATS": "converters",
    "detect_format": "converters",
    "to_ours": "converters",
    "to_timm": "converters",
    "DEFAULT_HUB_ID": "weights",
    "load_pretrained": "weights",
    "read_checkpoint": "weights",
    "read_state_dict": "weights",
}
__all__ = [
    "CheckpointError", "DEFAULT_HUB_ID", "DevicePreprocess", "FORMATS", "ImageClassifier",
    "POS_EMBED_RESAMPLING", "TrainedModel", "VARIANTS", "ViTConfig", "VisionTransformer",
    "autocast", "autocast_dtype", "batched_logits", "build_vit", "detect_format", "fit_to_model",
    "forward_gflops", "inference_device", "load_model_file", "load_pretrained", "parse_variant",
    "read_checkpoint", "read_state_dict", "resize_pos_embed", "resolve_accelerator",
    "resolve_precision", "save_model_file", "timm_to_ours", "to_ours", "to_timm", "variant_config",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from .classifier import ImageClassifier, batched_logits, forward_gflops
    from .converters import FORMATS, detect_format, to_ours, to_timm
    from .device import (
        autocast,
        autocast_dtype,
        inference_device,
        resolve_accelerator,
        resolve_precision,
    )
    from .mapping import POS_EMBED_RESAMPLING, fit_to_model, resize_pos_embed, timm_to_ours
    from .model_file import TrainedModel, load_model_file, save_model_file
    from .preprocess import DevicePreprocess
    from .variants import VARIANTS, ViTConfig, parse_variant, variant_config
    from .vit import VisionTransformer, build_vit
    from .weights import DEFAULT_HUB_ID, load_pretrained, read_checkpoint, read_state_dict
