"""Run the DVC pipeline with another params file, in a workspace of its own.

The real experiment runs in the project itself (``dvc repro`` over ``params.yaml``). The offline
quick run (``make quick``) and the end-to-end tests run the *same* ``dvc.yaml`` and code over another
params file without touching the project's ``params.yaml``, ``dvc.lock`` or outputs: this copies
``dvc.yaml``, the ``pipeline`` package and the params file (as ``params.yaml``) into ``dest``, makes it
a git repository and a DVC project once, and runs ``dvc repro`` there. Re-running only refreshes
changed files, so a second run with nothing changed is a no-op, as ``dvc repro`` should be.

The workspace is a git repository so that everything DVC does with experiments works there as in
the project root: ``dvc exp run -S <key>=<value>``, ``dvc exp run --queue``, ``dvc exp show``,
``dvc params diff``, ``dvc metrics diff``. After a ``dvc repro`` that succeeded, the workspace's
state (params, ``dvc.lock``, the results; not the data or models, which DVC caches) is committed,
so that the next edit is compared with it. A workspace made before, as a DVC project without git,
is turned into one.

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
from .provenance import git, project_revision, run_recorded

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


# what git leaves alone in a workspace: the data and models (DVC caches them; dvc.lock says which
# ones a commit had) and the raw downloads; the results (cache: false) are committed
GITIGNORE = "/data/\n/models/\n__pycache__/\n"
DVC_GITIGNORE = "/config.local\n/tmp\n/cache\n"  # what `dvc init` writes into .dvc/.gitignore
IDENTITY = {"user.name": "vit-pipeline workspace", "user.email": "workspace@localhost"}


def _dvc(dest: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=dest, check=True)


def _init_repos(dest: Path) -> None:
    """``dest`` as a git repository (with a committer of its own where git has none) and a DVC
    project in it; a DVC project made without git (``core.no_scm``) is switched over."""
    if not (dest / ".git").exists():
        git(dest, "init", "-q", "-b", "main").check_returncode()
    for key, value in IDENTITY.items():  # DVC's experiments commit: they need a committer
        if not git(dest, "config", key).stdout.strip():
            git(dest, "config", key, value).check_returncode()
    ignore = dest / ".gitignore"
    if not ignore.exists():
        ignore.write_text(GITIGNORE)
    if not (dest / ".dvc").is_dir():
        _dvc(dest, "init", "-q")
    elif "no_scm" in (dest / ".dvc" / "config").read_text():
        _dvc(dest, "config", "--unset", "core.no_scm")
    dvc_ignore = dest / ".dvc" / ".gitignore"  # a project made without git has none
    if not dvc_ignore.exists():
        dvc_ignore.write_text(DVC_GITIGNORE)


def commit_workspace(dest: Path, message: str) -> bool:
    """Commit everything git tracks in ``dest`` (params, ``dvc.lock``, code, the results);
    False when nothing changed."""
    git(dest, "add", "-A").check_returncode()
    if not git(dest, "status", "--porcelain").stdout.strip():
        return False
    git(dest, "commit", "-q", "-m", message).check_returncode()
    return True


def make_workspace(dest: Path, params_file: Path, project: Path = PROJECT) -> Path:
    """Create or refresh the workspace ``dest`` for ``params_file``; returns ``dest``. A new
    workspace gets a first commit, so that DVC's experiments work in it from the start."""
    load_params(params_file)  # a bad params file fails here, before anything is touched
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    _sync_tree(project / "pipeline", dest / "pipeline")
    _copy_if_changed(project / "dvc.yaml", dest / "dvc.yaml")
    _copy_if_changed(Path(params_file), dest / "params.yaml")
    _init_repos(dest)
    if git(dest, "rev-parse", "--verify", "-q", "HEAD").returncode:
        commit_workspace(dest, f"{Path(params_file).name} at {project_revision(project)}")
    return dest


def stage_env() -> dict[str, str]:
    """Environment for ``dvc repro``: this interpreter's ``python`` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", required=True, type=Path, help="params file to run")
    parser.add_argument("--dir", required=True, type=Path, help="workspace directory")
    args = parser.parse_args()
    dest = make_workspace(args.dir, args.params)
    # the record names the command as typed, to run again
    command = f"python -m pipeline.workspace --params {args.params} --dir {args.dir}"
    code = run_recorded([sys.executable, "-m", "dvc", "repro"], dest, command, stage_env())
    if code == 0:
        commit_workspace(dest, f"dvc repro: {args.params.name} at {project_revision()}")
    sys.exit(code)


if __name__ == "__main__":
    main()
