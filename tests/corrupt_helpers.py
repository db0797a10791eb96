"""Helpers shared by the tests of damaged files and of evaluation: the one-line check, a dir's
snapshot, edits of a prepared dir, and what a finished training run leaves in its cell's dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline.records import EpochRow, History, RunRecord


def one_line_naming(message: str, path: Path, way_out: str) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert str(path) in message, message
    assert way_out in message, message
    assert "Traceback" not in message


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def resave(name: str, change):
    """An edit of a prepared dir: its array ``name`` saved again as ``change`` makes it."""
    def edit(d: Path) -> None:
        np.save(d / name, change(np.load(d / name)))
    return edit


def edit_manifest(change):
    """An edit of a prepared dir: ``change`` applied to its ``manifest.json``."""
    def edit(d: Path) -> None:
        manifest = json.loads((d / "manifest.json").read_text())
        change(manifest)
        (d / "manifest.json").write_text(json.dumps(manifest))
    return edit


def trained_variant(model_dir: Path, classes: list[str], *, seed: int, img_size: int = 16,
                    embed_dim: int = 32, depth: int = 2, varied: bool = False,
                    **record) -> None:
    """What a finished training run leaves for evaluation: the model file (a tiny ViT built
    with ``seed``; ``varied``: a random head instead of the zero one, so its predictions vary)
    and its records (``record`` overrides fields of run.json)."""
    from pipeline.models import ImageClassifier, build_vit, save_model_file

    torch.manual_seed(seed)
    vit = build_vit("custom", img_size=img_size, patch_size=4, embed_dim=embed_dim, depth=depth,
                    num_heads=2, num_classes=len(classes))
    if varied:
        torch.nn.init.normal_(vit.head.weight, std=0.5)
    save_model_file(ImageClassifier(vit), model_dir / "model.safetensors", classes=classes)
    RunRecord(**{"run_id": None, "experiment_id": None, "tracking_uri": "sqlite:///m.db",
                 "best_ckpt": "best.ckpt", "last_ckpt": "last.ckpt",
                 "model_file": "model.safetensors", "best_val_acc": 0.5, "epochs": 2,
                 "train_seconds": 1.0, "num_params": 1, "labelled": 144, **record}
              ).write(model_dir)
    History(epochs=(EpochRow(epoch=0, train_loss=2.0, train_acc=0.2, val_loss=2.1, val_acc=0.3,
                             lr=0.001),)).write(model_dir)
