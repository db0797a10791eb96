"""Attention rollout: where a ViT's [CLS] token looks, as a (grid, grid) map and a PNG overlay.

Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020 (arXiv 2005.00928). Per
block the attention matrix is averaged over heads, the residual connection is accounted for by
adding the identity and renormalising rows, and the blocks are multiplied through:
``R = Â_L ... Â_1`` with ``Â = (mean_h A_h + I) / 2``. The [CLS] row of ``R`` over the patch
tokens, renormalised to sum to 1, is the map. A model that pools the mean of its patch tokens
(``global_pool="avg"``) gets the mean of the patch rows, what the pooled features draw from;
register tokens are left out of the map as the [CLS] token is.

The model is not changed: our attention runs through ``F.scaled_dot_product_attention``, which
never materialises the attention matrix, so a forward hook on each block's ``attn.qkv`` Linear
captures q and k and recomputes ``softmax(q k^T * scale)`` (in float32) on the side.

    >>> from pipeline.predict import Predictor, load_image
    >>> p = Predictor.load("models/finetune_b16/model.safetensors")
    >>> mask = p.explain("cat.png")              # (grid, grid), sums to 1
    >>> overlay(load_image("cat.png"), mask).save("cat_attention.png")

or ``python -m pipeline.predict --model ... --explain OUT_DIR PATH...``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn


class AttentionRecorder:
    """Context manager: while active, every forward of ``model`` appends each block's
    head-averaged attention, (B, N, N) float32 with N = prefix tokens + patches, to
    ``attentions``."""

    def __init__(self, model: nn.Module) -> None:
        blocks = getattr(model, "blocks", None)
        if blocks is None or not all(hasattr(b, "attn") and hasattr(b.attn, "qkv") for b in blocks):
            raise TypeError("attention rollout needs a ViT whose blocks have attn.qkv")
        self.model = model
        self.attentions: list[torch.Tensor] = []
        self._handles: list = []

    def _hook(self, attn: nn.Module):
        num_heads, head_dim = attn.num_heads, attn.head_dim
        scale = getattr(attn, "scale", head_dim**-0.5)  # what F.scaled_dot_product_attention uses

        def hook(_module, _inputs, qkv: torch.Tensor) -> None:
            B, N, _ = qkv.shape
            qkv = qkv.detach().float().reshape(B, N, 3, num_heads, head_dim)
            q, k = qkv.permute(2, 0, 3, 1, 4)[:2]  # 2 x (B, nh, N, hd)
            with torch.autocast(qkv.device.type, enabled=False):  # float32 under bf16 autocast
                a = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)  # (B, nh, N, N)
            self.attentions.append(a.mean(dim=1))  # (B, N, N)

        return hook

    def __enter__(self) -> AttentionRecorder:
        self.attentions.clear()
        for block in self.model.blocks:
            self._handles.append(block.attn.qkv.register_forward_hook(self._hook(block.attn)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def attention_rollout(attentions: Sequence[torch.Tensor], *, num_prefix_tokens: int = 1,
                      global_pool: str = "token") -> torch.Tensor:
    """Per-block head-averaged attentions, each (B, N, N), first block first -> (B, grid, grid)
    rollout over the patches, each map summing to 1: the [CLS] row (``global_pool="token"``,
    [CLS] first) or the mean of the patch rows (``"avg"``); the ``num_prefix_tokens`` ([CLS],
    registers) come before the patches and are left out of the map."""
    if not attentions:
        raise ValueError("no attention matrices: did the forward pass run inside the recorder?")
    B, N, _ = attentions[0].shape
    P = num_prefix_tokens
    grid = int(round(max(N - P, 0) ** 0.5))
    if grid * grid != N - P or grid == 0:
        raise ValueError(f"{N} tokens are not {P} prefix token(s) + a square grid of patches")
    eye = torch.eye(N, device=attentions[0].device)
    rollout = eye.expand(B, N, N)
    for a in attentions:
        a = a.float() + eye  # the residual connection
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a @ rollout  # (B, N, N): later blocks on the left
    if global_pool == "token":
        drawn = rollout[:, 0, P:]  # (B, N - P): how much [CLS] draws from each patch
    else:  # the pooled features are the patch tokens' mean: so is what they draw
        drawn = rollout[:, P:, P:].mean(dim=1)  # (B, N - P)
    drawn = drawn / drawn.sum(dim=-1, keepdim=True)
    return drawn.reshape(B, grid, grid)


@torch.no_grad()
def rollout(classifier: nn.Module, images) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, classes), rollout (B, grid, grid)) of uint8 ``images`` (a (B, H, W, C) batch
    or a sequence of (H, W, C) images) through an :class:`~pipeline.models.ImageClassifier`,
    under whatever autocast the caller set."""
    cfg = classifier.vit.cfg
    with AttentionRecorder(classifier.vit) as rec:
        logits = classifier(images)
    return logits, attention_rollout(rec.attentions, num_prefix_tokens=cfg.num_prefix_tokens,
                                     global_pool=cfg.global_pool)


def _colorize(heat: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) float RGB in [0, 1]: matplotlib's ``jet`` if installed,
    else black -> red."""
    try:
        from matplotlib import colormaps
    except ImportError:
        return np.stack([heat, np.zeros_like(heat), np.zeros_like(heat)], axis=-1)
    return colormaps["jet"](heat)[..., :3]


def overlay(image: Image.Image | np.ndarray, mask: np.ndarray | torch.Tensor, *,
            alpha: float = 0.5) -> Image.Image:
    """The (grid, grid) ``mask`` upsampled (bicubic) to the image's size, scaled to [0, 1] by its
    maximum, coloured and blended over ``image`` (PIL, or uint8 HW / HWC) with weight ``alpha``.
    Returns an RGB image of the image's size."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    if m.ndim != 2:
        raise ValueError(f"expected a (grid, grid) mask, got shape {tuple(m.shape)}")
    W, H = image.size
    heat = torch.nn.functional.interpolate(m[None, None], size=(H, W), mode="bicubic",
                                           align_corners=False)[0, 0].clamp_(min=0)
    heat = (heat / heat.max().clamp(min=1e-12)).numpy()
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    out = (1.0 - alpha) * rgb + alpha * _colorize(heat)
    return Image.fromarray(np.rint(out * 255.0).clip(0, 255).astype(np.uint8))
