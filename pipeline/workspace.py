"""Run the DVC pipeline with another params file, in a workspace of its own.

The real experiment runs in the project itself (``dvc repro`` over ``params.yaml``). The offline
quick run (``make quick``) and the end-to-end tests run the *same* ``dvc.yaml`` and code over another
params file without touching the project's ``params.yaml``, ``dvc.lock`` or outputs: this copies
``dvc.yaml``, the ``pipeline`` package and the params file (as ``params.yaml``) into ``dest``, makes it
a DVC repo (``dvc init --no-scm``) once, and runs ``dvc repro`` there. Re-running only refreshes
changed files, so a second run with nothing changed is a no-op, as ``dvc repro`` should be.

    python -m pipeline.workspace --params params.quick.yaml --dir runs/quick
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .config import load_params

PROJECT = Path(__file__).resolve().parent.parent


def _sync_tree(src: Path, dst: Path) -> None:
    """Make ``dst`` hold exactly ``src``'s .py files; untouched files keep their bytes."""
    wanted = {p.relative_to(src) for p in src.rglob("*.py") if "__pycache__" not in p.parts}
    for rel in sorted(wanted):
        target = dst / rel
        if not target.exists() or not filecmp.cmp(src / rel, target, shallow=False):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, target)
    for p in dst.rglob("*.py") if dst.exists() else []:
        if p.relative_to(dst) not in wanted:
            p.unlink()


def _copy_if_changed(src: Path, dst: Path) -> None:
    if not dst.exists() or not filecmp.cmp(src, dst, shallow=False):
        shutil.copy2(src, dst)


def make_workspace(dest: Path, params_file: Path, project: Path = PROJECT) -> Path:
    """Create or refresh the workspace ``dest`` for ``params_file``; returns ``dest``."""
    load_params(params_file)  # a bad params file fails here, before anything is touched
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    _sync_tree(project / "pipeline", dest / "pipeline")
    _copy_if_changed(project / "dvc.yaml", dest / "dvc.yaml")
    _copy_if_changed(Path(params_file), dest / "params.yaml")
    if not (dest / ".dvc").is_dir():
        subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=dest,
                       check=True)
    return dest


def stage_env() -> dict[str, str]:
    """Environment for ``dvc repro``: this interpreter's ``python`` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return env


def repro(dest: Path, *extra: str) -> int:
    cmd = [sys.executable, "-m", "dvc", "repro", *extra]
    return subprocess.run(cmd, cwd=dest, env=stage_env()).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", required=True, type=Path, help="params file to run")
    parser.add_argument("--dir", required=True, type=Path, help="workspace directory")
    args = parser.parse_args()
    dest = make_workspace(args.dir, args.params)
    sys.exit(repro(dest))


if __name__ == "__main__":
    main()
