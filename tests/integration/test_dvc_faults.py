"""DVC-level faults: two ``dvc repro`` at once, a repo lock held by another DVC command, and a
stage that fails at run time. Each injects the fault into a real workspace (the real dvc.yaml,
tiny params) and checks that nothing was lost: ``dvc.lock``, the outputs and the DVC cache.

What DVC 3.x does, and these tests pin down:

- ``dvc repro`` holds the repo lock (``.dvc/tmp/lock``) only between stage commands. While a
  command runs, DVC holds read locks on that stage's deps and a write lock on its outs
  (``.dvc/tmp/rwlock``). A second ``dvc repro`` started then fails at once, at its first stage
  whose paths overlap: "'<path>' is busy, it is being blocked by: (PID <pid>): <command>".
- While the repo lock itself is held (by another DVC command, or by a repro between two
  stages), ``dvc repro`` retries for about 3 s and then fails with "Unable to acquire lock".
- A stage that fails leaves ``dvc.lock`` as it was, and the last good outputs stay in the cache.

One workspace serves the whole module, because the first ``dvc repro`` is the expensive part. The
fixture runs the two concurrent repros; the tests after it reuse the finished workspace, in file
order. The last test puts the workspace back as it found it.
"""

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from dvc.repo import Repo

from pipeline.records import RunRecord
from pipeline.workspace import make_workspace, stage_env

pytestmark = pytest.mark.slow

# The first repro runs prepare, then train_scratch. It is caught while train_scratch runs and
# holds its locks, so a second full repro is refused at its first stage (prepare, which writes
# data/prepared and data/test).
TRAINING = "train_scratch@scratch-all"  # the one cell: tiny params, one seed, budget all
UP_TO_DATE = "Data and pipelines are up to date."


def _env(root: Path) -> dict[str, str]:
    env = {**stage_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    env.pop("DVC_ROOT", None)
    return env


def _dvc(ws: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, env=_env(ws.parent),
                          capture_output=True, text=True, timeout=timeout)


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@-]+)'", output)


def _digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def concurrent(module_tiny_params, tmp_path_factory):
    """``dvc repro train_scratch`` in a fresh workspace; once it is in ``train_scratch``, a plain
    ``dvc repro`` in the same workspace. Records both, then ``dvc status``."""
    root = tmp_path_factory.mktemp("dvc_faults")
    (root / "params.tiny.yaml").write_text(yaml.safe_dump(module_tiny_params))
    ws = make_workspace(root / "ws", root / "params.tiny.yaml")

    t0 = time.monotonic()
    first = subprocess.Popen([sys.executable, "-m", "dvc", "repro", TRAINING], cwd=ws,
                             env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    lines: list[str] = []
    training = threading.Event()

    def pump():  # read the first run's log as it comes; never let its pipe fill up
        for line in first.stdout:
            lines.append(line)
            if f"Running stage '{TRAINING}'" in line:
                training.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        if not training.wait(timeout=300):
            first.kill()
            pytest.fail(f"the first dvc repro never reached stage {TRAINING!r}:\n" + "".join(lines))
        caught_at = time.monotonic() - t0
        t1 = time.monotonic()
        second = _dvc(ws, "repro")
        second_s = time.monotonic() - t1
        first_running = first.poll() is None
        first_rc = first.wait(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
        reader.join(timeout=10)
    return dict(ws=ws, root=root, first_pid=first.pid, first_rc=first_rc, first_out="".join(lines),
                first_s=time.monotonic() - t0, caught_at=caught_at, second=second,
                second_s=second_s, first_running=first_running,
                status=_dvc(ws, "status", "--with-deps", TRAINING))


def test_second_repro_is_refused_while_the_first_trains(concurrent):
    second = concurrent["second"]
    assert concurrent["first_running"], (
        "the first dvc repro ended before the second one was answered: nothing was tested "
        f"(the second took {concurrent['second_s']:.1f} s)")
    assert second.returncode != 0, second.stdout + second.stderr
    ws = concurrent["ws"]
    # refused at its first stage, prepare, naming one of its outputs (data/prepared, which the
    # running cell reads, or data/test: DVC names the first busy path it meets)
    assert any(f"failed to reproduce 'prepare': '{ws / 'data' / out}' is busy, "
               "it is being blocked by:" in second.stderr
               for out in ("prepared", "test")), second.stderr
    assert f"(PID {concurrent['first_pid']}): " in second.stderr  # names the running repro
    assert _ran(second.stdout + second.stderr) == []  # it ran nothing of its own
    print(f"\nfirst repro caught in stage {TRAINING!r} after {concurrent['caught_at']:.1f} s; "
          f"second repro refused after {concurrent['second_s']:.1f} s:\n{second.stderr}")


def test_first_repro_finishes_with_intact_outputs(concurrent):
    ws = concurrent["ws"]
    assert concurrent["first_rc"] == 0, concurrent["first_out"]
    assert _ran(concurrent["first_out"]) == ["prepare", TRAINING]
    status = concurrent["status"]
    assert status.returncode == 0 and UP_TO_DATE in status.stdout, status.stdout + status.stderr
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", TRAINING}
    manifest = json.loads((ws / "data" / "prepared" / "manifest.json").read_text())
    assert manifest["dataset"] == "digits"
    cell = ws / "models" / "scratch" / "all" / "seed0"
    run = RunRecord.read(cell)  # written last
    assert 0.0 <= run.best_val_acc <= 1.0 and (cell / "best.ckpt").is_file()
    # neither run left a read or write lock behind
    rwlock = json.loads((ws / ".dvc" / "tmp" / "rwlock").read_text())
    assert not any(rwlock.values()), rwlock
    print(f"\nfirst repro: exit 0 after {concurrent['first_s']:.1f} s")


def test_repro_gives_up_while_another_dvc_command_holds_the_repo_lock(concurrent):
    """As while ``dvc gc``, ``dvc push`` or another repro between two stages holds the lock."""
    ws = concurrent["ws"]
    lock_before = (ws / "dvc.lock").read_bytes()
    with Repo(str(ws)) as repo, repo.lock:
        t0 = time.monotonic()
        res = _dvc(ws, "repro", timeout=120)
        waited = time.monotonic() - t0
    assert res.returncode != 0, res.stdout + res.stderr
    assert "ERROR: Unable to acquire lock. Most likely another DVC process is running" \
        in res.stderr, res.stderr
    assert _ran(res.stdout + res.stderr) == [] and "skipping" not in res.stdout
    assert (ws / "dvc.lock").read_bytes() == lock_before
    print(f"\nrepro gave up after {waited:.1f} s with:\n{res.stderr}")


def test_failed_stage_leaves_dvc_lock_unchanged(concurrent):
    """Switch to CIFAR-10, offline, with a corrupt (partly downloaded) archive already in
    data/raw: the params pass the schema, and ``prepare`` fails at run time on the checksum.
    dvc.lock, the training stage's outputs, the archive and the cache keep what they had, and
    ``dvc checkout`` gets the workspace back to the last good run."""
    ws = concurrent["ws"]
    params = ws / "params.yaml"
    good_params = params.read_bytes()
    lock_before = (ws / "dvc.lock").read_bytes()
    prepared_before = _digests(ws / "data" / "prepared")
    scratch_before = _digests(ws / "models" / "scratch" / "all" / "seed0")
    archive = ws / "data" / "raw" / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    partial = b"\x1f\x8b\x08\x00" + bytes(range(256)) * 64  # a gzip header, then the cut
    archive.write_bytes(partial)
    p = yaml.safe_load(good_params)
    p["base"]["dataset"] = "cifar10"
    p["prepare"]["download"] = False
    params.write_text(yaml.safe_dump(p))
    try:
        res = _dvc(ws, "repro", TRAINING)
    finally:
        params.write_bytes(good_params)

    assert res.returncode != 0, res.stdout + res.stderr
    assert _ran(res.stdout) == ["prepare"]  # it failed while running, after the schema check
    assert "checksum mismatch for data/raw/cifar10/cifar-10-python.tar.gz" in res.stderr, \
        res.stderr
    assert "failed to reproduce 'prepare'" in res.stderr and "Traceback" not in res.stderr
    assert (ws / "dvc.lock").read_bytes() == lock_before
    assert _digests(ws / "models" / "scratch" / "all" / "seed0") == scratch_before
    assert archive.read_bytes() == partial  # left in place for the user to look at
    assert sorted(p.name for p in (ws / "data").iterdir()) in (["raw"], ["prepared", "raw"])

    # data/prepared is not `persist`: DVC deletes it before it runs the stage. The last good
    # arrays are in the cache, and dvc.lock still points at them.
    checkout = _dvc(ws, "checkout", "prepare")
    assert checkout.returncode == 0, checkout.stdout + checkout.stderr
    assert _digests(ws / "data" / "prepared") == prepared_before
    status = _dvc(ws, "status", "--with-deps", TRAINING)
    assert UP_TO_DATE in status.stdout, status.stdout + status.stderr


def test_killed_repro_resumes_from_the_last_checkpoint(concurrent):
    """SIGKILL the whole ``dvc repro`` mid-training: ``persist: true`` keeps the checkpoint dir,
    and the next ``dvc repro`` resumes the same MLflow run from ``last.ckpt``."""
    import os
    import signal

    ws = concurrent["ws"]
    params = ws / "params.yaml"
    good_params = params.read_bytes()
    p = yaml.safe_load(good_params)
    p["scratch"]["scratch"]["train"].update(epochs=6, batch_size=16)
    params.write_text(yaml.safe_dump(p))
    out = ws / "models" / "scratch" / "all" / "seed0"
    try:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", TRAINING], cwd=ws,
                                env=_env(ws.parent), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180
        # the finished run is cleared when the new one starts; then its first checkpoint
        while (out / "run.json").exists() or not (out / "last.ckpt").exists():
            assert proc.poll() is None, "dvc repro ended before it could be killed"
            assert time.monotonic() < deadline, "no new checkpoint within 180 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage, as a lost node would
        proc.wait()
        assert not (out / "run.json").exists()
        run_id = json.loads((out / "resume.json").read_text())["run_id"]
        client = mlflow.MlflowClient(_env(ws.parent)["MLFLOW_TRACKING_URI"])
        assert client.get_run(run_id).info.status == "RUNNING"  # the orphan a SIGKILL leaves

        res = _dvc(ws, "repro", TRAINING)
    finally:
        params.write_bytes(good_params)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resuming from models/scratch/all/seed0/last.ckpt in MLflow run {run_id}" in res.stderr, \
        res.stderr
    assert json.loads((out / "run.json").read_text())["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "1"
    # one val/acc per epoch; the epoch the kill interrupted may have logged it before its
    # checkpoint was written, and then logs it again, at the same step with the same value
    acc = {}
    for m in client.get_metric_history(run_id, "val/acc"):
        assert acc.setdefault(m.step, m.value) == m.value
    assert len(acc) == 6
