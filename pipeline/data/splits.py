"""The ``prepare`` stage: seeded, stratified train/val/test arrays and their manifests, atomically.

``prepare_dataset`` writes ``{train,val}_{images,labels}.npy`` and ``manifest.json`` into
``out_dir`` (``data/prepared``: what training and tuning see) and, when asked, the test split
with a manifest of its own into ``test_dir`` (``data/test``: what only evaluation reads), so that
no training stage depends on the test split or opens it, and a change to it re-runs evaluation
alone. Each dir is written into a temporary sibling and only then swapped in, so it is either the
previous complete result or the new complete result, never a mix. ``load_prepared`` memory-maps a
dir back (the splits its manifest counts), checking headers and shapes (not the bytes): a
missing, truncated or corrupt file, or one that disagrees with the manifest, is a one-line
DataError naming the file and the way out (re-run the prepare stage, which rewrites the dir).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.sources import RawDataset, check_label_range
from pipeline.errors import DataError, one_line

SPLITS = ("train", "val", "test")
TRAINING_SPLITS = ("train", "val")  # in the prepared dir; the test split has a dir of its own
MANIFEST = "manifest.json"
_PREPARE_HINT = "run the prepare stage first (dvc repro prepare)"


def _reprepare_hint(prepared_dir: Path) -> str:
    """The way out of a corrupt or inconsistent file in ``prepared_dir``."""
    return (f"re-run the prepare stage to rewrite {prepared_dir} (dvc repro prepare; if DVC "
            "finds nothing changed, delete the dir first)")


def _can_stratify(labels: np.ndarray, n_first: int, n_second: int) -> bool:
    """Whether sklearn can split ``labels`` into parts of these sizes with every class in both."""
    counts = np.bincount(labels)
    n_classes = int(np.count_nonzero(counts))
    return bool(counts[counts > 0].min() >= 2 and min(n_first, n_second) >= n_classes)


def _split_indices(labels: np.ndarray, n_second: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(len(labels))`` into sorted (first, second) parts, second of size
    ``n_second``; stratified by label when every class can appear in both parts."""
    indices = np.arange(len(labels))
    n_first = len(labels) - n_second
    stratify = labels if _can_stratify(labels, n_first, n_second) else None
    from sklearn.model_selection import train_test_split  # imported here: ~2 s, prepare only

    first, second = train_test_split(
        indices, test_size=n_second, random_state=seed, stratify=stratify
    )
    return np.sort(first), np.sort(second)


def subset_indices(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, stratified-when-possible subset of at most ``limit`` samples."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    _, kept = _split_indices(labels, limit, seed)
    return kept


def split_train_val(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices, ``ceil(val_fraction * N)`` in val; empty part -> DataError."""
    n_val = math.ceil(val_fraction * len(labels))
    if n_val >= len(labels) or n_val == 0:
        raise DataError(
            f"val_fraction={val_fraction} of {len(labels)} train samples leaves an empty "
            f"{'train' if n_val >= len(labels) else 'val'} split"
        )
    return _split_indices(labels, n_val, seed)


def _channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], accumulated in float64 chunks."""
    channels = images.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].reshape(-1, channels).astype(np.float64) / 255.0
        total += x.sum(axis=0)
        total_sq += np.square(x).sum(axis=0)
    count = images.size // channels
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def _write_split(directory: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    if len(images) == 0:
        raise DataError(
            f"{split} split is empty; refusing to write {directory / f'{split}_images.npy'}"
        )
    np.save(directory / f"{split}_images.npy", np.ascontiguousarray(images, dtype=np.uint8))
    np.save(directory / f"{split}_labels.npy", np.ascontiguousarray(labels, dtype=np.int64))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _clean_leftovers(out_dir: Path) -> None:
    """Remove the temporary dirs of a prepare that was killed (SIGKILL leaves them behind); if it
    was killed inside :func:`_swap_in`, between its two renames, put the old result back first."""
    for path in sorted(out_dir.parent.glob(f".{out_dir.name}.*-*")):
        kind, _, pid = path.name.removeprefix(f".{out_dir.name}.").partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if kind == "old" and not out_dir.exists():
            path.rename(out_dir)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _swap_in(tmp_dir: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the complete ``tmp_dir``; the old one is removed only at the end."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if old.exists():
        shutil.rmtree(old)
    had_old = out_dir.exists()
    if had_old:
        out_dir.rename(old)
    try:
        tmp_dir.rename(out_dir)
    except BaseException:
        if had_old:
            old.rename(out_dir)
        raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


def prepare_dataset(
    raw: RawDataset,
    out_dir: Path,
    val_fraction: float,
    seed: int,
    max_train: int | None = None,
    max_test: int | None = None,
    test_dir: Path | None = None,
) -> dict[str, Any]:
    """Write seeded, stratified train/val splits of ``raw`` to ``out_dir`` and, with
    ``test_dir``, its test split to ``test_dir``; return the train/val manifest.

    ``max_train`` caps the train+val pool before the val split, ``max_test`` caps the test split;
    both keep a seeded stratified subset when possible so tiny runs keep every class. The two
    manifests share the dataset's description (name, classes, image shape, sources, seed); each
    counts only its own splits, so nothing about the test split reaches ``out_dir``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    for key, cap in (("max_train", max_train), ("max_test", max_test)):
        if cap is not None and cap < 1:
            raise ValueError(f"{key} must be a positive integer or None, got {cap}")

    pool = subset_indices(raw.train_labels, max_train, seed)
    train_part, val_part = split_train_val(raw.train_labels[pool], val_fraction, seed)
    train, val = pool[train_part], pool[val_part]
    arrays = {"train": (raw.train_images[train], raw.train_labels[train]),
              "val": (raw.train_images[val], raw.train_labels[val])}
    described = {"dataset": raw.name, "classes": list(raw.classes),
                 "num_classes": raw.num_classes, "image_shape": list(raw.image_shape),
                 "seed": seed, "sources": dict(raw.sources)}
    mean, std = _channel_stats(arrays["train"][0])
    manifest: dict[str, Any] = {
        **described, "counts": {split: len(arrays[split][1]) for split in TRAINING_SPLITS},
        "val_fraction": val_fraction, "max_train": max_train, "mean": mean, "std": std}
    if test_dir is not None:
        test = subset_indices(raw.test_labels, max_test, seed)
        test_arrays = {"test": (raw.test_images[test], raw.test_labels[test])}
        _write_dir(Path(test_dir), test_arrays, {**described, "counts": {"test": len(test)},
                                                 "max_test": max_test})
    _write_dir(Path(out_dir), arrays, manifest)
    return manifest


def _write_dir(out_dir: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]],
               manifest: dict[str, Any]) -> None:
    """``arrays`` (``{split: (images, labels)}``) and ``manifest`` as ``out_dir``, atomically."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(out_dir)
    tmp_dir = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    try:
        tmp_dir.mkdir()
        for split, (images, labels) in arrays.items():
            _write_split(tmp_dir, split, images, labels)
        (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _swap_in(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def read_manifest(prepared_dir: Path) -> dict[str, Any]:
    """The ``manifest.json`` of a prepared directory; DataError if it is missing or unreadable."""
    prepared_dir = Path(prepared_dir)
    path = prepared_dir / MANIFEST
    if not prepared_dir.is_dir():
        raise DataError(f"prepared data directory {prepared_dir} does not exist; {_PREPARE_HINT}")
    if not path.is_file():
        raise DataError(f"missing {path}; {_PREPARE_HINT}")
    hint = _reprepare_hint(prepared_dir)
    try:  # truncated, not JSON, not UTF-8 (UnicodeDecodeError is a ValueError)
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} ({one_line(exc)}); {hint}") from exc
    if not isinstance(manifest, dict):
        raise DataError(f"{path} is not a JSON object; {hint}")
    for key in ("dataset", "classes", "num_classes", "image_shape", "counts"):
        if key not in manifest:
            raise DataError(f"{path} has no key {key!r}; {hint}")
    _check_manifest(manifest, path)
    return manifest


def _is_count(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """The manifest values a model is built from: image shape, classes, non-empty split counts."""

    hint = _reprepare_hint(path.parent)

    def bad(key: str, expected: str, value: Any) -> DataError:
        return DataError(f"{path}: {key} must be {expected}, got {one_line(repr(value))}; {hint}")

    if not isinstance(manifest["dataset"], str) or not manifest["dataset"]:
        raise bad("dataset", "a dataset name", manifest["dataset"])

    shape = manifest["image_shape"]
    if not (
        isinstance(shape, list)
        and len(shape) == 3
        and all(_is_count(v, 1) for v in shape)
        and shape[2] in (1, 3)
    ):
        raise bad("image_shape", "[H, W, C] with H, W >= 1 and C in {1, 3}", shape)
    num_classes, classes = manifest["num_classes"], manifest["classes"]
    if not _is_count(num_classes, 1):
        raise bad("num_classes", "a positive integer", num_classes)
    if not isinstance(classes, list) or len(classes) != num_classes:
        got = f"{len(classes)} names" if isinstance(classes, list) else one_line(repr(classes))
        raise DataError(
            f"{path}: classes must be a list of num_classes={num_classes} names, got {got}; "
            f"{hint}"
        )
    counts = manifest["counts"]
    if not isinstance(counts, dict) or not counts or set(counts) - set(SPLITS):
        raise bad("counts", f"an object with some of the keys {', '.join(SPLITS)}", counts)
    expected = TRAINING_SPLITS if set(counts) & set(TRAINING_SPLITS) else ("test",)
    for split in expected:  # a prepared dir holds train and val; a test dir, test
        count = counts.get(split)
        if not _is_count(count, 1):
            raise bad(f"counts[{split!r}]", "a positive integer (no empty split)", count)


def _open_array(path: Path, hint: str) -> np.ndarray:
    """``path`` memory-mapped, read-only; DataError naming it if it is missing, not a ``.npy``
    file (np.load would take garbage for a pickle, a zip for an ``.npz``), or truncated. Only
    the header is read here: the data stays on disk."""
    if not path.is_file():
        raise DataError(f"missing {path}; {_PREPARE_HINT}")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(np.lib.format.MAGIC_PREFIX))
        if magic != np.lib.format.MAGIC_PREFIX:
            why = ("empty file" if not magic else
                   "a zip archive (.npz?), not a .npy array" if magic.startswith(b"PK") else
                   f"not a .npy array: it starts with {magic!r}")
            raise DataError(f"cannot read {path} ({why}); {hint}")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        text = str(exc)
        why = ("truncated: shorter than the array its header describes"
               if "mmap length is greater than file size" in text else
               f"truncated header: {one_line(text)}" if text.startswith("EOF") else
               one_line(text))
        raise DataError(f"cannot read {path} ({why}); {hint}") from exc
    return array


def load_prepared(
    prepared_dir: Path,
) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Manifest and memory-mapped ``{split: (images, labels)}`` of the splits the manifest
    counts (train and val in a prepared dir, test in a test dir), checked against the manifest
    (headers and shapes; the labels' range too, as they are small)."""
    prepared_dir = Path(prepared_dir)
    manifest = read_manifest(prepared_dir)
    hint = _reprepare_hint(prepared_dir)
    manifest_path = prepared_dir / MANIFEST
    shape = tuple(manifest["image_shape"])
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in (s for s in SPLITS if s in manifest["counts"]):
        images_path = prepared_dir / f"{split}_images.npy"
        labels_path = prepared_dir / f"{split}_labels.npy"
        images, labels = _open_array(images_path, hint), _open_array(labels_path, hint)
        count = manifest["counts"][split]
        if images.dtype != np.uint8 or images.shape != (count, *shape):
            raise DataError(
                f"{images_path}: expected uint8 {(count, *shape)}, got {images.dtype} "
                f"{images.shape}, which disagrees with {manifest_path}; {hint}"
            )
        if labels.dtype != np.int64 or labels.shape != (count,):
            raise DataError(
                f"{labels_path}: expected int64 ({count},), got {labels.dtype} {labels.shape}, "
                f"which disagrees with {manifest_path}; {hint}"
            )
        # Out-of-range labels would otherwise surface as a device-side assert in the loss.
        try:
            check_label_range(labels, manifest["num_classes"], str(labels_path))
        except DataError as exc:
            raise DataError(f"{exc}; {hint}") from None
        splits[split] = (images, labels)
    return manifest, splits


def load_split(prepared_dir: Path, split: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(manifest, images, labels) of one split of a prepared (or test) dir, as
    :func:`load_prepared` checks them; DataError naming the dir when it holds no such split (the
    test split lives in a dir of its own)."""
    manifest, splits = load_prepared(prepared_dir)
    if split not in splits:
        raise DataError(f"{prepared_dir} holds the splits {', '.join(splits)}, not {split!r}: "
                        f"the prepare stage writes the test split to a dir of its own "
                        f"(data/test)")
    return (manifest, *splits[split])
