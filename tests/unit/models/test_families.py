"""The ViT families of the strongest public checkpoints load: a random timm model of each (2
blocks, 64 wide), saved as safetensors and loaded through ``load_pretrained`` with its config,
gives timm's logits within 1e-4 (fp32) at its own resolution and at another one (timm's model
there loaded by timm's own ``checkpoint_filter_fn``). A checkpoint that still does not fit is told
the feature it has, in one line, first. No network: every checkpoint is generated here."""

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import checkpoint_filter_fn

from pipeline.models import (
    CheckpointError,
    build_vit,
    detect_format,
    load_pretrained,
    read_state_dict,
    to_ours,
)

from .test_converters import _one_thread, max_diff, randomise_  # noqa: F401 - autouse fixture

TOL = 1e-4
SMALL = dict(embed_dim=64, num_heads=4, depth=2)  # timm's constructors take size overrides
CLASSES = 10

# family: (timm model, our config fields); the docs' "Which ViT families load" table
FAMILIES = {
    "augreg": ("vit_base_patch16_224", {}),
    "deit": ("deit_base_patch16_224", {}),
    "deit3": ("deit3_base_patch16_224", dict(no_embed_class=True, layer_scale=1e-6)),
    "clip_openai": ("vit_base_patch16_clip_quickgelu_224",
                    dict(pre_norm=True, act="quick_gelu", layer_norm_eps=1e-5)),
    "clip_laion": ("vit_base_patch16_clip_224", dict(pre_norm=True, layer_norm_eps=1e-5)),
    "dinov2": ("vit_base_patch14_dinov2", dict(layer_scale=1e-5)),
    "dinov2_reg4": ("vit_base_patch14_reg4_dinov2",
                    dict(layer_scale=1e-5, reg_tokens=4, no_embed_class=True)),
    "gap_reg4": ("vit_medium_patch16_reg4_gap_256",  # fc_norm by timm's rule for avg pooling
                 dict(class_token=False, global_pool="avg", reg_tokens=4, no_embed_class=True,
                      layer_scale=1e-5)),
    "gap": ("vit_base_patch16_gap_224", dict(class_token=False, global_pool="avg", fc_norm=False)),
    "siglip_gap": ("vit_base_patch32_siglip_gap_256",
                   dict(class_token=False, global_pool="avg", fc_norm=False, act="gelu_tanh")),
    "no_qkv_bias": ("vit_medium_patch16_gap_256",
                    dict(class_token=False, global_pool="avg", fc_norm=False, qkv_bias=False,
                         layer_scale=1e-6)),
    "cls_avg": ("eva_large_patch14_196", dict(global_pool="avg")),  # EVA: [CLS] kept
    "reg4_embedded": ("vit_so150m_patch16_reg4_gap_256",  # registers with position embeddings
                      dict(class_token=False, global_pool="avg", fc_norm=False, reg_tokens=4,
                           mlp_ratio=2.572)),
}


def patch_of(name: str) -> int:
    return 14 if "patch14" in name else 32 if "patch32" in name else 16


def sizes(name: str) -> tuple[int, int]:
    """(native, other) image sizes: a 3x3 grid and a 4x4 one (2x2 and 3x3 for /32)."""
    p = patch_of(name)
    return (3 * p, 4 * p) if p < 32 else (2 * p, 3 * p)


def timm_model(name: str, img_size: int) -> torch.nn.Module:
    return timm.create_model(name, pretrained=False, img_size=img_size, num_classes=CLASSES,
                             **SMALL).eval()


def ours_for(name: str, img_size: int, fields: dict):
    return build_vit("custom", img_size=img_size, patch_size=patch_of(name), num_classes=CLASSES,
                     **SMALL, **{"mlp_ratio": 4.0, **fields}).eval()


def saved_family(tmp_path, family: str):
    """(path of a random timm checkpoint of ``family`` at its native size, the model)."""
    name, _ = FAMILIES[family]
    torch.manual_seed(0)
    src = randomise_(timm_model(name, sizes(name)[0]))
    path = tmp_path / f"{family}.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    return path, src


def family_diffs(tmp_path, family: str) -> dict[str, float]:
    """Max |logit difference| between timm and ours, at the native size and the other one."""
    name, fields = FAMILIES[family]
    path, src = saved_family(tmp_path, family)
    out = {}
    for which, size in zip(("native", "other"), sizes(name), strict=True):
        ref = src
        if which == "other":  # timm's own loader resamples the position embeddings
            ref = timm_model(name, size)
            ref.load_state_dict(checkpoint_filter_fn(src.state_dict(), ref))
        ours = load_pretrained(ours_for(name, size, fields), path, keep_head=True)
        x = torch.randn(4, 3, size, size)
        with torch.no_grad():
            want = ref(x)
            assert want.abs().max() > 0.5  # not a degenerate, near-zero output
            out[which] = max_diff(ours(x), want)
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_gives_timms_logits_at_native_and_other_resolution(tmp_path, family):
    assert detect_format(read_state_dict(saved_family(tmp_path, family)[0])) == "timm"
    diffs = family_diffs(tmp_path, family)
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("family", list(FAMILIES))
def test_full_size_family_has_timms_keys_and_shapes(family):
    """At the sizes timm builds them (on the meta device): the state dicts agree key by key."""
    name, fields = FAMILIES[family]
    with torch.device("meta"):
        ref = timm.create_model(name, pretrained=False)
        cfg = dict(img_size=ref.patch_embed.img_size[0], patch_size=ref.patch_embed.patch_size[0],
                   embed_dim=ref.embed_dim, depth=len(ref.blocks),
                   num_heads=ref.blocks[0].attn.num_heads,
                   mlp_ratio=ref.blocks[0].mlp.fc1.out_features / ref.embed_dim,
                   num_classes=ref.num_classes)
        ours = build_vit("custom", **{**cfg, **fields})
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}


@pytest.mark.parametrize(("family", "wrong"), [
    ("clip_openai", dict(act="gelu")),  # no key shows the activation or the LayerNorm eps
    ("siglip_gap", dict(act="gelu")),
    ("clip_laion", dict(layer_norm_eps=1e-6)),
    ("dinov2", dict(layer_norm_eps=1e-5)),
])
def test_what_the_weights_cannot_show_is_set_right(tmp_path, family, wrong):
    """The controls for what the parity above cannot see at 1e-4: the tanh GELU and eps 1e-5 vs
    1e-6 move these logits by ~1e-5 to 3e-4 only (quick-GELU by ~1e-2), so the right setting must
    agree far more closely than the wrong one (here: bit-identical on one thread)."""
    name, fields = FAMILIES[family]
    path, src = saved_family(tmp_path, family)
    size = sizes(name)[0]
    x = torch.randn(4, 3, size, size)
    diff = {}
    for which, f in (("right", fields), ("wrong", {**fields, **wrong})):
        ours = load_pretrained(ours_for(name, size, f), path, keep_head=True)
        with torch.no_grad():
            diff[which] = max_diff(ours(x), src(x))
    assert diff["right"] <= TOL and diff["wrong"] > max(10 * diff["right"], 1e-6), diff


# ------------------------------------------------------------- what does not fit: the cause, named


def first_line(state: dict, **fields) -> str:
    name = "vit_base_patch16_224"
    with pytest.raises(CheckpointError) as err:
        to_ours(state, ours_for(name, 48, fields).cfg)
    return str(err.value).splitlines()[0]


def timm_state(name: str, size: int = 48, **kw) -> dict:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, img_size=size, num_classes=CLASSES,
                                 **{**SMALL, **kw}).state_dict()


@pytest.mark.parametrize(("name", "kw", "fields", "cause"), [
    ("vit_medium_patch16_reg4_gap_256", {}, {},
     "the checkpoint has no class token and average pooling with the LayerNorm after it "
     "(fc_norm); set model.class_token: false and model.global_pool: avg"),
    ("vit_base_patch16_gap_224", {}, {},
     "the checkpoint has no class token and average pooling with the LayerNorm before it (norm, "
     "no fc_norm); set model.class_token: false, model.global_pool: avg and model.fc_norm: false"),
    ("vit_base_patch14_reg4_dinov2", dict(patch_size=16), dict(layer_scale=1e-5),
     "the checkpoint has 4 register tokens (reg_token); set model.reg_tokens: 4"),
    ("vit_base_patch16_clip_224", {}, dict(layer_norm_eps=1e-5),
     "the checkpoint has a LayerNorm before the blocks (norm_pre: CLIP); set model.pre_norm: true"),
    ("vit_base_patch14_dinov2", dict(patch_size=16), {},
     "the checkpoint has LayerScale (blocks.N.ls1.gamma); set model.layer_scale: 1e-5"),
    ("vit_base_patch16_224", dict(qkv_bias=False), {},
     "the checkpoint has no qkv biases; set model.qkv_bias: false"),
    ("deit3_base_patch16_224", {}, dict(layer_scale=1e-6),
     "the checkpoint has position embeddings for the patches only (added before the class / "
     "register tokens are prepended); set model.no_embed_class: true"),
    ("vit_base_patch16_224", {}, dict(class_token=False, global_pool="avg"),
     "the checkpoint has a class token and token pooling (cls_token, norm); set "
     "model.class_token: true and model.global_pool: token"),
    ("vit_base_patch16_224", dict(depth=3), {},
     "the checkpoint has 3 blocks; set model.depth: 3"),
])
def test_a_fixable_mismatch_names_the_field_to_set(name, kw, fields, cause):
    line = first_line(timm_state(name, **kw), **fields)
    assert line.startswith("checkpoint does not fit ViT config (") and cause in line, line


@pytest.mark.parametrize(("name", "kw", "fields", "cause"), [
    ("vit_base_patch16_siglip_224", {}, dict(class_token=False, global_pool="avg"),
     "the checkpoint uses attention pooling (a MAP head, attn_pool: SigLIP, timm's "
     "global_pool='map'), which this ViT does not support"),
    ("deit_base_distilled_patch16_224", {}, {},
     "the checkpoint uses a distillation token (dist_token, head_dist: DeiT distilled), which "
     "this ViT does not support"),
    ("vit_base_patch16_224", dict(qk_norm=True), {},
     "the checkpoint uses query / key normalisation"),
    ("vit_base_patch16_224", dict(proj_bias=False), {},
     "the checkpoint has no biases in the attention and MLP projections"),
])
def test_an_unsupported_feature_is_named_first(name, kw, fields, cause):
    line = first_line(timm_state(name, **kw), **fields)
    assert cause in line, line


def test_swiglu_and_the_dinov2_layout_are_named():
    state = timm_state("vit_base_patch16_224")
    state = {k.replace("mlp.fc1.", "mlp.fc1_g."): v for k, v in state.items()}
    assert "uses SwiGLU MLPs" in first_line(state)
    state = {**timm_state("vit_base_patch16_224"), "mask_token": torch.zeros(1, 64)}
    assert "uses DINOv2's or BEiT's own layout (mask_token, register_tokens)" in first_line(state)


def test_every_cause_is_one_line_and_the_keys_follow():
    """A GAP checkpoint with registers and LayerScale into the paper's ViT: each feature on its
    own line, above the key list (kept for whatever no feature explains)."""
    with pytest.raises(CheckpointError) as err:
        to_ours(timm_state("vit_medium_patch16_reg4_gap_256"),
                ours_for("vit_base_patch16_224", 48, {}).cfg)
    lines = str(err.value).splitlines()
    assert "no class token and average pooling" in lines[0]
    assert lines[1].strip() == "the checkpoint has 4 register tokens (reg_token); set " \
                              "model.reg_tokens: 4"
    assert "set model.no_embed_class: true" in lines[2]
    assert "LayerScale" in lines[3] and "set model.layer_scale" in lines[3]
    assert lines[4].strip().startswith("missing keys (")
