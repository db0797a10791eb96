"""The offline runs' workspaces are git repositories (pipeline/workspace.py), so DVC's
experiments work there; git holds the params, code, dvc.lock and results, never the data, the
models or DVC's cache. A workspace made before without git (``dvc init --no-scm``) is switched
over with the same rules."""

import subprocess
import sys
from pathlib import Path

from pipeline.workspace import commit_workspace, make_workspace

ROOT = Path(__file__).resolve().parents[2]


def _tracked(ws: Path) -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ws, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def _outputs(ws: Path) -> None:
    """What a run leaves: DVC's cache, data, a model, the results."""
    for rel, text in {".dvc/cache/files/md5/ab/cdef": "cached", "data/prepared/x.npy": "data",
                      "models/scratch/all/seed0/model.safetensors": "weights",
                      "results/metrics/gain/finetune-scratch.json": "{}"}.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)


def _check(ws: Path) -> None:
    tracked = _tracked(ws)
    assert {"params.yaml", "dvc.yaml", "pipeline/workspace.py", ".gitignore",
            ".dvc/config", "results/metrics/gain/finetune-scratch.json"} <= tracked
    assert not [p for p in tracked if p.startswith((".dvc/cache", "data/", "models/"))], tracked
    log = subprocess.run(["git", "log", "--format=%s"], cwd=ws, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert log[0] == "a run" and log[-1].startswith("params.quick.yaml at ")


def test_a_new_workspace_is_a_git_repository_with_a_first_commit(tmp_path):
    ws = make_workspace(tmp_path / "ws", ROOT / "params.quick.yaml")
    assert "no_scm" not in (ws / ".dvc" / "config").read_text()
    _outputs(ws)
    assert commit_workspace(ws, "a run") and not commit_workspace(ws, "nothing new")
    _check(ws)


def test_a_workspace_made_without_git_is_switched_over(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=ws, check=True)
    _outputs(ws)  # its earlier runs' outputs are there already
    make_workspace(ws, ROOT / "params.quick.yaml")
    assert "no_scm" not in (ws / ".dvc" / "config").read_text()
    (ws / "results" / "metrics" / "gain" / "finetune-scratch.json").write_text('{"all": {}}')
    assert commit_workspace(ws, "a run")  # the next run's results
    _check(ws)
