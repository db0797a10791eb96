"""The prepare stage: splits, caps, the two manifests (train/val in the prepared dir, test in a
dir of its own), determinism, atomic replacement, loading back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from corrupt_helpers import edit_manifest, resave
from pipeline.data import load_prepared, load_split, prepare_dataset, read_manifest
from pipeline.errors import DataError

FILES = [f"{split}_{kind}.npy" for split in ("train", "val") for kind in ("images", "labels")]
TEST_FILES = ["test_images.npy", "test_labels.npy"]


def _saved(out_dir, split):
    return np.load(out_dir / f"{split}_images.npy"), np.load(out_dir / f"{split}_labels.npy")


def test_writes_files_and_manifest(tmp_path, fakes):
    raw = fakes.make_raw()  # 10 classes x 40 train, x 10 test, 8x8x3
    out, test = tmp_path / "prepared", tmp_path / "test"
    manifest = prepare_dataset(raw, out, val_fraction=0.1, seed=3, test_dir=test)

    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, "manifest.json"])
    assert sorted(p.name for p in test.iterdir()) == sorted([*TEST_FILES, "manifest.json"])
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["counts"] == {"train": 360, "val": 40}
    assert manifest["dataset"] == "synthetic" and manifest["num_classes"] == 10
    assert manifest["classes"] == raw.classes and manifest["image_shape"] == [8, 8, 3]
    assert manifest["val_fraction"] == 0.1 and manifest["seed"] == 3
    assert manifest["sources"] == raw.sources
    assert "max_test" not in manifest  # nothing of the test split in what training reads
    test_manifest = read_manifest(test)
    assert test_manifest["counts"] == {"test": 100} and test_manifest["max_test"] is None
    for key in ("dataset", "classes", "num_classes", "image_shape", "seed", "sources"):
        assert test_manifest[key] == manifest[key], key

    train_x, train_y = _saved(out, "train")
    val_x, val_y = _saved(out, "val")
    test_x, test_y = _saved(test, "test")
    assert (
        train_x.dtype == np.uint8 and train_x.shape == (360, 8, 8, 3) and train_y.dtype == np.int64
    )
    # stratified val split: 4 of each class's 40
    assert np.bincount(val_y, minlength=10).tolist() == [4] * 10
    # every row is an untouched raw sample with its own label; train and val are disjoint
    for x, y in ((train_x, train_y), (val_x, val_y)):
        pos = fakes.sample_ids(x)  # a train sample's id is its index in raw
        np.testing.assert_array_equal(raw.train_images[pos], x)
        np.testing.assert_array_equal(raw.train_labels[pos], y)
    assert not set(fakes.sample_ids(train_x)) & set(fakes.sample_ids(val_x))
    assert len(set(fakes.sample_ids(train_x)) | set(fakes.sample_ids(val_x))) == 400
    np.testing.assert_array_equal(test_x, raw.test_images)  # no cap: full test set, in order
    np.testing.assert_array_equal(test_y, raw.test_labels)

    pixels = train_x.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(manifest["mean"], pixels.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(manifest["std"], pixels.std(axis=0), atol=1e-5)


def test_same_seed_same_split_other_seed_differs(tmp_path, fakes):
    raw = fakes.make_raw()
    a, b, c = (prepare_dataset(raw, tmp_path / x, val_fraction=0.2, seed=seed, max_train=200,
                               max_test=50, test_dir=tmp_path / f"{x}_test")
               for x, seed in (("a", 7), ("b", 7), ("c", 8)))
    assert a == b and a["counts"] == c["counts"]
    for name in FILES:
        np.testing.assert_array_equal(
            np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name)
        )
    for name in TEST_FILES:
        np.testing.assert_array_equal(
            np.load(tmp_path / "a_test" / name), np.load(tmp_path / "b_test" / name)
        )
    assert not np.array_equal(
        np.load(tmp_path / "a/val_images.npy"), np.load(tmp_path / "c/val_images.npy")
    )


def test_caps_keep_every_class(tmp_path, fakes):
    raw = fakes.make_raw()
    manifest = prepare_dataset(
        raw, tmp_path / "p", val_fraction=0.2, seed=0, max_train=100, max_test=20,
        test_dir=tmp_path / "t",
    )
    test_manifest = read_manifest(tmp_path / "t")
    assert manifest["counts"] == {"train": 80, "val": 20} and test_manifest["counts"] == {
        "test": 20}
    assert manifest["max_train"] == 100 and test_manifest["max_test"] == 20
    for split, per_class in (("train", 8), ("val", 2), ("test", 2)):
        labels = np.load(tmp_path / ("t" if split == "test" else "p") / f"{split}_labels.npy")
        assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10, split


def test_caps_too_small_to_stratify_still_work(tmp_path, fakes):
    raw = fakes.make_raw()
    manifest = prepare_dataset(
        raw, tmp_path / "p", val_fraction=0.25, seed=0, max_train=5, max_test=3,
        test_dir=tmp_path / "t",
    )
    assert manifest["counts"] == {"train": 3, "val": 2}
    assert read_manifest(tmp_path / "t")["counts"] == {"test": 3}


def test_empty_split_is_an_error(tmp_path, fakes):
    raw = fakes.make_raw()
    with pytest.raises(DataError, match="empty train split"):
        prepare_dataset(raw, tmp_path / "p", val_fraction=0.5, seed=0, max_train=1)
    assert not (tmp_path / "p").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs", [{"val_fraction": 0.0}, {"val_fraction": 1.0}, {"max_train": 0}, {"max_test": -1}]
)
def test_bad_arguments(kwargs, tmp_path, fakes):
    args = {"val_fraction": 0.1, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        prepare_dataset(fakes.make_raw(), tmp_path / "p", **args)


def _fail_on_call(monkeypatch, n):
    real_save = np.save
    calls = []

    def save(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == n:
            raise OSError("No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    return calls


def test_failure_leaves_previous_result_intact(tmp_path, fakes, monkeypatch):
    raw = fakes.make_raw()
    out = tmp_path / "prepared"
    good = prepare_dataset(raw, out, val_fraction=0.1, seed=1)
    before = {name: np.load(out / name) for name in FILES}

    calls = _fail_on_call(monkeypatch, 4)
    with pytest.raises(OSError, match="No space left"):
        prepare_dataset(raw, out, val_fraction=0.3, seed=2)
    assert len(calls) == 4

    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]  # no tmp / old siblings
    assert read_manifest(out) == good
    for name, array in before.items():
        np.testing.assert_array_equal(np.load(out / name), array)


def test_failure_without_previous_result_leaves_nothing(tmp_path, fakes, monkeypatch):
    _fail_on_call(monkeypatch, 2)
    with pytest.raises(OSError):
        prepare_dataset(fakes.make_raw(), tmp_path / "prepared", val_fraction=0.1, seed=1)
    assert list(tmp_path.iterdir()) == []


def test_success_replaces_previous_result(tmp_path, fakes):
    raw = fakes.make_raw()
    out = tmp_path / "prepared"
    prepare_dataset(raw, out, val_fraction=0.1, seed=1)
    (out / "stale.txt").write_text("from an older layout")
    manifest = prepare_dataset(raw, out, val_fraction=0.5, seed=1)
    assert read_manifest(out) == manifest and manifest["counts"]["val"] == 200
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_load_prepared_round_trip_is_memory_mapped(tmp_path, fakes):
    raw = fakes.make_raw(shape=(6, 5, 1))
    out = tmp_path / "prepared"
    manifest = prepare_dataset(raw, out, val_fraction=0.1, seed=0, test_dir=tmp_path / "test")
    loaded_manifest, splits = load_prepared(out)
    assert loaded_manifest == manifest and list(splits) == ["train", "val"]
    test_manifest, test_splits = load_prepared(tmp_path / "test")
    assert list(test_splits) == ["test"]
    for d, m, loaded in ((out, manifest, splits), (tmp_path / "test", test_manifest,
                                                    test_splits)):
        for split, (images, labels) in loaded.items():
            assert isinstance(images, np.memmap) and isinstance(labels, np.memmap)
            assert images.shape == (m["counts"][split], 6, 5, 1)
            saved_x, saved_y = _saved(d, split)
            np.testing.assert_array_equal(images, saved_x)
            np.testing.assert_array_equal(labels, saved_y)


def test_load_prepared_missing_or_inconsistent(tmp_path, fakes):
    missing = tmp_path / "nowhere"
    with pytest.raises(
        DataError,
        match=f"{missing} does not exist; run the prepare stage first \\(dvc repro prepare\\)",
    ):
        load_prepared(missing)

    out = tmp_path / "prepared"
    prepare_dataset(fakes.make_raw(), out, val_fraction=0.1, seed=0)
    (out / "val_labels.npy").unlink()
    with pytest.raises(DataError, match=f"missing {out / 'val_labels.npy'}; .*dvc repro prepare"):
        load_prepared(out)

    prepare_dataset(fakes.make_raw(), out, val_fraction=0.1, seed=0, test_dir=tmp_path / "t")
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    manifest["counts"]["test"] = 99
    (tmp_path / "t" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        DataError,
        match=r"test_images\.npy: expected uint8 \(99, 8, 8, 3\), got uint8 \(100, 8, 8, 3\)",
    ):
        load_prepared(tmp_path / "t")

    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match=r"cannot read .*manifest\.json"):
        load_prepared(out)
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"missing .*manifest\.json"):
        load_prepared(out)


# --------------------------------------------------------------------------- edited / half-copied


def _cut(name, keep):
    def edit(out):
        data = (out / name).read_bytes()
        (out / name).write_bytes(data[: int(len(data) * keep)])

    return edit


def _bad_labels(labels):
    labels = labels.copy()
    labels[[17, 20]] = [10, -1]
    return labels


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (resave("train_images.npy", lambda x: x[..., :1]),
         r"train_images\.npy: expected uint8 \(360, 8, 8, 3\), got uint8 \(360, 8, 8, 1\)"),
        (resave("val_images.npy", lambda x: x[:, :6, :6]),
         r"val_images\.npy: expected uint8 \(40, 8, 8, 3\), got uint8 \(40, 6, 6, 3\)"),
        (resave("test_images.npy", lambda x: x.astype(np.float32)),
         r"test_images\.npy: expected uint8 \(100, 8, 8, 3\), got float32"),
        (resave("val_labels.npy", lambda y: y[:39]),
         r"val_labels\.npy: expected int64 \(40,\), got int64 \(39,\)"),
        (resave("train_labels.npy", _bad_labels),
         r"train_labels\.npy: sample 17 has label 10, outside \[0, 10\) \(2 bad labels in total\)"),
        (_cut("test_images.npy", 0.5),
         r"cannot read .*test_images\.npy \(.*\); .*dvc repro prepare"),
        (_cut("val_labels.npy", 0.0), r"cannot read .*val_labels\.npy"),
        (edit_manifest(lambda m: m.update(image_shape=[8, 8, 2])),
         r"manifest\.json: image_shape must be \[H, W, C\] with .*C in \{1, 3\}, got \[8, 8, 2\]"),
        (edit_manifest(lambda m: m.update(image_shape=[8, 8])), r"image_shape .*got \[8, 8\]"),
        (edit_manifest(lambda m: m.update(image_shape="8x8x3")), r"image_shape .*got '8x8x3'"),
        (edit_manifest(lambda m: m.update(num_classes=5)),
         r"manifest\.json: classes must be a list of num_classes=5 names, got 10 names"),
        (edit_manifest(lambda m: m["counts"].update(val=0)),
         r"manifest\.json: counts\['val'\] must be a positive integer \(no empty split\), got 0"),
        (edit_manifest(lambda m: m["counts"].pop("val")), r"counts\['val'\] .*got None"),
        (edit_manifest(lambda m: m["counts"].update(tests=1)),
         r"counts must be an object with some of the keys train, val, test"),
        (lambda out: (out / "manifest.json").write_text("[]"),
         r"manifest\.json is not a JSON object"),
    ],
    ids=["channels", "size", "float_images", "label_count", "label_range", "truncated_npy",
         "empty_npy", "manifest_channels", "manifest_2d", "manifest_str", "num_classes",
         "empty_split", "no_count", "unknown_split", "manifest_list"],
)  # fmt: skip
def test_load_prepared_rejects_edited_or_half_copied_data(edit, message, tmp_path, fakes):
    out = tmp_path / "prepared"
    prepare_dataset(fakes.make_raw(), out, val_fraction=0.1, seed=0,  # 360 / 40 / 100, 8x8x3
                    test_dir=tmp_path / "test")
    if "test_images" in message:  # the test split's files are in the test dir
        out = tmp_path / "test"
    edit(out)
    with pytest.raises(DataError, match=message) as err:
        load_prepared(out)
    assert str(out) in str(err.value)
    if "manifest" in message:  # the train stage reads only the manifest before building a model
        with pytest.raises(DataError, match=message):
            read_manifest(out)


def test_labels_beyond_a_shrunk_class_list_name_the_sample(tmp_path, fakes):
    """A manifest cut to 5 classes: the first label >= 5 is reported on the CPU, with its index."""
    out = tmp_path / "prepared"
    prepare_dataset(fakes.make_raw(), out, val_fraction=0.1, seed=0)
    edit_manifest(lambda m: m.update(num_classes=5, classes=m["classes"][:5]))(out)
    labels = np.load(out / "train_labels.npy")
    first = int(np.flatnonzero(labels >= 5)[0])
    with pytest.raises(
        DataError,
        match=f"{out / 'train_labels.npy'}: sample {first} has label {labels[first]}, "
        r"outside \[0, 5\)",
    ):
        load_prepared(out)


# --------------------------------------------------------------------------- no partial outputs


def _fail_swap(monkeypatch):
    real_rename = Path.rename

    def rename(self, target):
        if self.name.startswith(".prepared.tmp-"):
            raise OSError("Device or resource busy")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)


def _interrupt_second_save(monkeypatch):
    real_save = np.save
    calls = []

    def save(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", save)


def _empty_test_split(raw):
    # RawDataset refuses an empty split; force one to reach the check in _write_split, which
    # fires in the test dir's temporary directory, before the prepared dir is written.
    object.__setattr__(raw, "test_images", raw.test_images[:0])
    object.__setattr__(raw, "test_labels", raw.test_labels[:0])


@pytest.mark.parametrize(
    ("failure", "kwargs", "error", "message"),
    [
        ("none", {"val_fraction": 1.0}, ValueError, "val_fraction"),
        ("none", {"max_train": 1}, DataError, "empty train split"),
        ("empty_test", {}, DataError, r"test split is empty; refusing to write .*test_images"),
        ("interrupt", {}, KeyboardInterrupt, None),
        ("swap", {}, OSError, "Device or resource busy"),
    ],
    ids=["bad_argument", "empty_train", "empty_test", "interrupted_write", "failed_swap"],
)
@pytest.mark.parametrize("previous", [True, False], ids=["over_previous", "fresh"])
def test_every_prepare_failure_leaves_no_partial_output(
    failure, kwargs, error, message, previous, tmp_path, fakes, monkeypatch
):
    raw = fakes.make_raw()
    out, test = tmp_path / "prepared", tmp_path / "test"
    if previous:
        good = prepare_dataset(raw, out, val_fraction=0.1, seed=1, test_dir=test)
        before = {name: np.load(out / name) for name in FILES}
    if failure == "empty_test":
        _empty_test_split(raw)
    elif failure == "interrupt":
        _interrupt_second_save(monkeypatch)
    elif failure == "swap":
        _fail_swap(monkeypatch)

    with pytest.raises(error, match=message):
        prepare_dataset(raw, out, **{"val_fraction": 0.3, "seed": 2, "test_dir": test, **kwargs})
    monkeypatch.undo()

    # no temporary or old sibling left; each dir is whole: the previous one or none for the
    # prepared dir, and the test dir (written first) whole wherever it is there
    assert all(not p.name.startswith(".") for p in tmp_path.iterdir())
    if test.exists():
        assert sorted(p.name for p in test.iterdir()) == sorted([*TEST_FILES, "manifest.json"])
        load_prepared(test)
    if not previous:
        assert not out.exists()
        return
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, "manifest.json"])
    assert load_prepared(out)[0] == good
    for name, array in before.items():
        np.testing.assert_array_equal(np.load(out / name), array)


def test_leftovers_of_a_killed_prepare_are_cleaned_or_restored(tmp_path, fakes):
    """SIGKILL leaves temporary dirs named after the dead process; the next prepare removes them,
    and if the kill fell between the two renames of the swap, it puts the old result back."""
    import subprocess

    raw = fakes.make_raw(train_per_class=6, test_per_class=3, shape=(8, 8, 3))
    out = tmp_path / "prepared"
    prepare_dataset(raw, out, val_fraction=0.2, seed=0)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    half = tmp_path / f".prepared.tmp-{dead.pid}"
    half.mkdir()
    (half / "train_images.npy").write_bytes(b"partial")
    out.rename(tmp_path / f".prepared.old-{dead.pid}")  # killed mid-swap: no prepared/ now
    mine = tmp_path / ".prepared.tmp-1"  # pid 1 is alive: another prepare's, not ours to touch
    mine.mkdir()

    from pipeline.data.splits import _clean_leftovers

    _clean_leftovers(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".prepared.tmp-1", "prepared"]
    load_prepared(out)  # the old result, whole


def test_load_split_names_a_dir_without_that_split(tmp_path, fakes):
    out, test = tmp_path / "prepared", tmp_path / "test"
    prepare_dataset(fakes.make_raw(), out, val_fraction=0.1, seed=0, test_dir=test)
    manifest, images, labels = load_split(test, "test")
    assert manifest["counts"] == {"test": 100} and images.shape == (100, 8, 8, 3)
    assert len(labels) == 100
    with pytest.raises(DataError, match=f"{out} holds the splits train, val, not 'test': "
                                        r"the prepare stage writes the test split to a dir"):
        load_split(out, "test")
