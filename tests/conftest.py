"""Shared fixtures: every test runs offline, on the CPU, with MLflow in a temporary database.

The suite has two tiers, by directory, each with its marker (set here):

- ``tests/unit`` (``-m unit``): no training, no subprocess; the whole tier in under a minute;
- ``tests/integration`` (``-m integration``): real training runs, stages, DVC and MLflow, in this
  process or in subprocesses.

``make test`` runs both, on every core (pytest-xdist); ``pytest tests/unit`` is the quick loop.
"""

import copy
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one of several workers (make test): the workers are the parallelism, so each (and the
    # training subprocesses it starts) computes on one thread rather than fighting the others
    # for the cores (measured: 283 s instead of 323 s for the suite on 2 cores)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration")


def pytest_collection_modifyitems(config, items):
    """Each test gets its tier's marker (a test outside both tiers is a mistake); then the
    longest first (the DVC pipeline tests, marked slow, then the other integration tests, then
    the unit tests), so that on several workers (``make test``) none is left running alone at
    the end. The sort is stable: a file's tests stay together and in order."""
    rank = {}
    for item in items:
        tier = Path(item.path).resolve().relative_to(TESTS).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit or "
                                    "tests/integration")
        item.add_marker(getattr(pytest.mark, tier))
        rank[item.nodeid] = (TIERS.index(tier) * 2 + (item.get_closest_marker("slow") is None))
    items.sort(key=lambda item: rank[item.nodeid])


TINY_MODEL = {
    "variant": "custom", "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2,
    "num_heads": 2, "mlp_ratio": 2.0, "dropout": 0.0, "attn_dropout": 0.0, "drop_path": 0.0,
}


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """128 train / 32 val digits, 8x8 gray, prepared; their 40 test digits are in
    ``digits_test_dir`` (its sibling ``test``), as the prepare stage writes them."""
    from pipeline.data import load_raw, prepare_dataset

    out = tmp_path_factory.mktemp("digits") / "prepared"
    prepare_dataset(load_raw("digits", out.parent / "raw"), out, val_fraction=0.2, seed=0,
                    max_train=160, max_test=40, test_dir=out.parent / "test")
    return out


@pytest.fixture(scope="session")
def digits_test_dir(digits_dir):
    """The 40 test digits of ``digits_dir``, in a dir of their own."""
    return digits_dir.parent / "test"


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
    p["tune"] = {"scratch": {}, "finetune": {}}  # no searches (a test adds one)
    return p


@pytest.fixture
def tiny_params() -> dict:
    """The real params.yaml, shrunk: digits, a 2-block ViT, CPU, 2 epochs."""
    return make_tiny_params()


@pytest.fixture(scope="module")
def module_tiny_params() -> dict:
    """``tiny_params`` for a module-scoped fixture (one dict per test module)."""
    return make_tiny_params()
