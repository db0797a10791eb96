"""Augmentation pipelines: shapes, dtypes, what the crop/flip really do, seeding."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A

from pipeline.data import (
    apply_transform,
    build_eval_transform,
    build_train_transform,
    seed_transform,
)


def _image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _candidates(image, pad):
    """Every (H, W) window of the reflect-padded image, and its mirror."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    windows = [padded[y : y + h, x : x + w] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
    return windows + [win[:, ::-1] for win in windows]


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3), (6, 10, 3)])
def test_train_transform_keeps_shape_dtype_and_content(shape):
    transform = build_train_transform(shape, crop_padding=2, hflip=True, seed=0)
    image = _image(shape)
    options = _candidates(image, 2)
    for _ in range(10):
        out = apply_transform(transform, image)
        assert out.shape == shape and out.dtype == np.uint8
        assert any(np.array_equal(out, option) for option in options)


def test_same_seed_same_sequence_other_seed_differs():
    image = _image((16, 16, 3))

    def run(seed):
        transform = build_train_transform((16, 16, 3), crop_padding=3, hflip=True, seed=seed)
        return np.stack([apply_transform(transform, image) for _ in range(12)])

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


def test_flip_only_flips_about_half_the_time():
    image = _image((8, 8, 1))
    transform = build_train_transform((8, 8, 1), crop_padding=0, hflip=True, seed=0)
    outs = [apply_transform(transform, image) for _ in range(200)]
    flipped = [np.array_equal(o, image[:, ::-1]) for o in outs]
    assert all(f or np.array_equal(o, image) for f, o in zip(flipped, outs, strict=True))
    assert 0.35 < np.mean(flipped) < 0.65


def test_transforms_share_one_random_stream():
    """Compose(seed=s) alone gives each transform an identical stream: two flips would be
    perfectly correlated. seed_transform makes them draw from one stream."""
    image = _image((4, 4, 1))
    compose = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], seed=0)
    seed_transform(compose, 0)
    outs = [apply_transform(compose, image) for _ in range(64)]
    h_only = sum(np.array_equal(o, image[:, ::-1]) for o in outs)
    v_only = sum(np.array_equal(o, image[::-1]) for o in outs)
    assert h_only > 0 and v_only > 0


def test_no_augmentation_is_identity():
    image = _image((8, 8, 3))
    train = build_train_transform((8, 8, 3), crop_padding=0, hflip=False, seed=0)
    evaluation = build_eval_transform((8, 8, 3))
    assert isinstance(evaluation, A.Compose)
    for transform in (train, evaluation, None):
        np.testing.assert_array_equal(apply_transform(transform, image), image)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"crop_padding must be in \[0, 8\)"):
        build_train_transform((8, 8, 1), crop_padding=8, hflip=False, seed=0)
    with pytest.raises(ValueError, match="crop_padding"):
        build_train_transform((8, 8, 1), crop_padding=-1, hflip=False, seed=0)
    with pytest.raises(ValueError, match=r"image_shape must be \(H, W, C\).*\(8, 8, 2\)"):
        build_train_transform((8, 8, 2), crop_padding=0, hflip=False, seed=0)
    with pytest.raises(ValueError, match="image_shape"):
        build_eval_transform((8, 8))


@pytest.mark.parametrize("channels", [1, 3])
def test_randaugment_and_erasing_are_a_function_of_the_seed(channels):
    img = (np.random.default_rng(0).random((16, 16, channels)) * 255).astype(np.uint8)
    t = build_train_transform((16, 16, channels), 2, True, 0, randaugment=(2, 9), erasing=0.5)

    def out(seed):
        seed_transform(t, seed)
        return apply_transform(t, img)

    first = out(1)
    assert first.shape == img.shape and first.dtype == np.uint8
    assert np.array_equal(first, out(1))
    changed = [not np.array_equal(out(s), img) for s in range(20)]
    assert sum(changed) >= 18  # crop, flip, two ops and erasing: almost never the identity
    assert len({out(s).tobytes() for s in range(20)}) == 20


def test_randaugment_magnitude_zero_leaves_geometry_alone():
    """At magnitude 0 the geometric ops are the identity (only the 'free' ops like equalize
    remain), so the magnitude really scales the policy."""
    img = np.zeros((16, 16, 1), np.uint8)
    img[4:8, 4:8] = 255
    t = build_train_transform((16, 16, 1), 0, False, 0, randaugment=(1, 0))
    moved = 0
    for s in range(30):
        seed_transform(t, s)
        out = apply_transform(t, img)
        moved += not np.array_equal(out > 127, img > 127)
    assert moved <= 10  # invert (and posterize at 8 bits: none) can change it; rotations cannot


def test_erasing_probability_is_checked():
    with pytest.raises(ValueError, match="erasing must be a probability"):
        build_train_transform((16, 16, 3), 0, False, 0, erasing=1.5)
