"""Put a dataset's raw files on this machine before a run needs them (``make quick``,
``make fmnist``, ``make test``), so that one command works on a bare machine. Set-up of the
machine, not part of the library: the Makefile runs it, ``pipeline`` never imports it.

In order, stopping at the first that works:

1. the files are already in ``raw_dir/<name>`` or a :data:`~pipeline.data.sources.SYSTEM_DIRS`
   folder: nothing to do;
2. the dataset has a Debian package (:data:`DEBIAN_PACKAGES`) and this process may install it
   (root, or ``sudo`` without a password): ``apt-get install`` it, after ``apt-get update`` if
   the package lists do not know it yet;
3. download the upstream files into ``raw_dir/<name>``, each checked against its md5
   (:func:`pipeline.data.sources.load_raw`, the same code the ``prepare`` stage runs);
4. otherwise stop with one line that says what was tried and exactly what to run.

    python tools/ensure_data.py fashion_mnist --raw runs/quick/data/raw
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.data import sources
from pipeline.errors import DataError

DEBIAN_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(list(cmd), capture_output=True, text=True, env=env, check=False)


def missing_files(name: str, raw_dir: Path) -> list[str]:
    """The files of ``name`` found neither in ``raw_dir/name`` nor in its system folders."""
    dirs = [Path(raw_dir) / name, *sources.SYSTEM_DIRS.get(name, ())]
    return [spec.filename for spec in sources.FILES[name]
            if not any((d / spec.filename).is_file() for d in dirs)]


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


def apt_install(package: str, run: Runner = _run) -> str | None:
    """Install a Debian package; ``None`` when it worked, else why not (one line)."""
    if shutil.which("apt-get") is None:
        return "apt-get is not on this machine"
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo") and run(["sudo", "-n", "true"]).returncode == 0:
        prefix = ["sudo", "-n"]
    else:
        return "not root, and sudo needs a password"
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    print(f"installing the Debian package {package} ({' '.join(install)})", file=sys.stderr)
    proc = run(install)
    if proc.returncode != 0:  # a fresh machine's package lists may not know it yet
        run([*prefix, "apt-get", "update", "-q"])
        proc = run(install)
    return None if proc.returncode == 0 else f"apt-get install {package} failed: {_last_line(proc)}"


def ensure(name: str, raw_dir: Path, *, apt: Callable[[str], str | None] | None = None,
           download: bool = True) -> str:
    """Make the raw files of ``name`` available; returns how (``found``, ``apt``, ``download``).
    ``apt`` installs a Debian package (default :func:`apt_install`).

    Raises :class:`DataError` (one line: what was tried, what to run) when nothing worked."""
    raw_dir = Path(raw_dir)
    apt = apt or apt_install
    if name not in sources.FILES:
        return "found"  # bundled (digits): nothing to fetch
    if not missing_files(name, raw_dir):
        return "found"
    tried = []
    package = DEBIAN_PACKAGES.get(name)
    if package:
        why = apt(package)
        if why is None and not missing_files(name, raw_dir):
            return "apt"
        tried.append(f"apt: {why or 'installed, but the files are still missing'}")
    if download:
        try:
            sources.load_raw(name, raw_dir, download=True)  # fetches the missing files, md5-checked
            return "download"
        except DataError as e:
            tried.append(f"download: {e}")
    else:
        tried.append("download: not allowed here")
    urls = sorted({spec.url.rsplit("/", 1)[0] + "/" for spec in sources.FILES[name]})
    fix = (f"run `sudo apt-get install {package}`, or put " if package else "put ")
    raise DataError(
        f"{name} is not on this machine ({'; '.join(tried)}). To fix: {fix}the files "
        f"{', '.join(missing_files(name, raw_dir))} from {', '.join(urls)} into {raw_dir / name}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(sources.FILES), help="dataset")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"),
                        help="raw-data folder the run reads (default: %(default)s)")
    parser.add_argument("--no-download", action="store_true", help="never download")
    parser.add_argument("--optional", action="store_true",
                        help="warn instead of failing (tests that need the files then skip)")
    args = parser.parse_args(argv)
    try:
        how = ensure(args.name, args.raw, download=not args.no_download)
    except DataError as e:
        print(f"{'warning' if args.optional else 'error'}: {e}", file=sys.stderr)
        return 0 if args.optional else 2
    if how != "found":
        print(f"{args.name}: files in place ({how})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
