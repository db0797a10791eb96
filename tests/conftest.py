"""Shared fixtures: every test runs offline, on the CPU, with MLflow in a temporary database."""

import copy
import os

import pytest
import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network

TINY_MODEL = {
    "variant": "custom", "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2,
    "num_heads": 2, "mlp_ratio": 2.0, "dropout": 0.0, "attn_dropout": 0.0, "drop_path": 0.0,
}


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """128 train / 32 val / 40 test digits, 8x8 gray, prepared."""
    from pipeline.data import load_raw, prepare_dataset

    out = tmp_path_factory.mktemp("digits") / "prepared"
    prepare_dataset(load_raw("digits", out.parent / "raw"), out, val_fraction=0.2, seed=0,
                    max_train=160, max_test=40)
    return out


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DVC_ROOT", raising=False)


def make_tiny_params() -> dict:
    """The real params.yaml, shrunk: digits, CPU, one 2-block-ViT variant of each kind (the
    ``scratch_ti4`` and ``finetune_b16`` recipes, as ``scratch`` and ``finetune``) trained for 2
    epochs, and its pretrained weights (``tiny``) pretrained here for 1 epoch (a fresh dict)."""
    root = os.path.dirname(os.path.dirname(__file__))
    with open(os.path.join(root, "params.yaml")) as f:
        p = yaml.safe_load(f)
    p["base"].update(dataset="digits", mlflow_experiment="tests", seeds=[0])
    p["prepare"]["budgets"] = ["all"]
    p["base"]["trainer"].update(accelerator="cpu", num_workers=0)
    p["prepare"].update(val_fraction=0.1)
    scratch, finetune = p["scratch"]["scratch_ti4"], p["finetune"]["finetune_b16"]
    for v in (scratch, finetune):
        v["model"] = dict(TINY_MODEL)
        v["train"].update(epochs=2, batch_size=64, warmup_epochs=0.5, min_steps=None)
    scratch["augment"].update(crop_padding=1)  # 8 px digits
    finetune.update(pretrained="tiny")
    pretrain = {"dataset": "digits", "val_fraction": 0.1, "max_train": 400,
                "model": dict(TINY_MODEL), "train": copy.deepcopy(scratch["train"]),
                "augment": copy.deepcopy(scratch["augment"])}
    pretrain["train"].update(epochs=1)
    p["pretrained"] = {"tiny": {"source": "train", "pretrain": pretrain}}
    p["scratch"], p["finetune"] = {"scratch": scratch}, {"finetune": finetune}
    return p


@pytest.fixture
def tiny_params() -> dict:
    """The real params.yaml, shrunk: digits, a 2-block ViT, CPU, 2 epochs."""
    return make_tiny_params()


@pytest.fixture(scope="module")
def module_tiny_params() -> dict:
    """``tiny_params`` for a module-scoped fixture (one dict per test module)."""
    return make_tiny_params()
