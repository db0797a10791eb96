"""params.yaml schema: every shipped params file is valid; bad input names key, value, rule."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_params, parse_params
from pipeline.errors import ParamsError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["params.yaml", "params.quick.yaml", "params.study.yaml",
                                  "params.fmnist.yaml"])
def test_shipped_params_files_are_valid(name):
    params = load_params(ROOT / name)
    sections = [*params.scratch.values(), *params.finetune.values(),
                *(p.pretrain for p in params.pretrained.values() if p.pretrain is not None)]
    assert len(params.variants) >= (1 if name == "params.fmnist.yaml" else 2)
    # test-time augmentation is on; a mirrored digit is no digit, so never flipped
    digits = params.base.dataset == "digits"
    assert params.evaluate.tta is not None and params.evaluate.tta.hflip is not digits
    for section in sections:
        section.model.vit_config(num_classes=10)  # buildable


def _real() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _error(mutate) -> str:
    data = copy.deepcopy(_real())
    mutate(data)
    with pytest.raises(ParamsError) as err:
        parse_params(data, "params.yaml")
    return str(err.value)


def test_unknown_key_is_a_typo_error_with_its_path():
    msg = _error(lambda d: d["finetune"]["finetune_b16"]["train"].update(epcohs=3))
    assert "finetune.finetune_b16.train.epcohs: unknown key (typo?); value 3" in msg


def test_missing_key_is_an_error_not_a_silent_default():
    msg = _error(lambda d: d["finetune"]["finetune_b16"].pop("freeze_epochs"))
    assert "finetune.finetune_b16.freeze_epochs: missing; a required key" in msg


@pytest.mark.parametrize("drop", [lambda d: d["prepare"].pop("budgets"), lambda d: d.pop("tune"),
                                  lambda d: d["tune"].pop("finetune"),
                                  lambda d: d["base"].pop("seeds")])
def test_what_dvc_yaml_expands_from_is_required(drop):
    """dvc.yaml's matrices read prepare.budgets, tune.scratch and tune.finetune, and its training
    stages depend on base.seeds, from the file itself: a default in the schema would pass the
    check and fail in DVC."""
    assert "missing; a required key" in _error(drop)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["finetune"]["finetune_b16"]["train"]["optimizer"].update(lr=-0.1),
         "finetune.finetune_b16.train.optimizer.lr: Input should be greater than 0; got -0.1"),
        (lambda d: d["base"].update(dataset="mnist"),
         "base.dataset: Input should be 'cifar10', 'cifar100', 'fashion_mnist' or 'digits'; "
         "got 'mnist'"),
        (lambda d: d["scratch"]["scratch_ti4"]["model"].update(img_size=30),
         "scratch.scratch_ti4.model: img_size=30 is not divisible by patch_size=4"),
        (lambda d: d["scratch"]["scratch_ti4"]["model"].update(variant="custom", patch_size=4,
                                                                 embed_dim=192, depth=2,
                                                                 num_heads=5),
         "scratch.scratch_ti4.model: embed_dim=192 is not divisible by num_heads=5"),
        (lambda d: d["finetune"]["finetune_b16"]["model"].update(variant="X/16"),
         "finetune.finetune_b16.model: unknown ViT variant 'X/16'"),
        (lambda d: d["finetune"]["finetune_b16"].update(freeze_epochs=10),
         "finetune.finetune_b16: freeze_epochs=10 must be < train.epochs=10"),
        (lambda d: d["base"].update(seed=-1),
         "base.seed: Input should be greater than or equal to 0; got -1"),
        (lambda d: d["evaluate"].update(registered_model="my model"),
         "evaluate.registered_model: String should match pattern"),
        (lambda d: d["base"]["trainer"].update(precision="fp8"),
         "base.trainer.precision: Input should be 'bf16-mixed', '16-mixed', '32-true' or "
         "'bf16-true'; got 'fp8'"),
        (lambda d: d["base"]["trainer"].update(strategy="dpp"),
         "base.trainer: strategy 'dpp' is not a Lightning strategy; one of ['auto', 'ddp',"),
        (lambda d: d["base"]["trainer"].update(strategy="fsdp", accelerator="cpu"),
         "base.trainer: strategy 'fsdp' needs CUDA GPUs (FSDP has no CPU path), not "
         "accelerator 'cpu'; use ddp"),
        (lambda d: d["base"]["trainer"].update(compile="max-autotune"),
         "base.trainer.compile: Input should be a valid boolean"),
        (lambda d: d["pretrained"]["b16_in21k"].update(source="file"),
         "pretrained.b16_in21k: source 'file' needs path"),
        (lambda d: d["pretrained"]["b16_in21k"].update(pretrain={"dataset": "digits"}),
         "pretrained.b16_in21k.pretrain.val_fraction: missing; a required key"),
        (lambda d: d["finetune"]["finetune_b16"].update(pretrained="b16_in1k"),
         "finetune.finetune_b16.pretrained: 'b16_in1k' is not a key of pretrained "
         "(['b16_in21k', 's16_in21k'])"),
        (lambda d: d["finetune"].update(scratch_ti4=d["finetune"]["finetune_b16"]),
         "variant names must be unique; in scratch and finetune: ['scratch_ti4']"),
        (lambda d: d["scratch"].update({"ti 4": d["scratch"]["scratch_ti4"]}),
         "scratch.ti 4.[key]: String should match pattern"),
        (lambda d: d["scratch"]["scratch_ti4"]["augment"].update(randaugment={"num_ops": 2}),
         "scratch.scratch_ti4.augment.randaugment.magnitude: missing; a required key"),
        (lambda d: d["scratch"]["scratch_ti4"]["train"].update(ema_decay=1.0),
         "scratch.scratch_ti4.train.ema_decay: Input should be less than 1"),
        (lambda d: d.update(scratch={}, finetune={}),
         "no variants: scratch and finetune are both empty"),
        (lambda d: d["finetune"]["finetune_b16"]["model"].update(std=[0.5, 0.0, 0.5]),
         "finetune.finetune_b16.model.std.1: Input should be greater than 0; got 0.0"),
        (lambda d: d["finetune"]["finetune_b16"]["model"].update(mean=[0.5, 0.5]),
         "finetune.finetune_b16.model.mean.2: Field required; got [0.5, 0.5]"),
        (lambda d: d["finetune"]["finetune_b16"].update(layer_decay=1.5),
         "finetune.finetune_b16.layer_decay: Input should be less than or equal to 1; got 1.5"),
        (lambda d: d["scratch"]["scratch_ti4"].update(layer_decay=0.7),
         "scratch.scratch_ti4.layer_decay: unknown key (typo?); value 0.7"),
        (lambda d: d["scratch"]["scratch_ti4"]["train"].update(accumulate_grad_batches=0),
         "scratch.scratch_ti4.train.accumulate_grad_batches: Input should be greater than 0; "
         "got 0"),
        (lambda d: d["scratch"]["scratch_ti4"]["augment"].update(repeats=1.5),
         "scratch.scratch_ti4.augment.repeats: Input should be a valid integer"),
        (lambda d: d["evaluate"]["tta"].update(hflip=False, shift=0),
         "evaluate.tta: hflip false and shift 0 leave only the plain image: set tta: null to "
         "turn test-time augmentation off"),
        (lambda d: d["evaluate"]["tta"].update(shift=-1),
         "evaluate.tta.shift: Input should be greater than or equal to 0; got -1"),
        (lambda d: d["evaluate"]["tta"].update(flip=True),
         "evaluate.tta.flip: unknown key (typo?); value True"),
        (lambda d: d["evaluate"].update(tta="hflip"),
         "evaluate.tta: Input should be a valid dictionary or instance of TTAParams; "
         "got 'hflip'"),
    ],
)
def test_bad_values_name_key_value_and_rule(mutate, expected):
    assert expected in _error(mutate)


def test_all_errors_reported_at_once():
    def two(d):
        d["base"]["seed"] = "x"
        d["evaluate"]["batch_size"] = 0
    msg = _error(two)
    assert msg.startswith("params.yaml: 2 invalid param(s):")
    assert "base.seed" in msg and "evaluate.batch_size" in msg


def test_unreadable_files(tmp_path):
    with pytest.raises(ParamsError, match=re.escape(f"{tmp_path / 'nope.yaml'}: no such params")):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: [unclosed")
    with pytest.raises(ParamsError, match="bad.yaml: not valid YAML"):
        load_params(bad)


def test_variant_lookup_names_the_known_variants():
    params = load_params(ROOT / "params.yaml")
    assert params.variant("finetune_b16")[0] == "finetune"
    assert params.variants == ["scratch_ti4", "scratch_s4", "finetune_s16", "finetune_b16"]
    with pytest.raises(ParamsError, match=r"no variant 'b16'.*finetune: \['finetune_b16'"):
        params.variant("b16")


def test_group_key_follows_training_params_not_evaluation():
    data = _real()
    key = parse_params(data).group_key()
    data["evaluate"]["batch_size"] = 64
    assert parse_params(data).group_key() == key
    data["scratch"]["scratch_s4"]["train"]["epochs"] = 30
    assert parse_params(data).group_key() != key


def test_rarely_set_keys_take_schema_defaults():
    d = copy.deepcopy(_real())
    ft = d["finetune"]["finetune_b16"]
    ft["model"] = {"variant": "B/16", "img_size": 384}  # sizes, dropouts: the variant's / 0
    ft["train"]["optimizer"] = {"name": "sgd", "lr": 0.01}  # momentum 0.9, no weight decay
    del ft["train"]["ema_decay"], ft["train"]["label_smoothing"]
    ft["augment"] = {"crop_padding": 4, "hflip": True}  # no RandAugment, erasing, mixing
    p = parse_params(d).finetune["finetune_b16"]
    assert p.model.vit_config(num_classes=10).embed_dim == 768
    assert p.model.drop_path == 0.0 and p.train.ema_decay is None
    assert p.train.label_smoothing == 0.0
    assert (p.train.optimizer.momentum, p.train.optimizer.weight_decay) == (0.9, 0.0)
    assert not hasattr(p.train.optimizer, "betas")
    assert p.augment.randaugment is None and p.augment.mix_prob == 0.0
    assert p.backbone().freeze_epochs == ft["freeze_epochs"]


def test_test_time_augmentation_is_off_unless_asked_for():
    d = copy.deepcopy(_real())
    del d["evaluate"]["tta"]  # a params file from before TTA
    assert parse_params(d).evaluate.tta is None
    d["evaluate"]["tta"] = {}
    tta = parse_params(d).evaluate.tta
    assert (tta.hflip, tta.shift) == (True, 0)
    d["evaluate"]["tta"] = {"hflip": False, "shift": 2}
    assert parse_params(d).evaluate.tta.shift == 2


def test_an_optimizer_holds_only_its_own_fields():
    msg = _error(lambda d: d["scratch"]["scratch_ti4"]["train"]["optimizer"].update(momentum=0.9))
    assert "scratch.scratch_ti4.train.optimizer.momentum: unknown key (typo?)" in msg
    msg = _error(lambda d: d["scratch"]["scratch_ti4"]["train"]["optimizer"].update(name="lion"))
    assert "scratch.scratch_ti4.train.optimizer" in msg and "'lion'" in msg


def _overlay_params(name: str):
    """params.yaml with ``overlays/<name>`` merged in by ``python -m pipeline.config.overlay``'s
    code, parsed."""
    from pipeline.config.overlay import merge

    text = merge((ROOT / "params.yaml").read_text(), (ROOT / "overlays" / name).read_text(),
                 source=f"overlays/{name}")
    return parse_params(yaml.safe_load(text), f"params.yaml + overlays/{name}")


def test_the_vit_l16_overlay_is_valid_params():
    """overlays/vit_l16.yaml, merged into params.yaml, is a valid study with one more fine-tune
    variant: ViT-L/16 at 224 from its own weights source."""
    import torch

    from pipeline.models import VisionTransformer

    params = _overlay_params("vit_l16.yaml")
    l16 = params.finetune["finetune_l16"]
    assert params.pretrained[l16.pretrained].hub_id.startswith("timm/vit_large_patch16_224.")
    cfg = l16.model.vit_config(num_classes=10)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size) == (1024, 24, 16, 16)
    with torch.device("meta"):
        assert sum(p.numel() for p in VisionTransformer(cfg).parameters()) == 303_311_882


def test_the_which_pretraining_overlay_fits_its_hub_models():
    """overlays/which_pretraining.yaml, merged into params.yaml, is valid params, and each
    of its fine-tune variants fits the architecture of its hub id: timm's model of that name,
    full size on the meta device, goes through our loader (its position embeddings resampled to
    the variant's 224 px) without a complaint."""
    import timm
    import torch

    from pipeline.models.mapping import timm_to_ours

    params = _overlay_params("which_pretraining.yaml")
    for variant in ("finetune_b16_clip", "finetune_b14_dinov2"):
        ft = params.finetune[variant]
        hub_id = params.pretrained[ft.pretrained].hub_id
        with torch.device("meta"):
            ref = timm.create_model(hub_id.removeprefix("timm/").split(".")[0], pretrained=False)
            state = timm_to_ours(ref.state_dict(), ft.model.vit_config(num_classes=10))
        assert state["pos_embed"].shape[1] == ft.model.vit_config(num_classes=10).num_patches \
            + (0 if ft.model.no_embed_class else 1), variant


@pytest.mark.parametrize(("update", "expected"), [
    (dict(global_pool="map"), "model.global_pool: Input should be 'token' or 'avg'; got 'map'"),
    (dict(class_token=False), "model: global_pool='token' needs class_token=True; a model "
                              "without a class token pools with global_pool='avg'"),
    (dict(reg_tokens=-1), "model.reg_tokens: Input should be greater than or equal to 0; got -1"),
    (dict(layer_scale=0), "model.layer_scale: Input should be greater than 0; got 0"),
    (dict(act="relu"),
     "model.act: Input should be 'gelu', 'quick_gelu' or 'gelu_tanh'; got 'relu'"),
    (dict(layer_norm_eps=1.0), "model.layer_norm_eps: Input should be less than 1; got 1.0"),
    (dict(qkv_bias="maybe"), "model.qkv_bias: Input should be a valid boolean"),
    (dict(fc_norm="yes please"), "model.fc_norm: Input should be a valid boolean"),
    (dict(pool="avg"), "model.pool: unknown key (typo?); value 'avg'"),
])
def test_model_options_of_the_checkpoint_families_are_checked(update, expected):
    msg = _error(lambda d: d["scratch"]["scratch_ti4"]["model"].update(update))
    assert f"scratch.scratch_ti4.{expected}" in msg, msg
    assert len(msg.splitlines()) == 2  # the header, then one line


def test_model_options_default_to_the_papers_vit_and_reach_the_config():
    from pipeline.models import ViTConfig

    p = parse_params(_real()).scratch["scratch_ti4"]
    paper = ViTConfig()
    cfg = p.model.vit_config(num_classes=10)
    for key in ("class_token", "global_pool", "fc_norm", "reg_tokens", "no_embed_class",
                "layer_scale", "pre_norm", "qkv_bias", "act", "layer_norm_eps"):
        assert getattr(cfg, key) == getattr(paper, key) == getattr(p.model, key), key
    d = copy.deepcopy(_real())  # DINOv2 with registers at 224 px, as a fine-tune model section
    d["finetune"]["finetune_b16"]["model"] = {
        "variant": "B/14", "img_size": 224, "reg_tokens": 4, "no_embed_class": True,
        "layer_scale": 1e-5}
    cfg = parse_params(d).finetune["finetune_b16"].model.vit_config(num_classes=10)
    assert (cfg.reg_tokens, cfg.no_embed_class, cfg.layer_scale, cfg.patch_size) == \
        (4, True, 1e-5, 14)
    d["finetune"]["finetune_b16"]["model"] = {  # OpenAI CLIP
        "variant": "B/16", "img_size": 224, "pre_norm": True, "act": "quick_gelu",
        "layer_norm_eps": 1e-5}
    cfg = parse_params(d).finetune["finetune_b16"].model.vit_config(num_classes=10)
    assert (cfg.pre_norm, cfg.act, cfg.layer_norm_eps, cfg.fc_norm) == \
        (True, "quick_gelu", 1e-5, None)


@pytest.mark.parametrize("name", sorted(p.name for p in ROOT.glob("params*.yaml")))
def test_every_key_dvc_yaml_interpolates_is_written_in_each_params_file(name):
    """DVC fills dvc.yaml's ${...} and reads each stage's params deps from the params file as
    written, not from the schema's defaults: each must be there, or `dvc repro` stops."""
    text = (ROOT / "dvc.yaml").read_text()
    refs = set(re.findall(r"\$\{([a-z_.]+)\}", text))  # the matrices' and commands' values
    for stage in yaml.safe_load(text)["stages"].values():  # and each stage's params deps
        refs |= {p for p in stage.get("params", []) if isinstance(p, str) and "${" not in p}
    refs = {r for r in refs if not r.startswith(("item.", "key"))}
    assert refs, "dvc.yaml interpolates no params?"
    raw = yaml.safe_load((ROOT / name).read_text())
    for ref in sorted(refs):
        node = raw
        for part in ref.split("."):
            assert isinstance(node, dict) and part in node, f"{name}: {ref} is not written"
            node = node[part]
