"""The one inference path: ImageClassifier (preprocess + ViT), the autocast rule, batched logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.models import (
    DevicePreprocess,
    ImageClassifier,
    autocast_dtype,
    batched_logits,
    build_vit,
    inference_device,
)


def _classifier(seed: int = 0, in_chans: int = 3) -> ImageClassifier:
    torch.manual_seed(seed)
    vit = build_vit("custom", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                    num_classes=5, in_chans=in_chans)
    with torch.no_grad():  # a non-zero head, so the logits differ per image
        vit.head.weight.normal_(0, 0.2)
    return ImageClassifier(vit).eval()


def _images(n: int, size: int = 8, chans: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, chans), dtype=np.uint8)


def test_classifier_is_the_preprocessing_then_the_vit():
    clf = _classifier()
    x = torch.from_numpy(_images(4))
    expected = clf.vit(DevicePreprocess(16, 3)(x))
    assert torch.equal(clf(x), expected)


def test_a_list_of_images_of_different_sizes_is_resized_one_by_one():
    clf = _classifier()
    small, big = torch.from_numpy(_images(1, 8)[0]), torch.from_numpy(_images(1, 24, seed=1)[0])
    out = clf([small, big])
    assert out.shape == (2, 5)
    assert torch.allclose(out[0], clf(small[None])[0], atol=1e-6)
    assert torch.allclose(out[1], clf(big[None])[0], atol=1e-6)


def test_batched_logits_equal_one_big_batch_whatever_the_batch_size():
    clf = _classifier()
    images = _images(11)
    ref = clf(torch.from_numpy(images)).detach()
    for bs in (1, 4, 11, 64):
        logits, ips = batched_logits(clf, images, batch_size=bs, device=torch.device("cpu"))
        assert logits.dtype == torch.float32 and logits.shape == (11, 5)
        assert torch.allclose(logits, ref, atol=1e-5), bs
        assert ips > 0


def test_batched_logits_of_nothing():
    logits, ips = batched_logits(_classifier(), _images(0), batch_size=4,
                                 device=torch.device("cpu"))
    assert logits.shape == (0, 5) and np.isnan(ips)


def test_autocast_rule():
    cpu = torch.device("cpu")
    for precision in (None, "bf16-mixed", "16-mixed", "32-true", "bf16-true"):
        assert autocast_dtype(cpu, precision) is None  # fp32 on a CPU, as training falls back
    assert inference_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert inference_device("auto").type == "cpu"
        pytest.skip("the GPU half of the rule needs CUDA")
    gpu = torch.device("cuda")
    best = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype(gpu) == best and autocast_dtype(gpu, "bf16-mixed") == best
    assert autocast_dtype(gpu, "16-mixed") == torch.float16
    assert autocast_dtype(gpu, "32-true") is None
