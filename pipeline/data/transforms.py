"""Albumentations pipelines for small uint8 HWC images (CPU side, inside the DataLoader workers).

Only geometry lives here (pad + random crop, horizontal flip); float conversion, resizing and
normalisation run on the device in the model step. Each builder returns an ``A.Compose`` whose
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


def build_train_transform(
    image_shape: tuple[int, int, int], crop_padding: int, hflip: bool, seed: int
) -> A.Compose:
    """Reflect-pad by ``crop_padding``, random-crop back to (H, W), then maybe flip horizontally."""
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
