"""Model contracts: shapes, parameter counts per variant, init, config validation."""

import re

import pytest
import timm
import torch

from pipeline.models import VARIANTS, ViTConfig, build_vit, parse_variant, variant_config

# timm's exact counts for the paper's models at 224 px with a 1000-class head
# (paper, Table 1: 86M / 307M / 632M).
PAPER_COUNTS = {
    ("B/16", "vit_base_patch16_224"): 86_567_656,
    ("L/16", "vit_large_patch16_224"): 304_326_632,
    ("H/14", "vit_huge_patch14_224"): 632_045_800,
}


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(("variant", "timm_name"), list(PAPER_COUNTS))
def test_parameter_counts_match_paper_and_timm(variant, timm_name):
    with torch.device("meta"):  # no memory: H/14 is 632M parameters
        ours = build_vit(variant, img_size=224, num_classes=1000)
        ref = timm.create_model(timm_name, pretrained=False, num_classes=1000)
    assert n_params(ours) == PAPER_COUNTS[(variant, timm_name)]
    assert n_params(ours) == n_params(ref)


@pytest.mark.parametrize("variant", ["Ti/4", "S/8", "B/32"])
def test_output_and_feature_shapes(variant):
    model = build_vit(variant, img_size=32, num_classes=7, depth=2).eval()
    x = torch.randn(3, 3, 32, 32)
    feats = model.forward_features(x)
    _, patch = parse_variant(variant)
    assert feats.shape == (3, 1 + (32 // patch) ** 2, VARIANTS[variant.split("/")[0]][0])
    assert model.forward_head(feats, pre_logits=True).shape == (3, feats.shape[-1])
    assert model(x).shape == (3, 7)


@pytest.mark.parametrize(("options", "prefix", "pos_rows"), [
    (dict(reg_tokens=4), 5, 5 + 16),  # [CLS] + 4 registers, all with position embeddings
    (dict(reg_tokens=4, no_embed_class=True), 5, 16),  # the patches only
    (dict(class_token=False, global_pool="avg"), 0, 16),
])
def test_prefix_tokens_position_embeddings_and_pooling(options, prefix, pos_rows):
    model = build_vit("Ti/4", img_size=16, num_classes=3, depth=1, **options).eval()
    for p in model.parameters():  # not the zero head and tiny tokens of the init
        torch.nn.init.normal_(p)
    x = torch.randn(2, 3, 16, 16)
    feats = model.forward_features(x)
    assert model.cfg.num_prefix_tokens == prefix and model.pos_embed.shape[1] == pos_rows
    assert feats.shape == (2, prefix + 16, 192)
    pooled = model.forward_head(feats, pre_logits=True)
    if model.cfg.global_pool == "token":
        torch.testing.assert_close(pooled, feats[:, 0])
    else:  # the LayerNorm after pooling (fc_norm), the final norm an identity
        assert isinstance(model.norm, torch.nn.Identity)
        torch.testing.assert_close(pooled, model.fc_norm(feats[:, prefix:].mean(1)))


def test_options_init_as_timm():
    model = build_vit("Ti/4", img_size=16, num_classes=3, depth=2, reg_tokens=4, layer_scale=1e-5,
                      pre_norm=True, qkv_bias=False)
    assert model.reg_token.abs().max() < 1e-4 and model.reg_token.abs().max() > 0
    assert torch.equal(model.blocks[1].ls2.gamma, torch.full((192,), 1e-5))
    assert model.patch_embed.proj.bias is None and model.blocks[0].attn.qkv.bias is None
    assert torch.equal(model.norm_pre.weight, torch.ones(192))


def test_head_is_zero_initialised_and_backbone_is_not():
    model = build_vit("Ti/4", img_size=16, num_classes=5, depth=1)
    assert torch.count_nonzero(model.head.weight) == 0
    assert torch.count_nonzero(model.head.bias) == 0
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.3)
    head_ids = {id(p) for p in model.head_parameters()}
    assert head_ids.isdisjoint(id(p) for p in model.backbone_parameters())
    assert len(model.backbone_parameters()) + len(model.head_parameters()) == len(
        list(model.parameters())
    )


def test_grayscale_and_headless_models():
    model = build_vit("custom", img_size=28, patch_size=7, in_chans=1, num_classes=0,
                      embed_dim=32, depth=2, num_heads=4)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 32)


def test_stochastic_depth_only_in_training():
    model = build_vit("Ti/4", img_size=16, num_classes=3, depth=4, drop_path=0.5)
    for p in model.head.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(8, 3, 16, 16)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))


def test_drop_path_matches_timm_bitwise():
    """Whole samples dropped, the kept ones scaled by 1/keep; the same draws and the same
    arithmetic as timm's DropPath (the mask is scaled, not the activations)."""
    from timm.layers import DropPath as TimmDropPath

    from pipeline.models.vit import DropPath

    x = torch.randn(512, 5, 8)
    ours, ref = DropPath(0.25).train(), TimmDropPath(0.25).train()
    torch.manual_seed(0)
    a = ours(x)
    torch.manual_seed(0)
    assert torch.equal(a, ref(x))
    kept = (a != 0).flatten(1).all(1)
    assert torch.equal(kept, (a != 0).flatten(1).any(1))  # per sample: all or nothing
    torch.testing.assert_close(a[kept], x[kept] / 0.75)
    assert 0.15 < 1 - kept.float().mean().item() < 0.35


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(img_size=30, patch_size=16), "img_size=30 is not divisible by patch_size=16"),
        (dict(embed_dim=100, num_heads=3), "embed_dim=100 is not divisible by num_heads=3"),
        (dict(drop_path=1.0), "drop_path must be in [0, 1)"),
        (dict(depth=0), "depth must be >= 1"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps must be in (0, 1), got 0.0"),
        (dict(class_token=False), "global_pool='token' needs class_token=True"),
        (dict(global_pool="map"), "global_pool must be one of ('token', 'avg'), got 'map'"),
        (dict(act="relu"), "act must be one of ('gelu', 'quick_gelu', 'gelu_tanh'), got 'relu'"),
        (dict(reg_tokens=-1), "reg_tokens must be >= 0, got -1"),
        (dict(layer_scale=0.0), "layer_scale must be > 0 (or None: off), got 0.0"),
    ],
)
def test_bad_configs_fail_early_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ViTConfig(**kwargs)


@pytest.mark.parametrize("bad", ["X/16", "B16", "B/", "b/16", "B/p"])
def test_unknown_variant_names_the_value(bad):
    with pytest.raises(ValueError, match="unknown ViT variant"):
        parse_variant(bad)


def test_variant_overrides_and_unknown_keys():
    cfg = variant_config("S/4", img_size=32, num_classes=10, drop_path=0.1)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio) == (384, 12, 6, 4.0)
    assert (cfg.img_size, cfg.patch_size, cfg.num_classes) == (32, 4, 10)
    with pytest.raises(ValueError, match="unknown ViT config keys"):
        variant_config("S/4", width=3)


def test_wrong_input_resolution_is_a_clear_error():
    model = build_vit("Ti/4", img_size=16, num_classes=2, depth=1)
    with pytest.raises(ValueError, match="input is 32x32 but the model was built for 16x16"):
        model(torch.randn(1, 3, 32, 32))
