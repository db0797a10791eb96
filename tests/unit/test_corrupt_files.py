"""Every file the pipeline reads back that no training writes at that moment, truncated or
corrupt: the prepared arrays and ``manifest.json``, the records of a finished training run
(``run.json``, ``history.json``) and its model file. One line naming the file and the way out (no
traceback), and nothing that was good is lost. Resuming from damaged checkpoints and the stage
CLIs on damaged files: tests/integration/test_corrupt_runs.py."""

import io
import json
import shutil

import numpy as np
import pytest

from corrupt_helpers import edit_manifest, one_line_naming, resave, snapshot, trained_variant
from pipeline.data import load_prepared, read_manifest
from pipeline.errors import DataError
from pipeline.records import History, RunRecord

# --------------------------------------------------------------------------- prepared data


def _truncate(name, keep=0.5):
    def edit(d):
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: int(len(data) * keep)])
    return edit


def _write(name, data: bytes):
    def edit(d):
        (d / name).write_bytes(data)
    return edit


def _npz_for(name):
    def edit(d):
        buf = io.BytesIO()
        np.savez(buf, x=np.load(d / name))
        (d / name).write_bytes(buf.getvalue())
    return edit


@pytest.mark.parametrize(
    ("name", "edit", "why"),
    [
        ("train_images.npy", _truncate("train_images.npy"),
         "truncated: shorter than the array its header describes"),
        ("val_images.npy", _truncate("val_images.npy", 0.01), "truncated header"),
        ("test_labels.npy", _write("test_labels.npy", b""), "empty file"),
        ("val_labels.npy", _write("val_labels.npy", b"label\n3\n1\n"),
         "not a .npy array: it starts with b'label\\n'"),
        ("test_images.npy", _npz_for("test_images.npy"), "a zip archive (.npz?), not a .npy array"),
        ("train_images.npy", resave("train_images.npy", lambda x: x[:-1]),
         "expected uint8 (128, 8, 8, 1), got uint8 (127, 8, 8, 1), which disagrees with"),
        ("val_labels.npy", resave("val_labels.npy", lambda y: y[:-1]),
         "expected int64 (32,), got int64 (31,), which disagrees with"),
        ("test_labels.npy", resave("test_labels.npy", lambda y: y.astype(np.int32)),
         "expected int64 (40,), got int32 (40,)"),
        ("manifest.json", _truncate("manifest.json"), "cannot read"),
        ("manifest.json", _write("manifest.json", b'\xff{"counts": {}}'),
         "'utf-8' codec can't decode byte 0xff"),
        ("manifest.json", _write("manifest.json", b"[1, 2]"), "is not a JSON object"),
        ("manifest.json", edit_manifest(lambda m: m.pop("dataset")), "has no key 'dataset'"),
        ("manifest.json", edit_manifest(lambda m: m["counts"].update(train=129)),
         "expected uint8 (129, 8, 8, 1), got uint8 (128, 8, 8, 1)"),
    ],
    ids=["truncated_npy", "truncated_header", "empty_npy", "text_for_npy", "npz_for_npy",
         "images_shorter_than_manifest", "labels_shorter_than_images", "labels_dtype",
         "truncated_manifest", "manifest_not_utf8", "manifest_list", "manifest_no_dataset",
         "manifest_count_off"],
)  # fmt: skip
def test_corrupt_prepared_data_is_named_in_one_line_and_nothing_else_is_touched(
        digits_dir, digits_test_dir, tmp_path, name, edit, why):
    # the test split's files are in the test dir, the others in the prepared dir
    which = digits_test_dir if name.startswith("test_") else digits_dir
    prepared = tmp_path / "data" / which.name
    shutil.copytree(which, prepared)
    edit(prepared)
    before = snapshot(prepared)

    with pytest.raises(DataError) as err:
        load_prepared(prepared)

    message = str(err.value)
    # an array that disagrees with the manifest: both are named
    one_line_naming(message, prepared / name, "dvc repro prepare")
    assert why in message and f"re-run the prepare stage to rewrite {prepared}" in message
    assert snapshot(prepared) == before
    if name == "manifest.json" and "expected" not in why:  # the train stage reads only that
        with pytest.raises(DataError) as again:
            read_manifest(prepared)
        assert str(again.value) == message


def test_load_prepared_still_memory_maps(digits_dir, digits_test_dir):
    for d, names in ((digits_dir, ["train", "val"]), (digits_test_dir, ["test"])):
        _, splits = load_prepared(d)
        assert list(splits) == names
        assert all(isinstance(a, np.memmap) for pair in splits.values() for a in pair)


CORRUPT_AFTER_TRAINING = [
    ("run.json", lambda b: b[: len(b) // 2], "truncated or corrupt"),
    ("run.json", lambda b: b"[1, 2]", "not a run record"),
    ("run.json", lambda b: json.dumps({**json.loads(b), "epochs": "two"}).encode(), "epochs"),
    ("run.json", lambda b: b"\xff\xfe", "truncated or corrupt"),
    # a run.json of before the records were versioned, and one of a later version
    ("run.json", lambda b: json.dumps({k: v for k, v in json.loads(b).items()
                                       if k != "version"}).encode(), "older version"),
    ("run.json", lambda b: json.dumps({**json.loads(b), "version": 2}).encode(), "version 2"),
    ("history.json", lambda b: b[:-7], "truncated or corrupt"),
    ("history.json", lambda b: b'{"epoch": 0}', "not a history record"),
    ("history.json", lambda b: b'[{"epoch": 0, "val/acc": 0.3}]', "older version"),
    ("model.safetensors", lambda b: b[: len(b) // 2], "not a readable model file"),
    ("model.safetensors", lambda b: b"\xff" * 64, "not a readable model file"),
    ("model.safetensors", lambda b: b"", "not a readable model file"),
]


@pytest.mark.parametrize(("name", "corrupt", "why"), CORRUPT_AFTER_TRAINING)
def test_a_corrupt_record_or_model_file_is_named_in_one_line(tmp_path, name, corrupt, why):
    from pipeline.errors import CheckpointError, RecordError
    from pipeline.models import load_model_file

    model_dir = tmp_path / "models" / "finetune"
    trained_variant(model_dir, [str(i) for i in range(10)], seed=0)
    bad = model_dir / name
    bad.write_bytes(corrupt(bad.read_bytes()))
    before = snapshot(model_dir)
    read = {"run.json": RunRecord.read, "history.json": History.read,
            "model.safetensors": lambda d: load_model_file(d / "model.safetensors")}[name]
    with pytest.raises((RecordError, CheckpointError)) as err:
        read(model_dir)
    one_line_naming(str(err.value), bad, "dvc repro")
    assert why in str(err.value)
    assert snapshot(model_dir) == before
