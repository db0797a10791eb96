"""The trained-model file (pipeline/models/model_file.py): what ``save_model_file`` writes,
``load_model_file`` gives back whole (same logits, classes, info, preprocessing); anything else
is refused in one line naming the file; and the weights, under timm's names, load in timm."""

import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from pipeline.errors import CheckpointError
from pipeline.layout import MODEL_FILE
from pipeline.models import (
    DevicePreprocess,
    ImageClassifier,
    VisionTransformer,
    ViTConfig,
    build_vit,
    load_model_file,
    save_model_file,
)

CLASSES = ["cat", "dog", "frog", "ship"]
CFG = ViTConfig(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                num_classes=len(CLASSES))


def _classifier(cfg: ViTConfig = CFG, preprocess: DevicePreprocess | None = None):
    torch.manual_seed(0)
    vit = VisionTransformer(cfg)
    with torch.no_grad():  # not the zero head: the logits differ per class
        torch.nn.init.normal_(vit.head.weight, std=0.5)
        torch.nn.init.normal_(vit.head.bias, std=0.5)
    return ImageClassifier(vit, preprocess).eval()


def _images(n=3, size=8, chans=1):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, size, size, chans), dtype=torch.uint8, generator=g)


def _one_line_error(path, match: str) -> str:
    with pytest.raises(CheckpointError) as e:
        load_model_file(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and match in msg, msg
    return msg


def test_round_trip_gives_the_same_logits_classes_info_and_preprocessing(tmp_path):
    pre = DevicePreprocess(16, 3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    ours = _classifier(preprocess=pre)
    info = {"variant": "scratch", "run_id": "abc", "best_val_acc": 0.5, "params": {"lr": 1e-3}}
    path = save_model_file(ours, tmp_path / "sub" / MODEL_FILE, classes=CLASSES, info=info)
    assert path == tmp_path / "sub" / MODEL_FILE
    assert [p.name for p in path.parent.iterdir()] == [MODEL_FILE]  # no temporary file left

    trained = load_model_file(path)
    assert trained.cfg == CFG and trained.classes == CLASSES and trained.info == info
    assert trained.classifier.preprocess.to_dict() == pre.to_dict()
    assert not trained.classifier.training
    images = _images()  # 8x8 gray: expanded and resized by the preprocessing
    with torch.no_grad():
        assert torch.equal(trained.classifier(images), ours(images))
        # a list of images of different sizes too
        mixed = [images[0], _images(1, size=20, chans=3)[0]]
        assert torch.equal(trained.classifier(mixed), ours(mixed))


def test_a_vit_alone_is_saved_with_its_config_and_the_default_preprocessing(tmp_path):
    vit = _classifier().vit
    trained = load_model_file(save_model_file(vit, tmp_path / MODEL_FILE))
    assert trained.cfg == CFG and trained.info == {}
    assert trained.classes == [str(i) for i in range(CFG.num_classes)]
    assert trained.classifier.preprocess.to_dict() == DevicePreprocess(16, 3).to_dict()
    images = _images()
    with torch.no_grad():
        assert torch.equal(trained.classifier(images), ImageClassifier(vit)(images))


@pytest.mark.parametrize("cut", ["empty", "header", "half", "last-byte", "garbage"])
def test_a_truncated_or_corrupt_file_is_refused_in_one_line_naming_it(tmp_path, cut):
    whole = save_model_file(_classifier(), tmp_path / "good.safetensors", classes=CLASSES)
    data = whole.read_bytes()
    damaged = {"empty": b"", "header": data[:6], "half": data[: len(data) // 2],
               "last-byte": data[:-1], "garbage": b"not a safetensors file at all"}[cut]
    path = tmp_path / MODEL_FILE
    path.write_bytes(damaged)
    _one_line_error(path, "is not a readable model file (truncated or corrupt")


def test_a_missing_file_is_named(tmp_path):
    _one_line_error(tmp_path / "models" / MODEL_FILE, "no model file at")


@pytest.mark.parametrize("how", ["save_model_file", "safetensors"])
def test_weights_without_config_metadata_are_not_a_model_file(tmp_path, how):
    """A hub-style weights file (timm's names, no metadata of ours) is pretrained weights, for
    load_pretrained, not a trained model."""
    state = _classifier().vit.state_dict()
    path = tmp_path / MODEL_FILE
    if how == "save_model_file":
        save_model_file(state, path, classes=CLASSES)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    _one_line_error(path, "not a model file of this pipeline")


def test_weights_that_do_not_fit_the_recorded_config_or_classes_are_refused(tmp_path):
    other = build_vit("custom", img_size=16, patch_size=4, embed_dim=48, depth=2, num_heads=2,
                      num_classes=len(CLASSES))
    path = save_model_file(other.state_dict(), tmp_path / MODEL_FILE, config=CFG)
    _one_line_error(path, "the weights do not fit its own config")
    path = save_model_file(_classifier(), tmp_path / "classes.safetensors", classes=CLASSES[:3])
    _one_line_error(path, "3 class names for 4 outputs")


def test_the_model_file_loads_in_timm_with_the_same_logits(tmp_path):
    """The weights are under timm's names: timm's ViT loads the file as any timm checkpoint
    (strict) and gives our logits on the preprocessed input."""
    cfg = build_vit("Ti/16", img_size=32, num_classes=len(CLASSES), depth=2).cfg
    ours = _classifier(cfg)
    path = save_model_file(ours, tmp_path / MODEL_FILE, classes=CLASSES)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                            num_classes=len(CLASSES), depth=2).eval()
    ref.load_state_dict(load_file(str(path)))
    images = _images(4, size=32, chans=3)
    with torch.no_grad():
        assert (ref(ours.preprocess(images)) - ours(images)).abs().max().item() <= 1e-5


def test_fine_tuning_starts_from_a_model_file_of_ours(tmp_path):
    """A trained variant's file is a pretrained checkpoint like any other: the backbone loads
    as it is, the head is new (zero-initialised) for the new task, and the position embeddings
    are resized for another resolution."""
    from pipeline.models import load_pretrained

    source = _classifier()
    path = save_model_file(source, tmp_path / MODEL_FILE, classes=CLASSES)
    for img_size, num_classes in ((16, 7), (24, 7)):
        target = VisionTransformer(ViTConfig(**{**CFG.to_dict(), "img_size": img_size,
                                                "num_classes": num_classes}))
        load_pretrained(target, path)
        want = source.vit.state_dict()
        for k, v in target.state_dict().items():
            if k.startswith("head."):
                assert torch.count_nonzero(v) == 0, k
            elif k == "pos_embed":
                assert v.shape == (1, 1 + (img_size // 4) ** 2, CFG.embed_dim)
                assert torch.equal(v[:, :1], want[k][:, :1])  # [CLS] kept
                if img_size == 16:
                    assert torch.equal(v, want[k])
            else:
                assert torch.equal(v, want[k]), k


# the config keys the checkpoint families added; files written before them have none
NEW_KEYS = ("class_token", "global_pool", "fc_norm", "reg_tokens", "no_embed_class",
            "layer_scale", "pre_norm", "act")


def test_a_model_file_from_before_the_family_options_still_loads(tmp_path):
    """A file whose recorded config lacks the new keys is the paper's ViT it always was."""
    from safetensors import safe_open

    ours = _classifier()
    path = save_model_file(ours, tmp_path / "new.safetensors", classes=CLASSES)
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    old = {k: v for k, v in json.loads(meta["vit_config"]).items() if k not in NEW_KEYS}
    assert set(NEW_KEYS).isdisjoint(old)
    save_file(state, str(tmp_path / MODEL_FILE), metadata={**meta, "vit_config": json.dumps(old)})
    trained = load_model_file(tmp_path / MODEL_FILE)
    assert trained.cfg == CFG
    images = _images()
    with torch.no_grad():
        assert torch.equal(trained.classifier(images), ours(images))


def test_a_model_file_of_another_family_round_trips(tmp_path):
    """Registers, average pooling with fc_norm, LayerScale, a pre-norm, no qkv bias and
    quick-GELU are recorded in the file and rebuilt from it: the same logits."""
    cfg = ViTConfig(**{**CFG.to_dict(), "class_token": False, "global_pool": "avg",
                       "reg_tokens": 2, "no_embed_class": True, "layer_scale": 0.1,
                       "pre_norm": True, "qkv_bias": False, "act": "quick_gelu",
                       "layer_norm_eps": 1e-5})
    ours = _classifier(cfg)
    trained = load_model_file(save_model_file(ours, tmp_path / MODEL_FILE, classes=CLASSES))
    assert trained.cfg == cfg and "reg_token" in trained.classifier.vit.state_dict()
    images = _images()
    with torch.no_grad():
        assert torch.equal(trained.classifier(images), ours(images))
