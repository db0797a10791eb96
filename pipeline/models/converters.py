"""Checkpoint formats: tell a ViT state dict's layout from its key names and map it onto ours.

Our parameter names are timm's, so every format is first mapped to the timm layout by a pure
``state_dict -> state_dict`` function; ``timm_to_ours`` (``pipeline.models.weights``) then drops
or keeps the head, resizes the position embeddings and lists missing / unexpected keys and shape
clashes. The layouts (``detect_format``, after wrapper prefixes such as ``module.`` are stripped):

=================  ==========================================================================
``timm``           ``patch_embed.proj.weight``, ``blocks.N.attn.qkv.weight``, ``cls_token``,
                   ``pos_embed`` (and our own exports)
``hf``             Hugging Face transformers ``ViTModel`` / ``ViTForImageClassification``, as in
                   ``google/vit-base-patch16-224-in21k``: ``[vit.]embeddings.patch_embeddings...``,
                   ``encoder.layer.N.attention.attention.query...``, ``classifier``; transformers
                   >= 5 names in memory (``layers.N.attention.q_proj``) too. ``pooler`` and
                   ``mask_token`` are dropped (we pool the [CLS] token into our own head).
``torchvision``    ``vit_b_16``-family: ``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
                   ``encoder.layers.encoder_layer_N...`` (``mlp.0``/``mlp.3`` or the older
                   ``mlp.linear_1``/``linear_2``), ``heads.head``.
``npz_vit``        google-research/vision_transformer ``.npz``: ``embedding/kernel``, ``cls``,
                   ``Transformer/posembed_input/pos_embedding``, ``Transformer/encoderblock_N/``
                   with ``MultiHeadDotProductAttention_1`` / ``LayerNorm_2`` / ``MlpBlock_3``
                   (optionally under ``opt/target/``).
``npz_big_vision`` big_vision ``.npz``: keys under ``params/`` or a top-level ``pos_embedding``
                   (patches only: big_vision adds it before the [CLS] token, so its [CLS]
                   position is 0), ``MultiHeadDotProductAttention_0`` / ``LayerNorm_1`` /
                   ``MlpBlock_0``, per-block or scanned (``Transformer/encoderblock/``, stacked).
=================  ==========================================================================

The ``.npz`` mapping mirrors timm's own loader (``_load_weights`` in
``timm/models/vision_transformer.py``): kernels transposed to ``(out, in)``, per-head
``query/key/value`` kernels ``(D, heads, head_dim)`` flattened and stacked into ``qkv``. A
representation layer (``pre_logits``: the original in21k checkpoints, torchvision's
``representation_size``) is dropped together with the head it feeds, as the ViT paper fine-tunes.

A checkpoint at another resolution has its position embeddings resampled the way its own library
does (``POS_EMBED_RESAMPLING``), so our model gives the logits that library's model gives.
Hugging Face ViTs use LayerNorm eps 1e-12 (timm, torchvision and ours 1e-6): set
``ViTConfig.layer_norm_eps`` for bit-level parity; for trained weights it makes no measurable
difference.

    >>> state = read_state_dict("ViT-B_16.npz")           # as stored: Flax names
    >>> detect_format(state)
    'npz_vit'
    >>> model.load_state_dict(to_ours(state, model.cfg))   # = load_pretrained(model, path)
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from ..errors import CheckpointError
from .diagnose import is_square
from .mapping import fit_to_model, strip_wrapper_prefixes
from .variants import ViTConfig

FORMATS = ("timm", "hf", "torchvision", "npz_vit", "npz_big_vision")

State = dict[str, torch.Tensor]

# A key (full match) that only this layout has; the .npz layouts are told apart separately.
_SIGNATURES = {
    "timm": re.compile(
        r"patch_embed\.proj\.weight|cls_token|pos_embed|blocks\.\d+\.attn\.qkv\.weight"
    ),
    "hf": re.compile(
        r"(vit\.)?(embeddings\.(patch_embeddings\.projection\.weight|cls_token|position_embeddings)"
        r"|encoder\.layer\.\d+\.attention\.attention\.query\.weight"
        r"|layers\.\d+\.attention\.q_proj\.weight)"
    ),
    "torchvision": re.compile(
        r"conv_proj\.weight|class_token|encoder\.pos_embedding"
        r"|encoder\.layers\.encoder_layer_\d+\.self_attention\.in_proj_weight"
    ),
}
# Where the model sits inside a flattened Flax tree; longest first ("params/img/": SigLIP).
_NPZ_PREFIXES = ("opt/target/", "params/img/", "params/", "")


def detect_format(state: dict) -> str:
    """The layout of a state dict, from its key names: one of ``FORMATS``.

    Raises CheckpointError naming some of the keys when no layout, or more than one, fits."""
    keys = set(strip_wrapper_prefixes(state))
    if any("/" in k for k in keys):  # a flattened Flax tree
        prefix = _npz_prefix(keys)
        if prefix is None:
            raise CheckpointError(_unknown(keys, "a .npz without embedding/kernel"))
        big_vision = (
            prefix.startswith("params/")
            or f"{prefix}pos_embedding" in keys
            or any(k.startswith(f"{prefix}Transformer/encoderblock/") for k in keys)
        )
        return "npz_big_vision" if big_vision else "npz_vit"
    found = {
        fmt: sorted(k for k in keys if sig.fullmatch(k))
        for fmt, sig in _SIGNATURES.items()
    }
    found = {fmt: ks for fmt, ks in found.items() if ks}
    if len(found) == 1:
        return next(iter(found))
    if not found:
        raise CheckpointError(_unknown(keys, "not a timm, transformers or torchvision ViT"))
    raise CheckpointError(
        "checkpoint mixes the key layouts of "
        + ", ".join(f"{fmt} ({ks[:3]})" for fmt, ks in sorted(found.items()))
    )


def _unknown(keys: set[str], why: str) -> str:
    shown = sorted(keys)[:8]
    return (
        f"unknown checkpoint layout ({why}; known: {', '.join(FORMATS)}): "
        f"{len(keys)} keys, e.g. {shown}"
    )


def _npz_prefix(keys: set[str]) -> str | None:
    for prefix in _NPZ_PREFIXES:
        if f"{prefix}embedding/kernel" in keys:
            return prefix
    return None


# ---------------------------------------------------------------------------------- key renaming


def _rename(state: State, rules: list[tuple[str, str]], drop: tuple[str, ...] = ()) -> State:
    """Rename keys by the first rule whose pattern matches the whole key; keys matching ``drop``
    are left out, and keys no rule matches pass through unchanged (they show up as unexpected)."""
    compiled = [(re.compile(p), r) for p, r in rules]
    dropped = [re.compile(p) for p in drop]
    out = {}
    for k, v in state.items():
        if any(d.fullmatch(k) for d in dropped):
            continue
        for pattern, repl in compiled:
            if pattern.fullmatch(k):
                k = pattern.sub(repl, k)
                break
        out[k] = v
    return out


def _fuse_qkv(state: State) -> State:
    """``blocks.N.attn.{q,k,v}.P`` -> ``blocks.N.attn.qkv.P`` (rows q, then k, then v, as timm
    and torch's ``in_proj_weight``); an incomplete triple is left as it is (unexpected keys)."""
    out = dict(state)
    for key in [k for k in state if re.fullmatch(r"blocks\.\d+\.attn\.q\.(weight|bias)", k)]:
        parts = [key.replace(".attn.q.", f".attn.{n}.") for n in "qkv"]
        if all(p in out for p in parts):
            out[key.replace(".attn.q.", ".attn.qkv.")] = torch.cat([out.pop(p) for p in parts])
    return out


def timm_to_timm(state: State) -> State:
    """The timm layout is ours: only wrapper prefixes (Lightning, DDP, compile) go."""
    return strip_wrapper_prefixes(state)


_HF_RULES = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    *[
        rule
        for short, long in (("q", "query"), ("k", "key"), ("v", "value"))
        for rule in (
            (rf"encoder\.layer\.(\d+)\.attention\.attention\.{long}\.(weight|bias)",
             rf"blocks.\1.attn.{short}.\2"),
            (rf"layers\.(\d+)\.attention\.{short}_proj\.(weight|bias)",
             rf"blocks.\1.attn.{short}.\2"),
        )
    ],
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"layers\.(\d+)\.attention\.o_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"layers\.(\d+)\.mlp\.fc([12])\.(weight|bias)", r"blocks.\1.mlp.fc\2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
]


def hf_to_timm(state: State) -> State:
    """Hugging Face transformers ViT -> timm. Separate q/k/v linears are stacked into ``qkv``;
    the pooler (dense + tanh, unused by ViTForImageClassification) and mask token are dropped."""
    state = {k.removeprefix("vit."): v for k, v in strip_wrapper_prefixes(state).items()}
    state = _rename(state, _HF_RULES, drop=(r"pooler\..*", r"embeddings\.mask_token"))
    return _fuse_qkv(state)


_TV_BLOCK = r"encoder\.layers\.encoder_layer_(\d+)\."
_TORCHVISION_RULES = [
    (r"class_token", "cls_token"),
    (r"conv_proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.pos_embedding", "pos_embed"),
    (_TV_BLOCK + r"ln_([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (_TV_BLOCK + r"self_attention\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (_TV_BLOCK + r"self_attention\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_TV_BLOCK + r"mlp\.(?:0|linear_1)\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_TV_BLOCK + r"mlp\.(?:3|linear_2)\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"encoder\.ln\.(weight|bias)", r"norm.\1"),
    (r"heads\.head\.(weight|bias)", r"head.\1"),
]


def torchvision_to_timm(state: State) -> State:
    """torchvision ``VisionTransformer`` -> timm: ``nn.MultiheadAttention``'s ``in_proj`` is
    already timm's stacked ``qkv``. A ``heads.pre_logits`` layer is dropped with the head."""
    state = strip_wrapper_prefixes(state)
    drop = (r"heads\..*",) if any(k.startswith("heads.pre_logits.") for k in state) else ()
    return _rename(state, _TORCHVISION_RULES, drop=drop)


# ------------------------------------------------------------------------------------------ .npz


def npz_vit_to_timm(state: State) -> State:
    """google-research/vision_transformer ``.npz`` (as tensors) -> timm."""
    return _npz_to_timm(state, big_vision=False)


def npz_big_vision_to_timm(state: State) -> State:
    """big_vision ``.npz`` (as tensors) -> timm."""
    return _npz_to_timm(state, big_vision=True)


_NPZ_BLOCK = re.compile(r"Transformer/encoderblock_(\d+)/")


def _npz_to_timm(state: State, *, big_vision: bool) -> State:
    state = strip_wrapper_prefixes(state)
    prefix = _npz_prefix(set(state))
    if prefix is None:
        raise CheckpointError(_unknown(set(state), "a .npz without embedding/kernel"))
    # Keys outside the model's prefix (optimizer state under opt/state/...) are not weights.
    w = _unscan({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    mha, ln2, mlp = (
        ("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
        if big_vision
        else ("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
    )
    out: State = {}

    def move(src: str, dst: str, fn: Callable[[torch.Tensor], torch.Tensor] = lambda t: t):
        if src in w:
            out[dst] = fn(w.pop(src)).contiguous()

    def linear(t: torch.Tensor) -> torch.Tensor:  # Flax Dense kernel (in, out) -> (out, in)
        return t.T

    # conv kernel (h, w, C, D) -> (D, C, h, w)
    move("embedding/kernel", "patch_embed.proj.weight", lambda t: t.permute(3, 2, 0, 1))
    move("embedding/bias", "patch_embed.proj.bias")
    move("cls", "cls_token")
    move("pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding", "pos_embed")
    pe = out.get("pos_embed")
    if "cls_token" in out and pe is not None and pe.ndim == 3 and is_square(pe.shape[1]):
        # big_vision adds the position embedding to the patches before prepending [CLS]: ours
        # adds it after, so the [CLS] position is a zero row (exactly equivalent).
        out["pos_embed"] = torch.cat((pe.new_zeros(pe.shape[0], 1, pe.shape[2]), pe), dim=1)
    move("Transformer/encoder_norm/scale", "norm.weight")
    move("Transformer/encoder_norm/bias", "norm.bias")
    if any(k.startswith("pre_logits/") for k in w):  # representation layer: drop it and the head
        w = {k: v for k, v in w.items() if not k.startswith(("pre_logits/", "head/"))}
    move("head/kernel", "head.weight", linear)
    move("head/bias", "head.bias")

    blocks = sorted({int(m[1]) for k in w if (m := _NPZ_BLOCK.match(k))})
    for i in blocks:
        b, t = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        a = f"{b}{mha}/"
        move(b + "LayerNorm_0/scale", t + "norm1.weight")
        move(b + "LayerNorm_0/bias", t + "norm1.bias")
        qkv = [a + f"{n}/kernel" for n in ("query", "key", "value")]
        if all(k in w for k in qkv):  # 3 x (D, heads, head_dim) -> (3 * heads * head_dim, D)
            out[t + "attn.qkv.weight"] = torch.cat([w.pop(k).flatten(1).T for k in qkv])
        qkv_b = [a + f"{n}/bias" for n in ("query", "key", "value")]
        if all(k in w for k in qkv_b):  # 3 x (heads, head_dim) -> (3 * heads * head_dim,)
            out[t + "attn.qkv.bias"] = torch.cat([w.pop(k).reshape(-1) for k in qkv_b])
        move(a + "out/kernel", t + "attn.proj.weight", lambda k: k.flatten(0, 1).T)  # (h, hd, D)
        move(a + "out/bias", t + "attn.proj.bias")
        move(b + f"{ln2}/scale", t + "norm2.weight")
        move(b + f"{ln2}/bias", t + "norm2.bias")
        for j in (1, 2):
            move(b + f"{mlp}/Dense_{j - 1}/kernel", t + f"mlp.fc{j}.weight", linear)
            move(b + f"{mlp}/Dense_{j - 1}/bias", t + f"mlp.fc{j}.bias")
    out.update(w)  # whatever is left is not ours: reported as unexpected keys, by .npz name
    return out


def _unscan(w: State) -> State:
    """big_vision's scanned layers (``Transformer/encoderblock/...`` stacked on a leading depth
    axis) -> one ``Transformer/encoderblock_N/...`` entry per block."""
    scanned = "Transformer/encoderblock/"
    out = {}
    for k, v in w.items():
        if k.startswith(scanned):
            rest = k[len(scanned):]
            for i in range(v.shape[0]):
                out[f"Transformer/encoderblock_{i}/{rest}"] = v[i].clone()  # no shared storage
        else:
            out[k] = v
    return out


CONVERTERS: dict[str, Callable[[State], State]] = {
    "timm": timm_to_timm,
    "hf": hf_to_timm,
    "torchvision": torchvision_to_timm,
    "npz_vit": npz_vit_to_timm,
    "npz_big_vision": npz_big_vision_to_timm,
}


def to_timm(state: dict, fmt: str | None = None) -> State:
    """Any supported layout -> the timm layout (detected unless ``fmt`` is given)."""
    fmt = fmt or detect_format(state)
    if fmt not in CONVERTERS:
        raise CheckpointError(f"unknown checkpoint format {fmt!r}: expected one of {FORMATS}")
    return CONVERTERS[fmt](state)


def to_ours(
    state: dict, cfg: ViTConfig, *, keep_head: bool = False, fmt: str | None = None
) -> State:
    """Map a checkpoint of any supported layout onto our model for ``cfg``: to the timm layout,
    then :func:`pipeline.models.mapping.fit_to_model`, which resamples position embeddings on
    another grid as the checkpoint's own library does and raises CheckpointError listing missing /
    unexpected keys and shape clashes."""
    fmt = fmt or detect_format(state)
    return fit_to_model(to_timm(state, fmt), cfg, keep_head=keep_head, fmt=fmt)
