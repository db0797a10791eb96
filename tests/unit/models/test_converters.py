"""Checkpoint formats: every layout is detected from its keys and gives our model the logits of the
reference library's own model (timm, transformers, torchvision; Google's .npz through timm's npz
loader), at the checkpoint's resolution and at another one; the paper's variants map on the meta
device. All checkpoints are random and generated here: no network."""

import math

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn
from torchvision.models import vision_transformer as tv
from transformers import ViTConfig as HFConfig
from transformers import ViTForImageClassification, ViTModel

from pipeline.models import (
    FORMATS,
    VARIANTS,
    CheckpointError,
    build_vit,
    detect_format,
    load_pretrained,
    parse_variant,
    read_checkpoint,
    read_state_dict,
    resize_pos_embed,
    to_ours,
    to_timm,
    variant_config,
)
from pipeline.models import weights as weights_module
from pipeline.models.mapping import expected_shapes

# Small models for real logits: Ti width, 2 blocks, patch 8 at 32 px (a 4x4 grid); 48 px (6x6)
# for fine-tuning at another resolution.
DIM, HEADS, MLP, DEPTH, PATCH, CLASSES, SIZE = 192, 3, 768, 2, 8, 10, 32
TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one intra-op thread is as fast, and on a shared CPU far faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ours_for(size: int, **kw):
    return build_vit("custom", img_size=size, patch_size=PATCH, embed_dim=DIM, depth=DEPTH,
                     num_heads=HEADS, mlp_ratio=MLP / DIM, num_classes=CLASSES, **kw).eval()


@torch.no_grad()
def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Unit-scale random weights (libraries zero-init biases and heads and keep attention near
    uniform, which would hide a q/k or bias mix-up): linears ~ N(0, 1/fan_in), norms ~ 1."""
    g = torch.Generator().manual_seed(seed)

    def rand(p, scale=1.0, shift=0.0):
        p.copy_(torch.randn(p.shape, generator=g) * scale + shift)

    for p in model.parameters():  # tokens and position embeddings
        rand(p, 0.5)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            rand(m.weight, 0.1, 1.0)
            rand(m.bias, 0.1)
        elif isinstance(m, (nn.Linear, nn.Conv2d)):
            rand(m.weight, 1 / math.sqrt(m.weight[0].numel()))
            if m.bias is not None:  # CLIP's patch projection, qkv without bias
                rand(m.bias, 0.1)
        elif isinstance(m, nn.MultiheadAttention):  # torchvision's fused in_proj
            rand(m.in_proj_weight, 1 / math.sqrt(m.embed_dim))
            rand(m.in_proj_bias, 0.1)
    return model.eval()


# ------------------------------------------------------------------ Google's .npz, written here


def google_shapes(*, big_vision: bool, scanned: bool = False, dim=DIM, depth=DEPTH, heads=HEADS,
                  mlp=MLP, patch=PATCH, grid=SIZE // PATCH, classes=CLASSES):
    """Key -> shape of a ViT .npz as google-research/vision_transformer (``encoderblock_N``,
    ``MultiHeadDotProductAttention_1``, ``MlpBlock_3``) or big_vision (``params/``,
    ``MultiHeadDotProductAttention_0``, ``MlpBlock_0``, patch-only ``pos_embedding``) write it."""
    hd = dim // heads
    mha, ln2, mlp_block = (("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
                           if big_vision else
                           ("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"))
    block = {"LayerNorm_0/scale": (dim,), "LayerNorm_0/bias": (dim,),
             f"{ln2}/scale": (dim,), f"{ln2}/bias": (dim,),
             f"{mha}/out/kernel": (heads, hd, dim), f"{mha}/out/bias": (dim,),
             f"{mlp_block}/Dense_0/kernel": (dim, mlp), f"{mlp_block}/Dense_0/bias": (mlp,),
             f"{mlp_block}/Dense_1/kernel": (mlp, dim), f"{mlp_block}/Dense_1/bias": (dim,)}
    for n in ("query", "key", "value"):
        block.update({f"{mha}/{n}/kernel": (dim, heads, hd), f"{mha}/{n}/bias": (heads, hd)})
    shapes = {"embedding/kernel": (patch, patch, 3, dim), "embedding/bias": (dim,),
              "cls": (1, 1, dim), "Transformer/encoder_norm/scale": (dim,),
              "Transformer/encoder_norm/bias": (dim,),
              "head/kernel": (dim, classes), "head/bias": (classes,)}
    if big_vision:
        shapes["pos_embedding"] = (1, grid * grid, dim)
    else:
        shapes["Transformer/posembed_input/pos_embedding"] = (1, grid * grid + 1, dim)
    for k, s in block.items():
        if scanned:
            shapes[f"Transformer/encoderblock/{k}"] = (depth, *s)
        else:
            shapes.update({f"Transformer/encoderblock_{i}/{k}": s for i in range(depth)})
    prefix = "params/" if big_vision else ""
    return {prefix + k: s for k, s in shapes.items()}


def google_arrays(shapes: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in shapes.items():
        x = rng.standard_normal(s).astype(np.float32)
        if k.endswith("/scale"):
            x = 1 + 0.1 * x
        elif k.endswith("/bias"):
            x = 0.1 * x
        elif k.endswith("kernel"):
            core = s[1:] if "encoderblock/" in k else s  # a scanned stack: depth first
            qkv = any(f"/{n}/" in k for n in ("query", "key", "value"))  # (D, heads, head_dim)
            x = x / math.sqrt(core[0] if qkv else math.prod(core[:-1]))  # fan-in
        else:  # cls, pos_embedding
            x = 0.5 * x
        out[k] = x
    return out


def timm_for_npz(size: int, big_vision: bool):
    # big_vision adds pos_embedding before prepending [CLS]: timm's no_embed_class
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, patch_size=PATCH,
                             depth=DEPTH, img_size=size, num_classes=CLASSES,
                             no_embed_class=big_vision).eval()


# ----------------------------------------------- reference models: (checkpoint, fmt, reference)


def ref_timm(tmp, size, suffix=".safetensors"):
    src = randomise_(timm.create_model("vit_tiny_patch16_224", pretrained=False, patch_size=PATCH,
                                       depth=DEPTH, img_size=SIZE, num_classes=CLASSES))
    path = tmp / f"timm{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    else:
        torch.save(src.state_dict(), path)
    if size == SIZE:
        return path, src
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, patch_size=PATCH,
                            depth=DEPTH, img_size=size, num_classes=CLASSES).eval()
    ref.load_state_dict(checkpoint_filter_fn(src.state_dict(), ref))  # timm's own resampling
    return path, ref


def hf_config(**kw):
    base = dict(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                intermediate_size=MLP, image_size=SIZE, patch_size=PATCH, num_labels=CLASSES)
    return HFConfig(**{**base, **kw})


def ref_hf(tmp, size):
    src = randomise_(ViTForImageClassification(hf_config()))
    src.save_pretrained(tmp / "hf")  # the hub layout: vit.encoder.layer.N.attention.attention...
    return tmp / "hf" / "model.safetensors", (
        lambda x: src(x, interpolate_pos_encoding=size != SIZE).logits)


def tv_model(size, **kw):
    return tv.VisionTransformer(image_size=size, patch_size=PATCH, num_layers=DEPTH,
                                num_heads=HEADS, hidden_dim=DIM, mlp_dim=MLP,
                                num_classes=CLASSES, **kw)


def ref_torchvision(tmp, size):
    src = randomise_(tv_model(SIZE))
    torch.save(src.state_dict(), tmp / "tv.pth")
    if size == SIZE:
        return tmp / "tv.pth", src
    ref = tv_model(size).eval()
    ref.load_state_dict(tv.interpolate_embeddings(size, PATCH, src.state_dict()))
    return tmp / "tv.pth", ref


def ref_npz(tmp, size, big_vision=False, scanned=False):
    path = tmp / "vit.npz"
    np.savez(path, **google_arrays(google_shapes(big_vision=big_vision, scanned=scanned)))
    ref = timm_for_npz(size, big_vision)
    ref.load_pretrained(str(path))  # timm's own .npz loader (resamples pos_embedding itself)
    return path, ref


REFERENCES = {  # name: (expected format, builder)
    "timm": ("timm", ref_timm),
    "timm_pth": ("timm", lambda tmp, size: ref_timm(tmp, size, ".pth")),
    "hf": ("hf", ref_hf),
    "torchvision": ("torchvision", ref_torchvision),
    "npz_vit": ("npz_vit", ref_npz),
    "npz_big_vision": ("npz_big_vision", lambda tmp, size: ref_npz(tmp, size, True)),
    "npz_big_vision_scanned": ("npz_big_vision", lambda tmp, size: ref_npz(tmp, size, True, True)),
}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("size", [SIZE, 48], ids=["same-res", "32to48px"])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_logits_match_the_reference_library(tmp_path, name, size):
    fmt, make = REFERENCES[name]
    torch.manual_seed(0)
    path, ref = make(tmp_path, size)
    assert detect_format(read_state_dict(path)) == fmt
    ours = ours_for(size, layer_norm_eps=1e-12 if fmt == "hf" else 1e-6)  # HF's LayerNorm eps
    load_pretrained(ours, path, keep_head=True)
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        want, got = ref(x), ours(x)
        assert want.abs().max() > 0.5  # not a degenerate, near-zero output
        assert max_diff(got, want) <= TOL

        # The comparison can fail: a q/k mix-up in one block is far outside the tolerance.
        qkv = ours.blocks[0].attn.qkv.weight
        qkv.copy_(torch.cat([qkv[DIM:2 * DIM], qkv[:DIM], qkv[2 * DIM:]]))
        assert max_diff(ours(x), want) > 100 * TOL

    # The ``pretrained`` stage saves read_checkpoint's output (the timm layout) as safetensors
    # and fine-tunes from that file: same weights, no shared storage (save_file refuses it).
    state = read_checkpoint(path)
    assert detect_format(state) == "timm"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "timm.safetensors"))
    direct = to_ours(read_state_dict(path), ours.cfg, keep_head=True)
    if size == SIZE:
        saved = to_ours(read_state_dict(tmp_path / "timm.safetensors"), ours.cfg, keep_head=True)
        assert direct.keys() == saved.keys()
        assert all(torch.equal(direct[k], saved[k]) for k in direct)
    elif fmt != "timm":  # and timm's resampling would not match this library's
        timm_way = resize_pos_embed(state["pos_embed"], size // PATCH)
        assert max_diff(timm_way, direct["pos_embed"]) > 100 * TOL


def test_hf_in21k_layout_pooler_dropped_and_hub_id(tmp_path, monkeypatch):
    """``google/vit-base-patch16-224-in21k`` is a ``ViTModel``: no ``vit.`` prefix, a pooler, no
    classifier. Our [CLS] features equal transformers'; the head is new; a hub id works."""
    src = randomise_(ViTModel(hf_config(), add_pooling_layer=True))
    src.save_pretrained(tmp_path / "in21k")
    path = tmp_path / "in21k" / "model.safetensors"
    raw = read_state_dict(path)
    assert "pooler.dense.weight" in raw
    assert "encoder.layer.0.attention.attention.query.weight" in raw
    monkeypatch.setattr(weights_module, "_hub_download", lambda repo_id: path)
    ours = load_pretrained(ours_for(SIZE, layer_norm_eps=1e-12), "google/vit-tiny-in21k")
    assert torch.count_nonzero(ours.head.weight) == 0
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        feats = ours.forward_head(ours.forward_features(x), pre_logits=True)
        assert max_diff(feats, src(x).last_hidden_state[:, 0]) <= TOL


def test_hf_in_memory_names_of_transformers_5_map_the_same(tmp_path):
    src = randomise_(ViTForImageClassification(hf_config()))
    src.save_pretrained(tmp_path)
    on_disk = to_timm(read_state_dict(tmp_path / "model.safetensors"))
    in_memory = to_timm(src.state_dict())  # transformers >= 5: layers.N.attention.q_proj...
    assert on_disk.keys() == in_memory.keys()
    assert all(torch.equal(on_disk[k], in_memory[k]) for k in on_disk)


def test_torchvision_legacy_mlp_names_and_representation_layer():
    state = randomise_(tv_model(SIZE)).state_dict()
    legacy = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
              for k, v in state.items()}
    assert legacy.keys() != state.keys()
    new, old = to_timm(state), to_timm(legacy)
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)
    # representation_size adds heads.pre_logits (+ tanh): dropped with the head it feeds
    with_rep = randomise_(tv_model(SIZE, representation_size=DIM)).state_dict()
    assert "heads.pre_logits.weight" in with_rep and with_rep["heads.head.weight"].any()
    out = to_ours(with_rep, ours_for(SIZE).cfg, keep_head=True)
    assert torch.count_nonzero(out["head.weight"]) == 0


def test_npz_optimizer_prefix_and_pre_logits():
    arrays = google_arrays(google_shapes(big_vision=False))
    plain = to_timm({k: torch.from_numpy(v) for k, v in arrays.items()})
    wrapped = {f"opt/target/{k}": torch.from_numpy(v) for k, v in arrays.items()}
    wrapped["opt/state/step"] = torch.tensor(3)  # optimizer state: not weights
    assert detect_format(wrapped) == "npz_vit"
    again = to_timm(wrapped)
    assert plain.keys() == again.keys() and all(torch.equal(plain[k], again[k]) for k in plain)
    # the original in21k .npz has a representation layer: dropped with the head it feeds
    arrays.update({"pre_logits/kernel": np.ones((DIM, DIM), np.float32),
                   "pre_logits/bias": np.ones(DIM, np.float32)})
    out = to_timm({k: torch.from_numpy(v) for k, v in arrays.items()})
    assert not any(k.startswith(("head", "pre_logits")) for k in out)


# ------------------------------------------------------- the paper's variants, on the meta device

PAPER_VARIANTS = ["B/8", "B/16", "B/32", "L/16", "L/32", "H/14"]
TIMM_NAMES = {"B/8": "vit_base_patch8_224", "B/16": "vit_base_patch16_224",
              "B/32": "vit_base_patch32_224", "L/16": "vit_large_patch16_224",
              "L/32": "vit_large_patch32_224", "H/14": "vit_huge_patch14_224"}
TV_BUILDERS = {"B/16": tv.vit_b_16, "B/32": tv.vit_b_32, "L/16": tv.vit_l_16,
               "L/32": tv.vit_l_32, "H/14": tv.vit_h_14}  # torchvision has no B/8


def hf_hub_layout(model) -> dict:
    """The names transformers writes to disk (the hub's): transformers >= 5 renames them in memory
    and reverts on save; transformers 4 keeps them."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return model.state_dict()
    return revert_weight_conversion(model, model.state_dict())


def meta_checkpoint(fmt: str, variant: str, classes: int = 1000) -> dict:
    """A 224 px checkpoint of ``variant`` from the reference library, on the meta device."""
    size, patch = parse_variant(variant)
    dim, depth, heads, mlp = VARIANTS[size]
    with torch.device("meta"):
        if fmt == "timm":
            return timm.create_model(TIMM_NAMES[variant], num_classes=classes).state_dict()
        if fmt == "hf":
            return hf_hub_layout(ViTForImageClassification(HFConfig(
                hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads,
                intermediate_size=mlp, image_size=224, patch_size=patch, num_labels=classes)))
        if fmt == "torchvision":
            if variant in TV_BUILDERS:
                return TV_BUILDERS[variant](num_classes=classes).state_dict()
            return tv.VisionTransformer(image_size=224, patch_size=patch, num_layers=depth,
                                        num_heads=heads, hidden_dim=dim, mlp_dim=mlp,
                                        num_classes=classes).state_dict()
        shapes = google_shapes(big_vision=fmt == "npz_big_vision", dim=dim, depth=depth,
                               heads=heads, mlp=mlp, patch=patch, grid=224 // patch,
                               classes=classes)
        return {k: torch.empty(s) for k, s in shapes.items()}


def state_patch(variant: str) -> int:
    return parse_variant(variant)[1]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", PAPER_VARIANTS)
def test_paper_variants_map_at_224_and_fine_tuning_resolution(fmt, variant):
    state = meta_checkpoint(fmt, variant)
    assert detect_format(state) == fmt
    if fmt == "hf":  # the hub's names, not transformers 5's in-memory ones
        assert "vit.encoder.layer.0.attention.attention.query.weight" in state
    for img in (224, 384 if 384 % state_patch(variant) == 0 else 518):  # H/14: 518 as the paper
        cfg = variant_config(variant, img_size=img, num_classes=1000)
        out = to_ours(state, cfg, keep_head=True)
        assert {k: tuple(v.shape) for k, v in out.items()} == expected_shapes(cfg)
        assert out["head.weight"].is_meta  # the checkpoint's head, not a fresh zero one
        assert out["pos_embed"].shape[1] == (img // cfg.patch_size) ** 2 + 1


# ------------------------------------------------------------------------------------ errors

EXTRA_KEY = {  # a key of each layout that is no part of a ViT
    "timm": ("blocks.0.attn.extra.weight", "blocks.0.attn.extra.weight"),
    "hf": ("vit.encoder.layer.0.attention.attention.extra.weight",
           "encoder.layer.0.attention.attention.extra.weight"),
    "torchvision": ("encoder.layers.encoder_layer_0.extra.weight",
                    "encoder.layers.encoder_layer_0.extra.weight"),
    "npz_vit": ("Transformer/encoderblock_0/Extra/kernel",
                "Transformer/encoderblock_0/Extra/kernel"),
    "npz_big_vision": ("params/Transformer/encoderblock_0/Extra/kernel",
                       "Transformer/encoderblock_0/Extra/kernel"),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_checkpoint_of_another_width_and_depth_lists_keys_and_shapes(fmt):
    state = meta_checkpoint(fmt, "B/16", classes=10)  # width 768, 12 blocks
    key, reported = EXTRA_KEY[fmt]
    state[key] = torch.empty(1, device="meta")
    cfg = variant_config("S/16", depth=13, img_size=224, num_classes=10)  # width 384, 13 blocks
    with pytest.raises(CheckpointError) as err:
        to_ours(state, cfg)
    msg = str(err.value)
    assert "missing keys (12): ['blocks.12.attn.proj.bias'" in msg
    assert f"unexpected keys (1): [{reported!r}]" in msg
    assert "shape clashes (" in msg
    assert "blocks.0.attn.qkv.weight: checkpoint (2304, 768) vs model (1152, 384)" in msg


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"encoder.weight": 0, "decoder.bias": 0}, r"unknown checkpoint layout.*'decoder.bias'"),
        ({"params/foo/kernel": 0}, r"unknown checkpoint layout.*\.npz.*'params/foo/kernel'"),
        ({}, r"unknown checkpoint layout.*0 keys"),
        ({"cls_token": 0, "class_token": 0}, r"mixes .*timm \(\['cls_token'\]\).*torchvision"),
    ],
)
def test_unknown_or_mixed_layouts_name_their_keys(state, message):
    state = {k: torch.zeros(1) for k in state}
    with pytest.raises(CheckpointError, match=message):
        detect_format(state)
    with pytest.raises(CheckpointError, match=message):
        to_ours(state, ours_for(SIZE).cfg)


def test_unreadable_npz_names_the_file(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, embedding=np.array([{"a": 1}], dtype=object))  # needs pickle: refused
    with pytest.raises(CheckpointError, match="objects.npz"):
        read_checkpoint(path)
