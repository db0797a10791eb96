"""Albumentations pipelines for small uint8 HWC images (CPU side, inside the DataLoader workers).

Train: pad + random crop, horizontal flip, then optionally RandAugment (:func:`rand_augment`) and
random erasing. Float conversion, resizing, normalisation and Mixup/CutMix run on the device in the
model step (:mod:`pipeline.training.mixing`). Each builder returns an ``A.Compose`` whose
transforms all draw from ONE seeded random stream (:func:`seed_transform`): ``Compose(seed=s)``
alone gives every child transform its own copy of the same stream, which makes e.g. two flips
perfectly correlated.
"""

from __future__ import annotations

import os
import random

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np


def _check_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(image_shape) != 3 or image_shape[2] not in (1, 3) or min(image_shape[:2]) < 1:
        raise ValueError(
            f"image_shape must be (H, W, C) with C in {{1, 3}}, got {tuple(image_shape)}"
        )
    h, w, c = (int(v) for v in image_shape)
    return h, w, c


def seed_transform(transform: A.BaseCompose, seed: int) -> None:
    """Make every transform in ``transform`` draw from one shared stream seeded with ``seed``."""
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def rand_augment(num_ops: int, magnitude: float, channels: int) -> A.SomeOf:
    """RandAugment (Cubuk et al. 2020) from albumentations ops: ``num_ops`` ops drawn with
    replacement from timm's RandAugment set, each at a strength drawn uniformly up to
    ``magnitude`` on timm's 0-10 scale (at 10: rotate 30 deg, shear 0.3, translate 45%, posterize
    to 4 bits, solarize from 0, brightness/contrast/saturation/sharpness factor 0.1-1.9).
    Grayscale images (``channels == 1``) skip the saturation op. Ops that move pixels fill with
    gray (128), as timm does."""
    m = magnitude / 10.0
    gray = 128
    enhance = 0.9 * m
    shear = float(np.degrees(np.arctan(0.3 * m)))
    ops: list[A.BasicTransform] = [
        A.AutoContrast(p=1.0),
        A.Equalize(p=1.0),
        A.InvertImg(p=1.0),
        A.Affine(rotate=(-30 * m, 30 * m), fill=gray, p=1.0),
        A.Posterize(num_bits=(8 - round(4 * m), 8), p=1.0),
        A.Solarize(threshold_range=(1.0 - m, 1.0), p=1.0),
        A.RandomBrightnessContrast(brightness_limit=enhance, contrast_limit=0.0, p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=enhance, p=1.0),
        A.Sharpen(alpha=(0.0, min(1.0, enhance)), lightness=(1.0, 1.0), p=1.0),
        A.Affine(shear={"x": (-shear, shear), "y": (0, 0)}, fill=gray, p=1.0),
        A.Affine(shear={"x": (0, 0), "y": (-shear, shear)}, fill=gray, p=1.0),
        A.Affine(translate_percent={"x": (-0.45 * m, 0.45 * m), "y": (0, 0)}, fill=gray, p=1.0),
        A.Affine(translate_percent={"x": (0, 0), "y": (-0.45 * m, 0.45 * m)}, fill=gray, p=1.0),
    ]
    if channels == 3:
        ops.append(A.ColorJitter(brightness=0, contrast=0, saturation=(1 - enhance, 1 + enhance),
                                 hue=0, p=1.0))
    return A.SomeOf(ops, n=num_ops, replace=True, p=1.0)


def build_train_transform(
    image_shape: tuple[int, int, int],
    crop_padding: int,
    hflip: bool,
    seed: int,
    *,
    randaugment: tuple[int, float] | None = None,
    erasing: float = 0.0,
) -> A.Compose:
    """Reflect-pad by ``crop_padding``, random-crop back to (H, W), maybe flip horizontally, then
    ``randaugment=(num_ops, magnitude)`` and random erasing with probability ``erasing`` (Zhong et
    al. 2020: 2-33% of the area, aspect 0.3-3.3, per-pixel random fill, as timm's ``pixel`` mode)."""
    h, w, _ = _check_shape(image_shape)
    if crop_padding < 0 or (crop_padding and crop_padding >= min(h, w)):
        raise ValueError(
            f"crop_padding must be in [0, {min(h, w)}) for {h}x{w} images (reflect padding), "
            f"got {crop_padding}"
        )
    steps: list[A.BasicTransform] = []
    if crop_padding > 0:
        steps += [
            A.PadIfNeeded(
                min_height=h + 2 * crop_padding,
                min_width=w + 2 * crop_padding,
                border_mode=cv2.BORDER_REFLECT_101,
            ),
            A.RandomCrop(height=h, width=w),
        ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if randaugment is not None:
        steps.append(rand_augment(*randaugment, channels=image_shape[2]))
    if not 0.0 <= erasing <= 1.0:
        raise ValueError(f"erasing must be a probability in [0, 1], got {erasing}")
    if erasing > 0:
        steps.append(A.Erasing(scale=(0.02, 1 / 3), ratio=(0.3, 3.3), fill="random", p=erasing))
    compose = A.Compose(steps, seed=seed)
    seed_transform(compose, seed)
    return compose


def build_eval_transform(image_shape: tuple[int, int, int]) -> A.Compose:
    """The evaluation pipeline: identity (kept as a Compose so it can grow, e.g. a center crop)."""
    _check_shape(image_shape)
    return A.Compose([])


def apply_transform(transform: A.BaseCompose | None, image: np.ndarray) -> np.ndarray:
    """Run ``transform`` on one uint8 (H, W, C) image, keeping the (H, W, C) layout even for C=1."""
    if transform is None or len(transform.transforms) == 0:
        return image
    out = transform(image=image)["image"]
    if out.ndim == 2:  # some OpenCV paths drop a single channel axis
        out = out[..., None]
    return out
