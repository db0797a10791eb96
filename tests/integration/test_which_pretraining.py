"""Which pretraining? Several pretrained sources for the same model size, each a fine-tune
variant, compared by ``evaluate`` like any other variants.

Offline: the sources are random timm models of three families (supervised augreg-style, OpenAI
CLIP-style with pre-norm and quick-GELU, DINOv2-style with LayerScale and registers), written as
safetensors files and named as ``pretrained.<name>: {source: file}``; nothing is downloaded. The
stages run in this process, as DVC would run them: ``pretrained`` for each source, ``train`` for
one cell of each variant on the prepared digits, then ``evaluate``. Each fine-tune variant's
model section sets its family's fields and input normalisation, and its model file keeps them.
"""

import json
from types import SimpleNamespace

import pytest
import timm
import torch
from conftest import make_tiny_params
from safetensors.torch import save_file

from pipeline.config import parse_params
from pipeline.errors import CheckpointError
from pipeline.models import load_model_file
from pipeline.stages import evaluate as evaluate_stage
from pipeline.stages import pretrained as pretrained_stage
from pipeline.stages import train as train_stage

SIZE = {"embed_dim": 32, "depth": 2, "num_heads": 2}
CLIP_NORM = {"mean": [0.48145466, 0.4578275, 0.40821073],
             "std": [0.26862954, 0.26130258, 0.27577711]}
IMAGENET_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# source: (timm model, its native size, our model fields, the normalisation its weights expect)
SOURCES = {
    "b_sup": ("vit_base_patch16_224", 32, {"patch_size": 16}, {}),
    "b_clip": ("vit_base_patch16_clip_quickgelu_224", 32,
               {"patch_size": 16, "pre_norm": True, "act": "quick_gelu", "layer_norm_eps": 1e-5},
               CLIP_NORM),
    "b_dino": ("vit_base_patch14_reg4_dinov2", 28,
               {"patch_size": 14, "layer_scale": 1e-5, "reg_tokens": 4, "no_embed_class": True},
               IMAGENET_NORM),
}


def _write_random(name: str, img_size: int, path) -> None:
    model = timm.create_model(name, pretrained=False, img_size=img_size, num_classes=7, **SIZE)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def _params(tmp_path) -> dict:
    p = make_tiny_params()
    template = p["finetune"]["finetune"]
    p["pretrained"], p["finetune"] = {}, {}
    for name, (timm_name, size, fields, norm) in SOURCES.items():
        path = tmp_path / f"{name}.safetensors"
        _write_random(timm_name, size, path)
        p["pretrained"][name] = {"source": "file", "path": str(path)}
        model = {"variant": "custom", "img_size": 2 * fields["patch_size"], "mlp_ratio": 4.0,
                 **SIZE, **fields, **norm}
        p["finetune"][f"finetune_{name}"] = {**template, "pretrained": name, "model": model}
        p["finetune"][f"finetune_{name}"]["train"] = {**template["train"], "epochs": 2}
    p["scratch"]["scratch"]["train"]["epochs"] = 2
    return p


@pytest.fixture(scope="module")
def study(tmp_path_factory, digits_dir, digits_test_dir):
    root = tmp_path_factory.mktemp("which")
    raw = _params(root)
    params = parse_params(raw)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        m.chdir(root)
        for name in SOURCES:
            pretrained_stage.run(params, SimpleNamespace(name=name, raw="raw",
                                                         out=f"models/pretrained/{name}"))
        for variant in params.variants:
            train_stage.run(params, SimpleNamespace(
                variant=variant, data=str(digits_dir), out=f"models/{variant}/all/seed0",
                pretrained=None, fresh=False, seed=0, budget="all"))
        evaluate_stage.run(params, SimpleNamespace(test=str(digits_test_dir), models="models",
                                                   out="results"))
    return SimpleNamespace(root=root, params=params, raw=raw)


def test_each_source_is_a_variant_compared_with_scratch(study):
    gains = json.loads((study.root / "results" / "study.json").read_text())["gain"]
    assert sorted(gains) == sorted(f"finetune_{n}-scratch" for n in SOURCES)
    for per_budget in gains.values():
        assert per_budget["all"]["seeds"] == [0]  # one seed: a bootstrap interval, said so
        assert per_budget["all"]["method"] == "bootstrap"
    report = (study.root / "results" / "report" / "report.md").read_text()
    for name in SOURCES:
        assert f"finetune_{name} − scratch" in report


@pytest.mark.parametrize("name", list(SOURCES))
def test_the_model_file_keeps_the_family_and_its_normalisation(study, name):
    _, _, fields, norm = SOURCES[name]
    trained = load_model_file(study.root / "models" / f"finetune_{name}" / "all" / "seed0"
                              / "model.safetensors")
    cfg = trained.cfg
    for key, value in fields.items():
        assert getattr(cfg, key) == value, key
    pre = trained.classifier.preprocess.to_dict()
    want = norm or {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert pre["mean"] == pytest.approx(want["mean"]) and pre["std"] == pytest.approx(want["std"])


def test_a_family_left_unset_is_named_by_the_pretrained_stage(study, tmp_path):
    raw = json.loads(json.dumps(study.raw))
    model = raw["finetune"]["finetune_b_clip"]["model"]
    del model["pre_norm"]  # a CLIP checkpoint, a variant without CLIP's pre-norm
    params = parse_params(raw)
    with pytest.raises(CheckpointError) as e:
        pretrained_stage.run(params, SimpleNamespace(name="b_clip", raw="raw",
                                                     out=str(tmp_path / "clip")))
    first = str(e.value).splitlines()[0]
    assert "finetune.finetune_b_clip" in first and "pre_norm" in first, first
