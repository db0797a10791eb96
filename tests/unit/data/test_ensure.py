"""`make quick` / `make test` on a bare machine: Fashion-MNIST found, installed with apt, or
downloaded with checksums, else one line that says what to run (tools/ensure_data.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from pipeline.data import sources
from pipeline.errors import DataError

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
import ensure_data as ensure_mod  # noqa: E402 - a script of tools/, not a module of the package
from ensure_data import apt_install, ensure, main  # noqa: E402


def _never_apt(package: str) -> str:
    pytest.fail(f"apt asked to install {package} although the files were there")


def test_found_in_system_dir_needs_nothing(tmp_path, monkeypatch, fakes):
    system = tmp_path / "usr-share"
    fakes.write_fashion(system)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion_mnist": (system,)})
    assert ensure("fashion_mnist", tmp_path / "raw", apt=_never_apt) == "found"


def test_apt_installs_the_debian_package(tmp_path, monkeypatch, fakes):
    system = tmp_path / "usr-share"
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion_mnist": (system,)})
    asked = []

    def apt(package):
        asked.append(package)
        fakes.write_fashion(system)  # what dpkg would unpack
        return None

    assert ensure("fashion_mnist", tmp_path / "raw", apt=apt) == "apt"
    assert asked == ["dataset-fashion-mnist"]


def test_download_with_checksums_when_apt_cannot(tmp_path, monkeypatch, fakes, no_system_dirs):
    staging = tmp_path / "upstream"
    _, md5s = fakes.write_fashion(staging)
    fakes.trust_md5(monkeypatch, "fashion_mnist", md5s)
    monkeypatch.setattr(sources, "download_url", lambda url, root, filename=None, md5=None:
                        shutil.copy(staging / url.rsplit("/", 1)[-1], Path(root) / filename))
    raw = tmp_path / "raw"
    assert ensure("fashion_mnist", raw, apt=lambda p: "not root, and sudo needs a password") \
        == "download"
    assert sorted(p.name for p in (raw / "fashion_mnist").iterdir()) == sorted(md5s)


def test_corrupt_download_is_refused(tmp_path, monkeypatch, fakes, no_system_dirs):
    staging = tmp_path / "upstream"
    fakes.write_fashion(staging)  # md5s not trusted: the real table's checksums do not match
    monkeypatch.setattr(sources, "download_url", lambda url, root, filename=None, md5=None:
                        shutil.copy(staging / url.rsplit("/", 1)[-1], Path(root) / filename))
    with pytest.raises(DataError, match="checksum mismatch") as err:
        ensure("fashion_mnist", tmp_path / "raw", apt=lambda p: "apt-get is not on this machine")
    assert "\n" not in str(err.value)


def test_nothing_works_one_line_says_what_to_run(tmp_path, monkeypatch, capsys, no_system_dirs):
    def offline(url, root, filename=None, md5=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sources, "download_url", offline)
    monkeypatch.setattr(ensure_mod, "apt_install", lambda p: "not root, and sudo needs a password")
    raw = tmp_path / "raw"
    assert main(["fashion_mnist", "--raw", str(raw)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: fashion_mnist is not on this machine")
    for part in ("apt: not root, and sudo needs a password", "name resolution",
                 "sudo apt-get install dataset-fashion-mnist", str(raw / "fashion_mnist"),
                 "train-images-idx3-ubyte.gz", sources.FILES["fashion_mnist"][0].url[:30]):
        assert part in err
    # --optional (make test): a warning, exit 0, and the real-data test then skips
    assert main(["fashion_mnist", "--raw", str(raw), "--no-download", "--optional"]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("warning: ") and "download: not allowed here" in err


class FakeApt:
    """Records the commands apt_install runs; ``fail`` lists commands that exit 100."""

    def __init__(self, *fail: str):
        self.fail, self.cmds = fail, []

    def __call__(self, cmd):
        self.cmds.append(" ".join(cmd))
        code = 100 if self.cmds.count(self.cmds[-1]) == 1 and self.cmds[-1] in self.fail else 0
        return subprocess.CompletedProcess(cmd, code, "", "E: Unable to locate package x")


INSTALL = "apt-get install -y -q --no-install-recommends dataset-fashion-mnist"


def test_apt_as_root_updates_the_lists_once_when_needed(monkeypatch):
    monkeypatch.setattr(ensure_mod.shutil, "which", lambda cmd: f"/usr/bin/{cmd}")
    monkeypatch.setattr(ensure_mod.os, "geteuid", lambda: 0)
    run = FakeApt(INSTALL)  # a fresh machine: the first install does not know the package
    assert apt_install("dataset-fashion-mnist", run) is None
    assert run.cmds == [INSTALL, "apt-get update -q", INSTALL]


def test_apt_through_passwordless_sudo_or_not_at_all(monkeypatch):
    monkeypatch.setattr(ensure_mod.shutil, "which", lambda cmd: f"/usr/bin/{cmd}")
    monkeypatch.setattr(ensure_mod.os, "geteuid", lambda: 1000)
    run = FakeApt()
    assert apt_install("dataset-fashion-mnist", run) is None
    assert run.cmds == ["sudo -n true", f"sudo -n {INSTALL}"]

    run = FakeApt("sudo -n true")  # sudo wants a password
    assert apt_install("dataset-fashion-mnist", run) == "not root, and sudo needs a password"
    assert run.cmds == ["sudo -n true"]

    monkeypatch.setattr(ensure_mod.os, "geteuid", lambda: 0)  # install fails twice
    why = apt_install("dataset-fashion-mnist", lambda cmd: subprocess.CompletedProcess(
        cmd, 100, "", "E: Unable to locate package dataset-fashion-mnist"))
    assert why == ("apt-get install dataset-fashion-mnist failed: "
                   "E: Unable to locate package dataset-fashion-mnist")

    monkeypatch.setattr(ensure_mod.shutil, "which", lambda cmd: None)
    assert apt_install("dataset-fashion-mnist", FakeApt()) == "apt-get is not on this machine"
