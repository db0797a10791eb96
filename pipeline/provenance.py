"""What a measured figure names: the run record ``provenance.json`` beside a run's ``results/``.

A table of measured results says which commit made it, when, on which machine (CPU model, cores,
GPUs) and with which command, so that anyone can run it again and compare. The workspace runner
(``python -m pipeline.workspace``, ``make quick``) writes it after a ``dvc repro`` that succeeded;
for the project root (``make repro``) this module's command wraps ``dvc repro`` alike::

    python -m pipeline.provenance -- dvc repro

``provenance.json``: ``command`` (as typed, to run it again), ``commit`` (the project's, ``+dirty`` with
uncommitted changes), ``date`` (UTC), ``machine`` (:func:`machine`), ``wall_s`` (of the command),
``fresh`` (whether the run started with no ``dvc.lock``, i.e. every stage ran) and ``cells``, the
SHA-256 of ``results/cells.json`` when the command ended: a table is only made from the results
the record describes (``dvc exp run`` changes the results and not the record).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from .atomic import atomic_write_json
from .errors import RecordError
from .hashing import file_sha256

PROJECT = Path(__file__).resolve().parent.parent
RUN_RECORD = "provenance.json"
CELLS = Path("results", "cells.json")


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``git <args>`` in ``cwd``, its output captured (the caller reads the return code)."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def project_revision(project: Path = PROJECT) -> str:
    """The project's commit (``+dirty`` with uncommitted changes), or ``unknown`` outside git."""
    if shutil.which("git") is None:
        return "unknown"
    rev = git(project, "rev-parse", "--short", "HEAD")
    if rev.returncode:
        return "unknown"
    dirty = git(project, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    return rev.stdout.strip() + ("+dirty" if dirty else "")


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name; on x86 Linux with its family and model numbers too (a virtual
    machine may show only ``AMD EPYC``, which the numbers narrow to a generation)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine() or "unknown"
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def gpus() -> list[str]:
    """The CUDA GPUs' names as ``nvidia-smi`` lists them; none without it."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                         capture_output=True, text=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] \
        if out.returncode == 0 else []


def machine() -> dict:
    """``{"cpu", "cores", "gpus", "os", "python"}``: cores are those this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return {"cpu": cpu_model(), "cores": cores, "gpus": gpus(),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


def digest(path: Path) -> str | None:
    """The file's SHA-256, or None when there is no such file."""
    return file_sha256(path) if path.is_file() else None


def record_run(run_dir: Path, command: str, wall_s: float, fresh: bool,
               project: Path = PROJECT) -> Path:
    """Write ``<run_dir>/provenance.json`` for a command that succeeded there."""
    run_dir = Path(run_dir)
    return atomic_write_json(run_dir / RUN_RECORD, {
        "command": command, "commit": project_revision(project),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
        "wall_s": round(wall_s, 1), "fresh": fresh, "cells": digest(run_dir / CELLS)})


def read_record(run_dir: Path) -> dict:
    """The run record of ``run_dir``, checked against its results; RecordError (one line,
    naming the file and what to do) when it is missing or describes other results."""
    path = Path(run_dir, RUN_RECORD)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: no run record; run the pipeline with `python -m "
                          "pipeline.workspace` or `python -m pipeline.provenance -- dvc "
                          "repro`, which write it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: not a run record ({e}); run the pipeline again") from None
    if not isinstance(record, dict) or "cells" not in record:
        raise RecordError(f"{path}: not a run record (no 'cells'); run the pipeline again")
    if record["cells"] != digest(Path(run_dir, CELLS)):
        raise RecordError(f"{path}: recorded for other results than {Path(run_dir, CELLS)} "
                          "(changed since, e.g. by `dvc exp run`); run the pipeline again "
                          "through the command that writes the record")
    return record


def run_recorded(argv: list[str], run_dir: Path, command: str | None = None,
                 env: dict | None = None) -> int:
    """Run ``argv`` in ``run_dir``; when it succeeds, record it (as ``command``, the way it was
    typed; ``argv`` by default) with its wall time and whether ``run_dir`` had no ``dvc.lock``
    before. Its exit code."""
    fresh = not (Path(run_dir) / "dvc.lock").exists()
    start = time.perf_counter()
    code = subprocess.run(argv, cwd=run_dir, env=env).returncode
    if code == 0:
        record_run(run_dir, command or shlex.join(argv), time.perf_counter() - start, fresh)
    return code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a command (dvc repro) and, if it "
                                     "succeeds, write the run record provenance.json for its results.")
    parser.add_argument("--dir", type=Path, default=Path("."), help="the run's directory [.]")
    parser.add_argument("command", nargs="+", help="the command, after --")
    args = parser.parse_args(argv)
    sys.exit(run_recorded(args.command, args.dir))


if __name__ == "__main__":
    main()
