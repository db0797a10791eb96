"""The typed records of a training run (pipeline/records.py) round-trip through their files, and
refuse an old, foreign or damaged file with one line naming it; the model file's metadata
(pipeline/models/model_file.py) likewise."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pipeline.errors import CheckpointError, RecordError
from pipeline.models import ImageClassifier, build_vit, load_model_file, save_model_file
from pipeline.models.model_file import FORMAT, ModelFileMeta
from pipeline.records import EpochRow, History, RunRecord

RUN = RunRecord(run_id="a" * 32, experiment_id="1", tracking_uri="sqlite:///m.db",
                best_ckpt="best.ckpt", last_ckpt="last.ckpt", model_file="model.safetensors",
                best_val_acc=0.75, epochs=3, train_seconds=12.5, num_params=1234, labelled=300,
                passes=2, steps=40, tracking_outage=None)


def test_run_record_round_trips(tmp_path):
    path = RUN.write(tmp_path)
    assert path == tmp_path / "run.json" and RunRecord.read(tmp_path) == RUN
    assert json.loads(path.read_text())["version"] == RunRecord.VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left


def test_history_round_trips_with_nan_and_replaces_a_resumed_epoch(tmp_path):
    rows = [EpochRow(epoch=e, train_loss=2.0 - e, train_acc=math.nan, val_loss=1.0,
                     val_acc=0.1 * e, lr=0.01) for e in range(3)]
    h = History()
    for r in rows:
        h = h.with_row(r)
    h = h.with_row(rows[1].model_copy(update={"val_acc": 0.9}))  # epoch 1 again: resumed
    assert [r.epoch for r in h.epochs] == [0, 1] and h.epochs[1].val_acc == 0.9
    h.write(tmp_path)
    back = History.read(tmp_path)
    assert [r.epoch for r in back.epochs] == [0, 1] and math.isnan(back.epochs[0].train_acc)
    assert History.read_if_present(tmp_path / "none") == History()


@pytest.mark.parametrize(("text", "why"), [
    ("", "truncated or corrupt"),
    ("[]", "not a run record of this pipeline (a JSON list"),
    ('{"run_id": null}', "object without version"),
    (json.dumps({**RUN.model_dump(), "version": 0}), "of version 0; this pipeline reads version 1"),
    (json.dumps({**RUN.model_dump(), "labelled": "300"}), "labelled is '300'"),
    (json.dumps({**RUN.model_dump(), "epochs": 2.5}), "epochs is 2.5"),
    (json.dumps({**RUN.model_dump(), "surprise": 1}), "surprise"),
])
def test_a_bad_run_record_is_one_line_naming_the_file(tmp_path, text, why):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(RecordError) as err:
        RunRecord.read(tmp_path)
    msg = str(err.value)
    assert why in msg and str(tmp_path / "run.json") in msg and "\n" not in msg
    assert "dvc repro" in msg


def test_a_missing_record_says_to_train_first(tmp_path):
    with pytest.raises(RecordError, match="no .*run.json: train that run first"):
        RunRecord.read(tmp_path)


def test_model_file_metadata_round_trips_and_refuses_other_formats(tmp_path):
    torch.manual_seed(0)
    vit = build_vit("custom", img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2,
                    num_classes=3)
    path = save_model_file(ImageClassifier(vit), tmp_path / "m.safetensors",
                           classes=["a", "b", "c"], info={"variant": "v"})
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        raw, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta = ModelFileMeta.from_strings(raw, path)
    assert meta.format == FORMAT and meta.classes == ("a", "b", "c")
    assert meta.config == vit.cfg and meta.info == {"variant": "v"}
    assert ModelFileMeta.from_strings(meta.to_strings(), path) == meta
    for fmt, why in (("vit-pretraining/2", "of format vit-pretraining/2; this pipeline reads"),
                     ("timm", "not a model file of this pipeline")):
        other = tmp_path / f"{fmt.replace('/', '_')}.safetensors"
        save_file(state, str(other), metadata={**raw, "format": fmt})
        with pytest.raises(CheckpointError, match=why):
            load_model_file(other)
