"""params.yaml schema: every shipped params file is valid; bad input names key, value, rule."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["params.yaml", "params.quick.yaml"])
def test_shipped_params_files_are_valid(name):
    params = load_params(ROOT / name)
    for section in (params.train_scratch, params.finetune, params.pretrained.pretrain):
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
    msg = _error(lambda d: d["finetune"]["train"].update(epcohs=3))
    assert "finetune.train.epcohs: unknown key (typo?); value 3" in msg


def test_missing_key_is_an_error_not_a_silent_default():
    msg = _error(lambda d: d["finetune"].pop("freeze_epochs"))
    assert "finetune.freeze_epochs: Field required" in msg


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["finetune"]["train"]["optimizer"].update(lr=-0.1),
         "finetune.train.optimizer.lr: Input should be greater than 0; got -0.1"),
        (lambda d: d["base"].update(dataset="mnist"),
         "base.dataset: Input should be 'cifar10', 'cifar100', 'fashion_mnist' or 'digits'; "
         "got 'mnist'"),
        (lambda d: d["train_scratch"]["model"].update(img_size=30),
         "train_scratch.model: img_size=30 is not divisible by patch_size=4"),
        (lambda d: d["train_scratch"]["model"].update(num_heads=5),
         "train_scratch.model: embed_dim=192 is not divisible by num_heads=5"),
        (lambda d: d["finetune"]["model"].update(variant="X/16"),
         "finetune.model: unknown ViT variant 'X/16'"),
        (lambda d: d["finetune"].update(freeze_epochs=7),
         "finetune: freeze_epochs=7 must be < train.epochs=7"),
        (lambda d: d["base"].update(seed=-1),
         "base.seed: Input should be greater than or equal to 0; got -1"),
        (lambda d: d["evaluate"].update(registered_model="my model"),
         "evaluate.registered_model: String should match pattern"),
        (lambda d: d["base"]["trainer"].update(precision="fp8"),
         "base.trainer.precision: Input should be 'bf16-mixed', '16-mixed', '32-true' or "
         "'bf16-true'; got 'fp8'"),
        (lambda d: d["pretrained"].update(source="file"),
         "pretrained: source 'file' needs pretrained.path"),
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
