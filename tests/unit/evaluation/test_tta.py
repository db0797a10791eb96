"""Test-time augmentation (pipeline/evaluation/tta.py) and its aggregates in the study.

The views are checked pixel by pixel (the mirror against index arithmetic, the corner crops
against OpenCV's ``BORDER_REFLECT_101``, training's padding), the log-mean-softmax against a hand
computation, a flip-invariant classifier's TTA logits against its plain ones, and the study's TTA
top-1 and effect of TTA against scipy (``t.interval``, ``ttest_rel``) as tests/evaluation/
test_stats.py checks the plain ones.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import scipy.stats as st
import torch

import pipeline.evaluation.tta as tta_mod
from pipeline.evaluation.metrics import classification_metrics
from pipeline.evaluation.stats import bootstrap_interval, paired_bootstrap_difference
from pipeline.evaluation.study import Cell, summarise
from pipeline.evaluation.tta import (
    describe_views,
    mean_softmax_logits,
    num_views,
    tta_logits,
    tta_views,
)
from pipeline.models import ImageClassifier, build_vit

CPU = torch.device("cpu")


def _images(n: int = 3, h: int = 6, w: int = 7, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _views(images, **kw) -> dict[str, np.ndarray]:
    return {name: np.array(v) for name, v in tta_views(images, **kw)}


# --- the views ---------------------------------------------------------------------------------

def test_no_flip_and_no_shift_is_the_image_alone():
    x = _images()
    views = list(tta_views(x, hflip=False, shift=0))
    assert [n for n, _ in views] == ["image"] and views[0][1] is x
    assert num_views(hflip=False, shift=0) == 1


def test_the_mirror_flips_the_width_only():
    x = _images(h=4, w=5)
    views = _views(x, hflip=True, shift=0)
    assert list(views) == ["image", "image, mirrored"]
    m = views["image, mirrored"]
    n, h, w, c = x.shape
    for i in range(h):
        for j in range(w):
            assert np.array_equal(m[:, i, j, :], x[:, i, w - 1 - j, :])
    assert not np.array_equal(m, x) and np.array_equal(m[:, :, ::-1], x)


@pytest.mark.parametrize("shift", [1, 2, 5])
def test_corner_crops_are_those_of_the_reflect_padded_image(shift):
    """Against OpenCV's BORDER_REFLECT_101 (albumentations' PadIfNeeded in training), and
    against index arithmetic: the top-left crop's pixel (i, j) is image pixel (i - s, j - s)
    mirrored at the edge without repeating it."""
    x = _images(h=6, w=7)
    n, h, w, _ = x.shape
    views = _views(x, hflip=False, shift=shift)
    assert list(views) == ["image", "top-left", "top-right", "bottom-left", "bottom-right"]
    offsets = {"top-left": (0, 0), "top-right": (0, 2), "bottom-left": (2, 0),
               "bottom-right": (2, 2)}
    for k in range(n):
        padded = cv2.copyMakeBorder(x[k], shift, shift, shift, shift, cv2.BORDER_REFLECT_101)
        for name, (y, xo) in offsets.items():
            want = padded[y * shift : y * shift + h, xo * shift : xo * shift + w]
            assert np.array_equal(views[name][k], want), (name, k)
    def reflect(i: int, size: int) -> int:  # mirrored at the edge pixel, which is not repeated
        return -i if i < 0 else (2 * (size - 1) - i if i >= size else i)

    tl = views["top-left"]
    for i in range(h):
        for j in range(w):
            assert np.array_equal(tl[:, i, j], x[:, reflect(i - shift, h), reflect(j - shift, w)])
    # the bottom-right crop is the image moved up-left: its inside is the image's
    assert np.array_equal(views["bottom-right"][:, : h - shift, : w - shift], x[:, shift:, shift:])


def test_with_shift_and_flip_every_crop_has_its_mirror():
    x = _images()
    views = _views(x, hflip=True, shift=1)
    assert len(views) == num_views(hflip=True, shift=1) == 10
    for name in ("image", "top-left", "top-right", "bottom-left", "bottom-right"):
        assert np.array_equal(views[f"{name}, mirrored"], views[name][:, :, ::-1])
    assert describe_views(hflip=True, shift=1) == (
        "10 views: the image and its 4 corner crops after reflect-padding by 1 px, and the "
        "mirror image of each")
    assert describe_views(hflip=True, shift=0) == "2 views: the image and its mirror image"
    assert describe_views(hflip=False, shift=2).startswith("5 views: the image and its 4 corner")


def test_views_refuse_a_shift_that_does_not_fit_and_a_bad_shape():
    with pytest.raises(ValueError, match=r"shift must be in \[0, 6\) for 6x7 images"):
        tta_views(_images(h=6, w=7), hflip=True, shift=6)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        tta_views(_images()[0], hflip=True, shift=0)


# --- the logits --------------------------------------------------------------------------------

def test_log_mean_softmax_by_hand():
    # softmax [1/2, 1/2] and [3/4, 1/4]: mean [5/8, 3/8]
    out = mean_softmax_logits([torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]])])
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([[math.log(5 / 8), math.log(3 / 8)]]), atol=1e-6)
    assert torch.allclose(torch.softmax(out, 1), torch.tensor([[5 / 8, 3 / 8]]), atol=1e-6)
    # confident views that disagree: each probability underflows in one view, the mean is 1/2
    extreme = mean_softmax_logits([torch.tensor([[1000.0, -1000.0]]),
                                   torch.tensor([[-1000.0, 1000.0]])])
    assert torch.allclose(extreme, torch.full((1, 2), math.log(0.5)))
    one = torch.tensor([[2.0, -1.0, 0.5]])
    assert torch.allclose(mean_softmax_logits([one]), torch.log_softmax(one, 1))
    with pytest.raises(ValueError, match="no views"):
        mean_softmax_logits([])


class _FlipInvariant(ImageClassifier):
    """A classifier that cannot tell an image from its mirror image: the sum of both logits."""

    def forward(self, images):
        return super().forward(images) + super().forward(images.flip(2))


def _classifier(cls=ImageClassifier) -> ImageClassifier:
    torch.manual_seed(0)
    vit = build_vit("custom", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                    num_classes=4, in_chans=3)
    with torch.no_grad():  # a non-zero head, so the logits differ per image
        vit.head.weight.normal_(0, 0.5)
    return cls(vit).eval()


def test_a_flip_invariant_classifier_gets_its_plain_logits_from_flip_tta():
    clf = _classifier(_FlipInvariant)
    x, labels = _images(n=9, h=8, w=8, c=1), np.arange(9) % 4
    plain = clf(torch.from_numpy(x)).detach()
    out, views = tta_logits(clf, x, hflip=True, shift=0, batch_size=4, device=CPU)
    assert views == 2 and out.shape == (9, 4)
    assert torch.allclose(out, torch.log_softmax(plain, 1), atol=1e-5)  # the same probabilities
    a, b = classification_metrics(plain, labels), classification_metrics(out, labels)
    assert np.array_equal(a.predictions, b.predictions)
    assert (a.top1, a.top5) == (b.top1, b.top5) and a.loss == pytest.approx(b.loss, abs=1e-5)


def test_the_plain_logits_are_the_first_view_and_not_run_again(monkeypatch):
    clf = _classifier()
    x = _images(n=5, h=8, w=8)
    seen = []
    real = tta_mod.batched_logits

    def spy(classifier, images, **kw):
        seen.append(np.array(images))
        return real(classifier, images, **kw)

    monkeypatch.setattr(tta_mod, "batched_logits", spy)
    every, n = tta_logits(clf, x, hflip=True, shift=1, batch_size=8, device=CPU)
    assert n == 10 and len(seen) == 10 and np.array_equal(seen[0], x)
    seen.clear()
    plain = real(clf, x, batch_size=8, device=CPU)[0]
    reused, n = tta_logits(clf, x, hflip=True, shift=1, batch_size=8, device=CPU, plain=plain)
    assert n == 10 and len(seen) == 9  # not the image itself
    assert not any(np.array_equal(s, x) for s in seen)
    assert torch.allclose(reused, every, atol=1e-5)
    by_hand = mean_softmax_logits([real(clf, v, batch_size=8, device=CPU)[0]
                                   for _, v in tta_views(x, hflip=True, shift=1)])
    assert torch.allclose(every, by_hand, atol=1e-6)
    with pytest.raises(ValueError, match="plain logits of 4 images for 5"):
        tta_logits(clf, x, hflip=True, shift=0, batch_size=8, device=CPU, plain=plain[:4])


# --- the study ---------------------------------------------------------------------------------

PLAIN = {"scratch": [0.61, 0.58, 0.66, 0.60], "finetune": [0.74, 0.78, 0.72, 0.75]}
WITH_TTA = {"scratch": [0.63, 0.59, 0.69, 0.61], "finetune": [0.75, 0.80, 0.72, 0.77]}
N_TEST = 400


def _correct(acc: float, rng) -> np.ndarray:
    c = np.zeros(N_TEST, bool)
    c[rng.permutation(N_TEST)[: round(acc * N_TEST)]] = True
    return c


def _cells(seeds=(0, 1, 2, 3), tta: bool = True) -> list[Cell]:
    rng = np.random.default_rng(0)
    cells = []
    for variant, plain in PLAIN.items():
        for seed, p, t in zip(seeds, plain, WITH_TTA[variant]):
            c = _correct(p, rng)
            extra = {"tta_top1": t, "tta_correct": _correct(t, rng)} if tta else {}
            cells.append(Cell(variant, variant, "all", seed, 300, c.mean(), c, **extra))
    return cells


def test_tta_top1_and_effect_match_scipy():
    study = summarise(_cells(), tta_views="2 views: the image and its mirror image")
    assert [(t.variant, t.budget, t.seeds) for t in study.tta] == [
        ("scratch", "all", (0, 1, 2, 3)), ("finetune", "all", (0, 1, 2, 3))]
    for t in study.tta:
        plain = np.array([c.top1 for c in _cells() if c.variant == t.variant])
        tops = np.array(WITH_TTA[t.variant])
        low, high = st.t.interval(0.95, len(tops) - 1, loc=tops.mean(), scale=st.sem(tops))
        assert t.top1.method == "t" and t.top1.n == 4 and not t.top1.paired
        assert t.top1.mean == pytest.approx(tops.mean(), rel=1e-12)
        assert (t.top1.low, t.top1.high) == pytest.approx((low, high), rel=1e-10)
        ci = st.ttest_rel(tops, plain).confidence_interval(0.95)
        assert t.effect.method == "t" and t.effect.paired  # TTA minus plain, seed by seed
        assert t.effect.mean == pytest.approx(np.mean(tops - plain), rel=1e-10)
        assert (t.effect.low, t.effect.high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    # the plain aggregates and gains are those of the same cells without TTA
    plain_only = summarise(_cells(tta=False))
    assert study.aggregates == plain_only.aggregates and study.gains == plain_only.gains
    assert plain_only.tta == () and plain_only.tta_views == ""


def test_one_seed_tta_is_a_bootstrap_over_the_test_images():
    cells = _cells(seeds=(7,))
    study = summarise(cells)
    for t, c in zip(study.tta, cells):
        assert t.top1 == bootstrap_interval(c.tta_correct)
        assert t.effect == paired_bootstrap_difference(c.correct, c.tta_correct)
        assert t.top1.method == t.effect.method == "bootstrap"


def test_to_dict_keeps_the_plain_keys_and_adds_the_tta_ones():
    views = "2 views: the image and its mirror image"
    with_tta = summarise(_cells(), tta_views=views).to_dict()
    plain = summarise(_cells(tta=False)).to_dict()
    assert set(with_tta) - set(plain) == {"tta_views", "tta_top1", "tta_effect"}
    assert {k: with_tta[k] for k in plain} == plain
    assert with_tta["tta_views"] == views
    t = with_tta["tta_top1"]["finetune"]["all"]
    assert t["mean"] == pytest.approx(np.mean(WITH_TTA["finetune"]))
    assert t["seeds"] == [0, 1, 2, 3] and t["labelled"] == 300
    assert with_tta["tta_effect"]["scratch"]["all"]["paired"] is True


def test_some_seeds_with_tta_and_some_without_is_refused():
    cells = _cells()
    cells[0] = Cell(*(getattr(cells[0], f) for f in ("variant", "kind", "budget", "seed",
                                                     "labelled", "top1", "correct")))
    with pytest.raises(ValueError, match="scratch at budget all: some seeds"):
        summarise(cells)
