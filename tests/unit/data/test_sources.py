"""Raw dataset loading: real file formats, checksums, corrupt files, downloads, lookup order."""

from __future__ import annotations

import http.client
import os
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from pipeline.data import DATASETS, RawDataset, load_raw, parse_idx, sources
from pipeline.data.sources import md5_file
from pipeline.errors import DataError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_round_trip(name, tmp_path, monkeypatch, fakes):
    spec = sources.FILES[name][0]
    fake = fakes.write_cifar(tmp_path / "raw" / name / spec.filename, name)
    md5 = md5_file(fake.path)
    fakes.trust_md5(monkeypatch, name, {spec.filename: md5})

    raw = load_raw(name, tmp_path / "raw", download=False)

    assert raw.name == name and raw.classes == fake.classes
    assert raw.train_images.dtype == np.uint8 and raw.train_images.shape == (100, 32, 32, 3)
    assert raw.test_images.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(raw.train_images, fake.train_images)
    np.testing.assert_array_equal(raw.test_images, fake.test_images)
    assert raw.train_labels.dtype == np.int64
    np.testing.assert_array_equal(raw.train_labels, fake.train_labels)
    np.testing.assert_array_equal(raw.test_labels, fake.test_labels)
    assert raw.sources == {spec.filename: f"md5:{md5}"}


def test_cifar_rows_are_channel_planes(tmp_path, monkeypatch, fakes):
    """A CIFAR row is 1024 R values, then 1024 G, then 1024 B, each row-major: check HWC by hand."""
    spec = sources.FILES["cifar10"][0]
    fake = fakes.write_cifar(tmp_path / "cifar10" / spec.filename)
    fakes.trust_md5(monkeypatch, "cifar10", {spec.filename: md5_file(fake.path)})
    raw = load_raw("cifar10", tmp_path, download=False)
    row = fake.test_images.transpose(0, 3, 1, 2).reshape(20, -1)[3]  # what the pickle holds
    y, x = 5, 7
    assert raw.test_images[3, y, x].tolist() == [row[c * 1024 + y * 32 + x] for c in range(3)]


def test_label_out_of_range_names_member_and_sample(tmp_path, monkeypatch, fakes):
    spec = sources.FILES["cifar10"][0]
    fake = fakes.write_cifar(
        tmp_path / "cifar10" / spec.filename, bad_label=("data_batch_3", 7, 10)
    )
    fakes.trust_md5(monkeypatch, "cifar10", {spec.filename: md5_file(fake.path)})
    with pytest.raises(
        DataError, match=r"cifar-10-python\.tar\.gz::data_batch_3: sample 7 has label 10"
    ):
        load_raw("cifar10", tmp_path, download=False)


def _set(key, change):
    def edit(content):
        content[key] = change(content)

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set(b"data", lambda c: c[b"data"][:, :3000]),
         r"must be uint8 \(N, 3072\), got uint8 \(20, 3000\)"),
        (_set(b"data", lambda c: c[b"data"].reshape(-1)), r"\(N, 3072\), got uint8 \(61440,\)"),
        (_set(b"data", lambda c: c[b"data"].reshape(20, 3, 1024)), r"got uint8 \(20, 3, 1024\)"),
        (_set(b"data", lambda c: c[b"data"].astype(np.float32)), r"got float32 \(20, 3072\)"),
        (_set(b"labels", lambda c: c[b"labels"][:19]), r"\(19,\) labels for 20 images"),
        (_set(b"labels", lambda c: [v + 0.5 for v in c[b"labels"]]), "is not a list of integers"),
        (_set(b"labels", lambda c: [2**70] * 20), "is not a list of integers"),
        (lambda c: c.pop(b"data"), r"missing key b'data'"),
        (_set(b"data", lambda c: c[b"data"][:0]), "no samples"),
    ],
    ids=["row_length", "1d", "3d", "float", "label_count", "float_labels", "huge_label",
         "no_data", "empty"],
)  # fmt: skip
def test_cifar_batch_of_wrong_shape_names_member(edit, message, tmp_path, monkeypatch, fakes):
    def edit_batch_2(member, content):
        if member == "data_batch_2":
            edit(content)
            if len(content.get(b"data", [])) == 0:
                content[b"labels"] = []

    spec = sources.FILES["cifar10"][0]
    path = tmp_path / "cifar10" / spec.filename
    fakes.write_cifar(path, edit=edit_batch_2)
    fakes.trust_md5(monkeypatch, "cifar10", {spec.filename: md5_file(path)})
    with pytest.raises(DataError, match=f"{path}::data_batch_2: .*{message}"):
        load_raw("cifar10", tmp_path, download=False)


def test_checksum_mismatch_names_file_and_keeps_it(tmp_path, fakes):
    spec = sources.FILES["cifar10"][0]
    fake = fakes.write_cifar(tmp_path / "cifar10" / spec.filename)
    actual = md5_file(fake.path)
    with pytest.raises(DataError) as err:
        load_raw("cifar10", tmp_path, download=False)
    message = str(err.value)
    assert str(fake.path) in message and spec.md5 in message and actual in message
    assert fake.path.is_file() and md5_file(fake.path) == actual


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not_gzip_tar"])
def test_corrupt_archive_names_it(damage, tmp_path, monkeypatch, fakes):
    spec = sources.FILES["cifar10"][0]
    path = tmp_path / "cifar10" / spec.filename
    fake = fakes.write_cifar(path)
    data = fake.path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    else:
        fakes.write_gz(path, b"this is gzip but not a tar archive" * 100)
    fakes.trust_md5(monkeypatch, "cifar10", {spec.filename: md5_file(path)})
    with pytest.raises(DataError, match=f"archive {path}"):
        load_raw("cifar10", tmp_path, download=False)


def test_archive_missing_member(tmp_path, monkeypatch, fakes):
    spec = sources.FILES["cifar100"][0]
    fake = fakes.write_cifar(tmp_path / "cifar10" / spec.filename, "cifar100")
    # A CIFAR-100 archive offered as CIFAR-10 lacks data_batch_1..5.
    monkeypatch.setitem(
        sources.FILES, "cifar10", (sources.FileSpec(spec.filename, spec.url, md5_file(fake.path)),)
    )
    with pytest.raises(DataError, match=r"has no member\(s\) batches\.meta, data_batch_1"):
        load_raw("cifar10", tmp_path, download=False)


def test_pickle_with_foreign_globals_is_refused(tmp_path, monkeypatch, fakes):
    import io
    import os
    import pickle
    import tarfile

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        for member in ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]:
            data = pickle.dumps({b"label_names": Evil()}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    fakes.trust_md5(monkeypatch, "cifar10", {path.name: md5_file(path)})
    with pytest.raises(
        DataError, match=r"batches\.meta: cannot unpickle .*refusing to load global"
    ):
        load_raw("cifar10", tmp_path, download=False)


# --------------------------------------------------------------------------- IDX / Fashion-MNIST


def test_fashion_idx_round_trip(tmp_path, monkeypatch, fakes, no_system_dirs):
    fake, md5s = fakes.write_fashion(tmp_path / "fashion_mnist")
    fakes.trust_md5(monkeypatch, "fashion_mnist", md5s)
    raw = load_raw("fashion_mnist", tmp_path, download=False)
    assert raw.train_images.shape == (30, 28, 28, 1) and raw.train_images.dtype == np.uint8
    np.testing.assert_array_equal(raw.train_images, fake.train_images)
    np.testing.assert_array_equal(raw.test_images, fake.test_images)
    np.testing.assert_array_equal(raw.train_labels, fake.train_labels)
    assert raw.train_labels.dtype == np.int64
    assert (
        raw.classes[0] == "T-shirt/top" and raw.classes[9] == "Ankle boot" and raw.num_classes == 10
    )
    assert raw.sources == {name: f"md5:{md5}" for name, md5 in md5s.items()}


def test_fashion_found_in_system_dir_after_raw_dir(tmp_path, monkeypatch, fakes):
    system = tmp_path / "system"
    from_system, md5s = fakes.write_fashion(system, seed=1)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion_mnist": (system,)})
    fakes.trust_md5(monkeypatch, "fashion_mnist", md5s)
    raw = load_raw("fashion_mnist", tmp_path / "raw", download=False)  # raw dir empty
    np.testing.assert_array_equal(raw.train_images, from_system.train_images)

    # A copy in raw_dir/fashion_mnist wins over the system one.
    own, own_md5s = fakes.write_fashion(tmp_path / "raw" / "fashion_mnist", seed=2)
    fakes.trust_md5(monkeypatch, "fashion_mnist", own_md5s)
    raw = load_raw("fashion_mnist", tmp_path / "raw", download=False)
    np.testing.assert_array_equal(raw.train_images, own.train_images)


def test_fashion_truncated_idx_names_file_and_sizes(tmp_path, monkeypatch, fakes, no_system_dirs):
    fake, md5s = fakes.write_fashion(tmp_path / "fashion_mnist")
    target = tmp_path / "fashion_mnist" / fakes.FASHION_FILES["train_images"]
    full = fakes.idx_bytes(fake.train_images[..., 0])
    md5s[target.name] = fakes.write_gz(target, full[:-100])
    fakes.trust_md5(monkeypatch, "fashion_mnist", md5s)
    with pytest.raises(DataError) as err:
        load_raw("fashion_mnist", tmp_path, download=False)
    message = str(err.value)
    assert str(target) in message and "truncated" in message
    assert str(len(full)) in message and str(len(full) - 100) in message


@pytest.mark.parametrize(
    ("file", "array", "message"),
    [
        ("train_images", np.zeros((30, 32, 32), np.uint8),
         r"IDX header dims \(30, 32, 32\) are not \(N, 28, 28\) Fashion-MNIST images"),
        ("test_images", np.zeros((10, 28, 14), np.uint8), r"IDX header dims \(10, 28, 14\)"),
        ("train_images", np.zeros((30, 784), np.uint8),
         r"bad IDX magic number 0x00000802, expected 0x00000803 \(unsigned bytes, 3 dim"),
        ("test_labels", np.zeros((10, 1), np.uint8),
         r"bad IDX magic number 0x00000802, expected 0x00000801"),
        ("test_images", np.zeros((0, 28, 28), np.uint8),
         r"no samples \(IDX header dims \(0, 28, 28\)\)"),
    ],
    ids=["32x32", "28x14", "images_2d", "labels_2d", "empty"],
)  # fmt: skip
def test_fashion_idx_of_wrong_shape_names_file(
    file, array, message, tmp_path, monkeypatch, fakes, no_system_dirs
):
    _, md5s = fakes.write_fashion(tmp_path / "fashion_mnist")
    target = tmp_path / "fashion_mnist" / fakes.FASHION_FILES[file]
    md5s[target.name] = fakes.write_gz(target, fakes.idx_bytes(array))
    if file == "test_images" and len(array) == 0:  # a consistent but empty test split
        labels = tmp_path / "fashion_mnist" / fakes.FASHION_FILES["test_labels"]
        md5s[labels.name] = fakes.write_gz(labels, fakes.idx_bytes(np.zeros(0, np.uint8)))
    fakes.trust_md5(monkeypatch, "fashion_mnist", md5s)
    with pytest.raises(DataError, match=f"{target}: {message}"):
        load_raw("fashion_mnist", tmp_path, download=False)


def test_fashion_label_count_mismatch(tmp_path, monkeypatch, fakes, no_system_dirs):
    _, md5s = fakes.write_fashion(tmp_path / "fashion_mnist")
    target = tmp_path / "fashion_mnist" / fakes.FASHION_FILES["test_labels"]
    md5s[target.name] = fakes.write_gz(target, fakes.idx_bytes(np.zeros(9, np.uint8)))
    fakes.trust_md5(monkeypatch, "fashion_mnist", md5s)
    with pytest.raises(DataError, match=f"{target} has 9 labels but .* has 10 images"):
        load_raw("fashion_mnist", tmp_path, download=False)


def test_fashion_label_out_of_range(tmp_path, monkeypatch, fakes, no_system_dirs):
    _, md5s = fakes.write_fashion(tmp_path / "fashion_mnist")
    target = tmp_path / "fashion_mnist" / fakes.FASHION_FILES["train_labels"]
    labels = np.zeros(30, np.uint8)
    labels[[5, 12]] = [10, 200]
    md5s[target.name] = fakes.write_gz(target, fakes.idx_bytes(labels))
    fakes.trust_md5(monkeypatch, "fashion_mnist", md5s)
    with pytest.raises(
        DataError, match=f"{target}: sample 5 has label 10, outside \\[0, 10\\) \\(2 bad"
    ):
        load_raw("fashion_mnist", tmp_path, download=False)


def test_fashion_corrupt_gzip_and_content_checksum(tmp_path, monkeypatch, fakes, no_system_dirs):
    fake, md5s = fakes.write_fashion(tmp_path / "fashion_mnist")
    target = tmp_path / "fashion_mnist" / fakes.FASHION_FILES["test_images"]
    # Re-gzipping the same content (as Debian did) changes the .gz md5 but not the content md5.
    target.write_bytes(
        __import__("gzip").compress(fakes.idx_bytes(fake.test_images[..., 0]), compresslevel=1)
    )
    fakes.trust_md5(monkeypatch, "fashion_mnist", md5s)
    load_raw("fashion_mnist", tmp_path, download=False)

    target.write_bytes(target.read_bytes()[:-20])  # cut the gzip stream
    with pytest.raises(DataError, match=f"cannot decompress {target}"):
        load_raw("fashion_mnist", tmp_path, download=False)

    fakes.write_gz(target, fakes.idx_bytes(np.ones((10, 28, 28), np.uint8)))  # other content
    with pytest.raises(
        DataError, match=f"checksum mismatch for {target}: expected md5 of the decompressed"
    ):
        load_raw("fashion_mnist", tmp_path, download=False)
    assert target.is_file()


def test_parse_idx_checks_magic_and_size(fakes):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    buf = fakes.idx_bytes(images)
    np.testing.assert_array_equal(parse_idx(buf, 3, "x.idx"), images)
    with pytest.raises(
        DataError, match=r"x\.idx: bad IDX magic number 0x00000803, expected 0x00000801"
    ):
        parse_idx(buf, 1, "x.idx")
    with pytest.raises(DataError, match=r"bad IDX magic number 0x00000d03"):
        parse_idx(b"\x00\x00\x0d\x03" + buf[4:], 3, "x.idx")
    with pytest.raises(
        DataError,
        match=r"x\.idx: IDX file truncated: header dims \(2, 3, 4\) mean 40 bytes, got 39",
    ):
        parse_idx(buf[:-1], 3, "x.idx")
    with pytest.raises(DataError, match="trailing bytes"):
        parse_idx(buf + b"\x00", 3, "x.idx")
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(buf[:9], 3, "x.idx")
    # Header dims whose product overflows int64 are reported exactly, not wrapped around.
    huge = buf[:4] + b"\xff" * 12
    with pytest.raises(DataError, match=f"mean {16 + (2**32 - 1) ** 3} bytes, got 16"):
        parse_idx(huge, 3, "x.idx")


def test_real_debian_fashion_mnist(tmp_path):
    # `make test` (and so CI) installs the package first; only a machine that cannot skips.
    if not DEBIAN_FASHION.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{DEBIAN_FASHION} missing in CI: .ci/run's make test should have "
                        "installed dataset-fashion-mnist (tools/ensure_data.py)")
        pytest.skip("Debian package dataset-fashion-mnist not installed (make test installs it)")
    raw = load_raw("fashion_mnist", tmp_path, download=False)
    assert raw.train_images.shape == (60000, 28, 28, 1) and raw.test_images.shape == (
        10000,
        28,
        28,
        1,
    )
    assert raw.train_labels.min() == 0 and raw.train_labels.max() == 9
    assert np.bincount(raw.test_labels).tolist() == [1000] * 10
    expected = {spec.filename: f"md5:{spec.md5}" for spec in sources.FILES["fashion_mnist"]}
    assert raw.sources == expected


# --------------------------------------------------------------------------- downloads


@pytest.mark.parametrize(
    "error",
    [urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
     OSError("Network is unreachable"),
     http.client.IncompleteRead(b"")],
)  # fmt: skip
def test_download_failure_names_url_and_offline_run(error, tmp_path, monkeypatch):
    spec = sources.FILES["cifar10"][0]
    calls = []

    def failing_download(url, root, filename=None, md5=None):
        calls.append(url)
        (Path(root) / filename).write_bytes(b"partial")  # what an interrupted transfer leaves
        raise error

    monkeypatch.setattr(sources, "download_url", failing_download)
    with pytest.raises(DataError) as err:
        load_raw("cifar10", tmp_path)
    message = str(err.value)
    assert calls == [spec.url]
    assert spec.url in message and str(tmp_path / "cifar10" / spec.filename) in message
    assert "make quick" in message
    assert list((tmp_path / "cifar10").iterdir()) == []  # no partial file left behind


def test_download_goes_through_part_file(tmp_path, monkeypatch, fakes, no_system_dirs):
    staging = tmp_path / "staging"
    _, md5s = fakes.write_fashion(staging)
    fakes.trust_md5(monkeypatch, "fashion_mnist", md5s)
    fetched = []

    def fake_download(url, root, filename=None, md5=None):
        name = url.rsplit("/", 1)[-1]
        assert filename == f"{name}.part" and not (Path(root) / name).exists()
        fetched.append(name)
        shutil.copy(staging / name, Path(root) / filename)

    monkeypatch.setattr(sources, "download_url", fake_download)
    raw = load_raw("fashion_mnist", tmp_path / "raw")
    assert sorted(fetched) == sorted(md5s) and raw.train_images.shape == (30, 28, 28, 1)
    assert sorted(p.name for p in (tmp_path / "raw" / "fashion_mnist").iterdir()) == sorted(md5s)

    fetched.clear()
    load_raw("fashion_mnist", tmp_path / "raw")  # second run: files are there, nothing fetched
    assert fetched == []


def test_missing_without_download_names_expected_path(tmp_path, no_system_dirs):
    with pytest.raises(
        DataError, match=f"expected {tmp_path / 'cifar100' / 'cifar-100-python.tar.gz'}"
    ):
        load_raw("cifar100", tmp_path, download=False)
    with pytest.raises(DataError, match="download is disabled"):
        load_raw("fashion_mnist", tmp_path, download=False)


def test_unknown_dataset_lists_allowed_names(tmp_path):
    with pytest.raises(
        ValueError,
        match="unknown dataset 'mnist'; allowed: cifar10, cifar100, fashion_mnist, digits",
    ):
        load_raw("mnist", tmp_path)
    assert DATASETS == ("cifar10", "cifar100", "fashion_mnist", "digits")


# --------------------------------------------------------------------------- digits, validation


def test_digits_offline_fixed_stratified_split(tmp_path):
    raw = load_raw("digits", tmp_path)
    again = load_raw("digits", tmp_path / "elsewhere")
    assert len(raw.train_labels) + len(raw.test_labels) == 1797
    assert raw.test_images.shape == (450, 8, 8, 1) and raw.train_images.shape == (1347, 8, 8, 1)
    assert raw.train_images.dtype == np.uint8 and raw.classes == [str(i) for i in range(10)]
    np.testing.assert_array_equal(raw.test_images, again.test_images)
    np.testing.assert_array_equal(raw.test_labels, again.test_labels)
    assert raw.sources == again.sources and list(raw.sources) == ["sklearn.load_digits"]
    # stratified: each class is ~25% test
    frac = np.bincount(raw.test_labels) / (
        np.bincount(raw.test_labels) + np.bincount(raw.train_labels)
    )
    assert np.all(np.abs(frac - 0.25) < 0.02)
    # 0..16 -> 0..255 by round(v * 255 / 16)
    values = set(np.unique(raw.train_images).tolist())
    assert values <= {round(v * 255 / 16) for v in range(17)} and {0, 255} <= values
    # the images are the real ones: every test image is a scaled sklearn image with the same label
    bunch = load_digits()
    scaled = np.rint(bunch.images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    lookup = {row.tobytes(): int(t) for row, t in zip(scaled, bunch.target, strict=True)}
    assert all(
        lookup[img.reshape(-1).tobytes()] == lab
        for img, lab in zip(raw.test_images, raw.test_labels, strict=True)
    )


def test_raw_dataset_validates_itself():
    images = np.zeros((4, 8, 8, 1), np.uint8)
    labels = np.array([0, 1, 2, 1])
    RawDataset("ok", ["a", "b", "c"], images, labels, images, labels, {})
    with pytest.raises(DataError, match="bad test split: sample 2 has label 2"):
        RawDataset("bad", ["a", "b"], images, labels % 2, images, labels, {})
    with pytest.raises(DataError, match=r"bad train split: images must be uint8 .*float32"):
        RawDataset("bad", ["a"], images.astype(np.float32), labels * 0, images, labels * 0, {})
    with pytest.raises(DataError, match=r"C in \{1, 3\}.*\(4, 8, 8, 2\)"):
        RawDataset(
            "bad", ["a"], np.zeros((4, 8, 8, 2), np.uint8), labels * 0, images, labels * 0, {}
        )
    with pytest.raises(DataError, match="3 labels for 4 images"):
        RawDataset("bad", ["a"], images, labels[:3] * 0, images, labels * 0, {})
    with pytest.raises(
        DataError, match=r"train images are \(8, 8, 1\) but test images are \(4, 4, 1\)"
    ):
        RawDataset("bad", ["a"], images, labels * 0, images[:, :4, :4], labels * 0, {})


def test_fashion_mnist_offline_errors_name_the_debian_package(tmp_path, monkeypatch, no_system_dirs):
    def failing_download(url, root, filename=None, md5=None):
        raise OSError("no route to host")

    monkeypatch.setattr(sources, "download_url", failing_download)
    with pytest.raises(DataError, match="install the Debian package dataset-fashion-mnist"):
        load_raw("fashion_mnist", tmp_path)
    with pytest.raises(DataError, match=r"download is disabled; offline, install the Debian"):
        load_raw("fashion_mnist", tmp_path, download=False)
