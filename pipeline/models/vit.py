"""Vision Transformer, written from scratch.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale", ICLR 2021 (arXiv 2010.11929). Pre-norm encoder blocks, a [CLS] token and learned
position embeddings; attention runs through ``F.scaled_dot_product_attention`` so the
flash / memory-efficient kernels are used where the device has them.

The options the strongest public checkpoints need, as timm names them (``ViTConfig``; the
defaults are the paper's model): no [CLS] token and average pooling with a LayerNorm after it
(``global_pool="avg"``, ``fc_norm``), register tokens (``reg_tokens``, Darcet et al. 2024,
"Vision Transformers Need Registers"), position embeddings for the patches only
(``no_embed_class``: DeiT III, DINOv2 with registers), LayerScale (``layer_scale``, Touvron et
al. 2021, CaiT), a LayerNorm before the blocks (``pre_norm``: CLIP), no qkv bias, and the MLP
activation (quick-GELU: OpenAI CLIP; tanh GELU: SigLIP).

Parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``, ``blocks.N.attn.qkv``,
...) so a timm checkpoint maps onto this model by a small, pure state-dict filter
(``pipeline.models.weights``). This module knows nothing of training, Lightning or MLflow.

    >>> from pipeline.models import build_vit
    >>> model = build_vit("S/4", img_size=32, num_classes=10)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .variants import ViTConfig, variant_config

__all__ = ["ViTConfig", "VisionTransformer", "build_vit"]


class PatchEmbed(nn.Module):
    """Split the image into non-overlapping patches and project them (a strided conv)."""

    def __init__(
        self, *, img_size: int, patch_size: int, in_chans: int, embed_dim: int, bias: bool = True
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if H != self.img_size or W != self.img_size:
            raise ValueError(
                f"input is {H}x{W} but the model was built for {self.img_size}x{self.img_size}"
            )
        x = self.proj(x)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(
        self, dim: int, *, num_heads: int, qkv_bias: bool, attn_dropout: float, dropout: float
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, N, hd)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0
        )  # (B, nh, N, hd)
        x = x.transpose(1, 2).reshape(B, N, D)
        return self.proj_drop(self.proj(x))


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {  # ViTConfig.act -> the module
    "gelu": nn.GELU,
    "quick_gelu": QuickGELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),  # SigLIP (big_vision's default GELU)
}


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, *, act: str, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = ACTIVATIONS[act]()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample (Huang et al. 2016)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        # scale the (B, 1, 1) mask, not the activations: one pass over x instead of two
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class LayerScale(nn.Module):
    """A learned per-channel scale of a residual branch, initialised to ``init`` (CaiT)."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.init = init
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm encoder block: x + MSA(LN(x)), then x + MLP(LN(x)); with ``layer_scale`` each
    branch is scaled per channel first (``ls1``, ``ls2``)."""

    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attn = Attention(
            dim,
            num_heads=cfg.num_heads,
            qkv_bias=cfg.qkv_bias,
            attn_dropout=cfg.attn_dropout,
            dropout=cfg.dropout,
        )
        self.norm2 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), act=cfg.act, dropout=cfg.dropout)
        scale = cfg.layer_scale
        self.ls1 = LayerScale(dim, scale) if scale else nn.Identity()
        self.ls2 = LayerScale(dim, scale) if scale else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class VisionTransformer(nn.Module):
    """ViT classifier: ``forward_features`` -> ``pool`` ([CLS] token or patch mean) ->
    ``forward_head``."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D, eps = cfg.embed_dim, cfg.layer_norm_eps
        self.patch_embed = PatchEmbed(
            img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans, embed_dim=D,
            bias=not cfg.pre_norm,  # CLIP: the pre-norm follows, so the projection has no bias
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, D)) if cfg.reg_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_embed_prefix + cfg.num_patches, D))
        self.pos_drop = nn.Dropout(cfg.dropout)
        self.norm_pre = nn.LayerNorm(D, eps=eps) if cfg.pre_norm else nn.Identity()
        # stochastic depth grows linearly with depth: 0 for the first block, drop_path for the last
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.Sequential(*(Block(cfg, drop_path=r) for r in rates))
        # the final LayerNorm: on the tokens (norm), or on the pooled features (fc_norm)
        self.norm = nn.Identity() if cfg.use_fc_norm else nn.LayerNorm(D, eps=eps)
        self.fc_norm = nn.LayerNorm(D, eps=eps) if cfg.use_fc_norm else nn.Identity()
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Init as the paper / big_vision: trunc-normal(0.02) embeddings, xavier linears,
        LeCun-normal patch projection, and a zero-initialised head (register tokens and
        LayerScale as timm: N(0, 1e-6) and the ``layer_scale`` value)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for token in (self.cls_token, self.reg_token):
            if token is not None:
                nn.init.normal_(token, std=1e-6)
        w = self.patch_embed.proj.weight
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        nn.init.trunc_normal_(w, std=math.sqrt(1.0 / fan_in) / 0.87962566103423978)
        if self.patch_embed.proj.bias is not None:
            nn.init.zeros_(self.patch_embed.proj.bias)
        for name, m in self.blocks.named_modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:  # big_vision: MLP biases ~N(0, 1e-6), others zero
                    if ".mlp." in f".{name}":
                        nn.init.normal_(m.bias, std=1e-6)
                    else:
                        nn.init.zeros_(m.bias)
            elif isinstance(m, LayerScale):
                nn.init.constant_(m.gamma, m.init)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.reset_head()

    @torch.no_grad()
    def reset_head(self) -> None:
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> tokens (B, prefix + N, D): [CLS] (if any), registers, then patches;
        normalised unless the LayerNorm comes after pooling (``fc_norm``)."""
        x = self.patch_embed(x)  # (B, N, D)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token)
                  if t is not None]  # (B, 1, D) and (B, R, D)
        if self.cfg.no_embed_class:  # position embeddings for the patches only
            x = torch.cat([*prefix, x + self.pos_embed], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + self.pos_embed  # (B, prefix + N, D)
        x = self.norm_pre(self.pos_drop(x))
        x = self.blocks(x)
        return self.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B, prefix + N, D) -> (B, D): the [CLS] token, or the mean of the patch tokens
        (class and register tokens left out, as timm)."""
        if self.cfg.global_pool == "token":
            return x[:, 0]
        return x[:, self.cfg.num_prefix_tokens :].mean(dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.fc_norm(self.pool(x))  # (B, D)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def backbone_parameters(self):
        """Every parameter but the classifier head's (what fine-tuning freezes first)."""
        head = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head]

    def head_parameters(self):
        return list(self.head.parameters())

    def layer_index(self, name: str) -> int:
        """The depth of parameter ``name`` for layer-wise lr decay, BEiT's numbering: 0 for what
        comes before the blocks (patch and position embeddings, class and register tokens, the
        pre-norm), ``i + 1`` for ``blocks.i``, ``depth + 1`` for what comes after (the final
        norm or ``fc_norm``, the head)."""
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        if name.startswith(("patch_embed.", "cls_token", "reg_token", "pos_embed", "norm_pre.")):
            return 0
        return self.cfg.depth + 1


def build_vit(variant: str = "custom", **overrides) -> VisionTransformer:
    """The model of a named variant (``"B/16"``) or ``"custom"``; see :func:`variant_config`."""
    return VisionTransformer(variant_config(variant, **overrides))
