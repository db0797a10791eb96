"""Test-time augmentation (TTA): each test image classified as several views, softmax averaged.

The views of uint8 (N, H, W, C) images (:func:`tta_views`): the image itself; with ``shift > 0``
the 4 corner crops of the image reflect-padded by ``shift`` pixels (the image moved ``shift``
pixels diagonally each way, the border mirrored in as training's ``crop_padding`` does it: numpy's
``reflect``, OpenCV's ``BORDER_REFLECT_101``); with ``hflip`` the mirror image of each of these:
1, 2, 5 or 10 views. :func:`tta_logits` runs the classifier on each view with
:func:`pipeline.models.classifier.batched_logits` (the call of the plain pass) and returns
``log(mean over views of softmax(logits))`` (:func:`mean_softmax_logits`): logits whose softmax is
the views' mean probability, so :func:`pipeline.evaluation.metrics.classification_metrics` takes
them unchanged (top-1 is the argmax of the mean probability, the loss its cross-entropy).

The evaluate stage reports TTA beside the plain figures, never instead of them: the plain pass
(and the throughput it measures) runs as without TTA, and its logits are the first view's.

    >>> tta, views = tta_logits(clf, images, hflip=True, shift=0, batch_size=256,
    ...                         device=device, plain=logits)
    >>> classification_metrics(tta, labels).top1, views
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..models.classifier import ImageClassifier, batched_logits

# (name, which corner of the padded image: 0 = top/left, 2 = bottom/right, in units of shift)
_CORNERS = (("top-left", 0, 0), ("top-right", 0, 2), ("bottom-left", 2, 0),
            ("bottom-right", 2, 2))


@dataclass(frozen=True)
class TTAViews:
    """Which views: the mirror image (``hflip``) and/or the 4 corner crops after reflect-padding
    by ``shift`` pixels (``evaluate.tta`` in params)."""

    hflip: bool
    shift: int

    @property
    def count(self) -> int:
        return num_views(hflip=self.hflip, shift=self.shift)

    def describe(self) -> str:
        return describe_views(hflip=self.hflip, shift=self.shift)


def check_shift(shift: int, height: int, width: int) -> None:
    """ValueError unless ``0 <= shift < min(height, width)`` (reflect padding mirrors at most the
    image less its edge row), as training's ``crop_padding``."""
    if shift < 0 or (shift and shift >= min(height, width)):
        raise ValueError(f"shift must be in [0, {min(height, width)}) for {height}x{width} "
                         f"images (reflect padding), got {shift}")


def num_views(*, hflip: bool, shift: int) -> int:
    return (5 if shift else 1) * (2 if hflip else 1)


def describe_views(*, hflip: bool, shift: int) -> str:
    """The views in words, e.g. ``"2 views: the image and its mirror image"``."""
    text = "the image"
    if shift:
        text += f" and its 4 corner crops after reflect-padding by {shift} px"
    if hflip:
        text += ", and the mirror image of each" if shift else " and its mirror image"
    n = num_views(hflip=hflip, shift=shift)
    return f"{n} view{'s' if n != 1 else ''}: {text}"


def tta_views(images: np.ndarray, *, hflip: bool, shift: int
              ) -> Iterator[tuple[str, np.ndarray]]:
    """(name, uint8 (N, H, W, C) view) of each view, the image itself first (``"image"``), then
    its mirror image, then each corner crop and its mirror image; numpy views (of one padded
    copy of the set when ``shift > 0``), one at a time. ValueError on a shape that is not
    (N, H, W, C) or a ``shift`` that does not fit (:func:`check_shift`), before the first view."""
    if np.ndim(images) != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {np.shape(images)}")
    _, h, w, _ = np.shape(images)
    check_shift(shift, h, w)
    return _views(images, hflip, shift, h, w)


def _views(images, hflip: bool, shift: int, h: int, w: int) -> Iterator[tuple[str, np.ndarray]]:
    crops = [("image", images)]
    if shift:
        # (N, H + 2s, W + 2s, C); a corner crop at (y, x) is the image moved by (s - y, s - x)
        padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="reflect")
        crops += [(name, padded[:, y * shift : y * shift + h, x * shift : x * shift + w])
                  for name, y, x in _CORNERS]
    for name, view in crops:
        yield name, view
        if hflip:
            yield f"{name}, mirrored", view[:, :, ::-1]  # W is axis 2


def mean_softmax_logits(view_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """``log(mean_v softmax(view_logits[v]))``, (N, K) float32, from V (N, K) logits: the log of
    the views' mean probability, computed as ``logsumexp_v log_softmax - log V`` (finite wherever
    the logits are, where the log of a mean of underflowed probabilities would not be)."""
    if not view_logits:
        raise ValueError("no views to average")
    stacked = torch.stack([torch.as_tensor(x).float() for x in view_logits])  # (V, N, K)
    return torch.logsumexp(torch.log_softmax(stacked, dim=-1), dim=0) - math.log(len(stacked))


def tta_logits(classifier: ImageClassifier, images: np.ndarray, *, hflip: bool, shift: int,
               batch_size: int, device: torch.device, dtype: torch.dtype | None = None,
               plain: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """(TTA logits (N, K) float32 on the CPU, number of views) of uint8 (N, H, W, C) ``images``:
    :func:`mean_softmax_logits` of the classifier's logits on each of :func:`tta_views`, each by
    :func:`batched_logits`. ``plain``: the logits of the plain pass, used as the first view's
    (the image itself) instead of running it again."""
    if plain is not None and tuple(plain.shape[:1]) != (len(images),):
        raise ValueError(f"plain logits of {plain.shape[0]} images for {len(images)} images")
    logits = []
    for i, (_, view) in enumerate(tta_views(images, hflip=hflip, shift=shift)):
        if i == 0 and plain is not None:
            logits.append(plain)
            continue
        logits.append(batched_logits(classifier, view, batch_size=batch_size, device=device,
                                     dtype=dtype)[0])
    return mean_softmax_logits(logits), len(logits)
