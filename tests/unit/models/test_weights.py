"""Pretrained loading: timm checkpoints (safetensors) give our model the same logits."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from pipeline.models import (
    CheckpointError,
    build_vit,
    load_pretrained,
    read_checkpoint,
    resize_pos_embed,
    save_model_file,
    timm_to_ours,
)

TIMM_NAMES = {"Ti/16": "vit_tiny_patch16_224", "S/16": "vit_small_patch16_224",
              "B/16": "vit_base_patch16_224"}


def random_timm(name: str, img_size: int, num_classes: int, depth: int | None = None):
    kw = {"depth": depth} if depth else {}
    model = timm.create_model(name, pretrained=False, img_size=img_size,
                              num_classes=num_classes, **kw).eval()
    with torch.no_grad():  # timm zero-inits the head and biases: randomise everything
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model


@pytest.mark.parametrize("variant", list(TIMM_NAMES))
@pytest.mark.parametrize("img_size", [32, 64])
def test_timm_safetensors_gives_same_logits(tmp_path, variant, img_size):
    torch.manual_seed(0)
    depth = 2 if variant == "B/16" else None  # B/16's width at 2 blocks keeps the test fast
    ref = random_timm(TIMM_NAMES[variant], img_size, 10, depth)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = build_vit(variant, img_size=img_size, num_classes=10,
                     **({"depth": depth} if depth else {})).eval()
    load_pretrained(ours, path, keep_head=True)
    x = torch.randn(4, 3, img_size, img_size)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-4


def test_new_class_count_gets_zero_head_and_same_features():
    ref = random_timm("vit_tiny_patch16_224", 32, 1000, depth=2)
    ours = build_vit("Ti/16", img_size=32, num_classes=10, depth=2).eval()
    ours.load_state_dict(timm_to_ours(ref.state_dict(), ours.cfg))
    assert torch.count_nonzero(ours.head.weight) == 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_head(ours.forward_features(x), pre_logits=True),
                                   ref.forward_head(ref.forward_features(x), pre_logits=True),
                                   atol=1e-4, rtol=0)


def test_same_class_count_still_gets_a_fresh_head_unless_kept():
    ref = random_timm("vit_tiny_patch16_224", 32, 10, depth=1)
    cfg = build_vit("Ti/16", img_size=32, num_classes=10, depth=1).cfg
    assert torch.count_nonzero(timm_to_ours(ref.state_dict(), cfg)["head.weight"]) == 0
    kept = timm_to_ours(ref.state_dict(), cfg, keep_head=True)["head.weight"]
    assert torch.equal(kept, ref.head.weight)


def test_headless_checkpoint_loads():  # e.g. vit_base_patch16_224.orig_in21k
    ref = random_timm("vit_tiny_patch16_224", 32, 0, depth=1)
    ours = build_vit("Ti/16", img_size=32, num_classes=3, depth=1)
    ours.load_state_dict(timm_to_ours(ref.state_dict(), ours.cfg))


def test_pos_embed_resize_matches_timm():
    ref_small = random_timm("vit_tiny_patch16_224", 32, 10, depth=1)  # 2x2 grid
    ref_big = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                                num_classes=10, depth=1).eval()
    # timm's own loader resizes the 2x2 grid to 4x4 when it loads
    from timm.models.vision_transformer import checkpoint_filter_fn
    ref_big.load_state_dict(checkpoint_filter_fn(ref_small.state_dict(), ref_big))
    ours = build_vit("Ti/16", img_size=64, num_classes=10, depth=1).eval()
    ours.load_state_dict(timm_to_ours(ref_small.state_dict(), ours.cfg, keep_head=True))
    assert ours.pos_embed.shape == (1, 17, 192)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - ref_big(x)).abs().max().item() <= 1e-4


def test_resize_pos_embed_keeps_cls_and_is_identity_on_same_grid():
    pe = torch.randn(1, 1 + 9, 8)
    assert resize_pos_embed(pe, 3) is pe
    out = resize_pos_embed(pe, 5)
    assert out.shape == (1, 26, 8)
    assert torch.equal(out[:, 0], pe[:, 0])


def test_mismatched_checkpoint_lists_keys_and_shapes():
    ref = random_timm("vit_small_patch16_224", 32, 10, depth=2)
    state = ref.state_dict()
    state["blocks.0.extra.weight"] = torch.zeros(1)
    del state["blocks.1.mlp.fc2.bias"]
    ours = build_vit("Ti/16", img_size=32, num_classes=10, depth=2)
    with pytest.raises(CheckpointError) as err:
        timm_to_ours(state, ours.cfg)
    msg = str(err.value)
    assert "missing keys (1): ['blocks.1.mlp.fc2.bias']" in msg
    assert "unexpected keys (1): ['blocks.0.extra.weight']" in msg
    assert "shape clashes (" in msg
    assert "blocks.0.attn.proj.bias: checkpoint (384,) vs model (192,)" in msg


def test_our_export_loads_back_and_into_timm(tmp_path):
    ours = build_vit("Ti/16", img_size=32, num_classes=4, depth=2).eval()
    for p in ours.head.parameters():
        torch.nn.init.normal_(p)
    path = save_model_file(ours, tmp_path / "sub" / "w.safetensors")
    assert not list(path.parent.glob(".*tmp*"))
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                            num_classes=4, depth=2).eval()
    ref.load_state_dict(read_checkpoint(path))
    again = load_pretrained(build_vit("Ti/16", img_size=32, num_classes=4, depth=2).eval(), path,
                            keep_head=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (ref(x) - ours(x)).abs().max().item() <= 1e-5
        assert torch.equal(again(x), ours(x))


def test_lightning_and_compiled_prefixes_are_stripped(tmp_path):
    ours = build_vit("Ti/16", img_size=16, num_classes=2, depth=1)
    wrapped = {"state_dict": {f"model._orig_mod.{k}": v for k, v in ours.state_dict().items()}}
    torch.save(wrapped, tmp_path / "x.ckpt")
    load_pretrained(build_vit("Ti/16", img_size=16, num_classes=2, depth=1), tmp_path / "x.ckpt")


def test_unreadable_and_missing_checkpoints_name_the_file(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "nope.safetensors")


def test_unreachable_hub_names_the_id_and_the_quick_run(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(CheckpointError, match=r"timm/some-vit.*make quick"):
        read_checkpoint("timm/some-vit")
