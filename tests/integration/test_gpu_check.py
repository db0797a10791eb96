"""The GPU check (benchmarks/gpu_check.sh) cannot run here, so these catch it rotting cheaply:
the wheel lock, the scripts' syntax, the JSON it keeps, its summary, and one step's tiny mode on
the CPU. The whole rehearsal is benchmarks/gpu_rehearsal.sh (a few minutes, not in the suite)."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from bench_helpers import benchmark_module

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _names(path: Path) -> list[str]:
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture
def gpu_check(monkeypatch, tmp_path):
    monkeypatch.setenv("GPU_CHECK_TINY", "1")
    monkeypatch.setenv("GPU_CHECK_WORK", str(tmp_path / "work"))
    with benchmark_module("gpu_check", monkeypatch) as module:
        yield module


def test_the_wheel_lock_pins_distinct_packages_the_image_lacks():
    pins = _names(BENCH / "gpu_wheels.lock")
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+", p) for p in pins), pins
    names = [_norm(p.split("==")[0]) for p in pins]
    assert len(set(names)) == len(names), "one version of each: two stop the whole install"
    assert {"pydantic", "albumentations", "mlflow-skinny", "sqlalchemy", "alembic"} <= set(names)
    image = {_norm(re.split(r"[=<>]", n)[0]) for n in _names(BENCH / "gpu_image.txt")}
    assert not set(names) & image, "an offline wheel and in the image: two versions on the path"
    # the project's lock and the offline wheels agree on every version they share
    locked = dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)", (ROOT / "requirements.lock").read_text(),
                             re.M))
    locked = {_norm(k): v for k, v in locked.items()}
    for p in pins:
        name, version = p.split("==")
        assert locked.get(_norm(name), version) == version, p


def test_the_cuda_tests_it_runs_exist(gpu_check):
    """The tests step names the tests that skip without CUDA by path: each path and test is
    there (a move of the test files broke it once)."""
    for test_id in gpu_check.CUDA_TESTS:
        path, name = test_id.split("::")
        assert f"def {name.split('[')[0]}(" in (ROOT / path).read_text(), test_id


@pytest.mark.parametrize("script", ["gpu_check.sh", "gpu_fetch.sh", "gpu_rehearsal.sh"])
def test_the_scripts_parse(script):
    subprocess.run(["bash", "-n", str(BENCH / script)], check=True)


def test_the_json_keeps_each_steps_figures_and_how_it_ended(gpu_check, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    gpu_check.update(out, "env", versions={"torch": "x"})
    gpu_check.update(out, "env", device="cpu")
    assert gpu_check.main(["mark", "--out", str(out), "--key", "env", "--rc", "0",
                           "--seconds", "3"]) == 0
    gpu_check.main(["mark", "--out", str(out), "--key", "fmnist", "--rc", "124", "--timeout",
                    "200"])
    gpu_check.main(["mark", "--out", str(out), "--key", "fits", "--rc", "1"])
    doc = json.loads((out / "gpu_check.json").read_text())
    assert doc["tiny"] is True and doc["schema"] == 1
    assert doc["steps"]["env"] == {"versions": {"torch": "x"}, "device": "cpu", "status": "ok",
                                   "seconds": 3.0, "timeout_s": None}
    assert doc["steps"]["fmnist"]["status"] == "timed out after 200.0 s"
    assert doc["steps"]["fits"]["status"] == "failed (exit 1)"
    assert [p.name for p in out.iterdir()] == ["gpu_check.json"]  # no temporary file left


def test_a_tiny_bench_step_runs_on_the_cpu_and_the_summary_tables_it(gpu_check, tmp_path):
    out = tmp_path / "out"
    assert gpu_check.main(["bench", "--out", str(out), "--key", "bench_ti4", "--",
                           "--variant-name", "scratch_ti4", "--no-data", "--batch-sizes", "4",
                           "--steps", "1", "--rounds", "1"]) == 0
    fig = json.loads((out / "gpu_check.json").read_text())["steps"]["bench_ti4"]
    row = fig["batches"]["4"]
    assert row["ours"]["images_per_s"] > 0 and row["timm"]["images_per_s"] > 0
    assert row["ours"]["params"] == row["timm"]["params"]  # the same sizes
    assert fig["model"]["img_size"] == 32 and fig["flops_per_image"] > 0
    with pytest.raises(SystemExit, match="not ok: bench_ti4"):  # still "running"
        gpu_check.main(["summary", "--out", str(out), "--wall", "5"])
    gpu_check.main(["mark", "--out", str(out), "--key", "bench_ti4", "--rc", "0"])
    assert gpu_check.main(["summary", "--out", str(out), "--wall", "5"]) == 0
    summary = (out / "summary.md").read_text()
    assert "| scratch_ti4 @32 | 4 | no |" in summary and "TINY" in summary


def test_a_tiny_fsdp_step_reloads_its_checkpoint_and_model_file_on_the_cpu(gpu_check, tmp_path):
    """The step that reads training's outputs back (the Lightning checkpoint's ViT weights, the
    model file, evaluated as the evaluate stage does): on the CPU, without FSDP, in seconds."""
    out = tmp_path / "out"
    assert gpu_check.main(["fsdp", "--out", str(out)]) == 0
    fig = json.loads((out / "gpu_check.json").read_text())["steps"]["fsdp"]
    assert fig["strategy"] == "auto" and fig["epochs"] == 2
    assert fig["full_unsharded_shapes"] and fig["model_file_matches_checkpoint"]
    assert fig["reload_agrees"] and fig["reloaded_val_acc"] == pytest.approx(
        fig["checkpoint_val_acc"], abs=1 / fig["val_images"] + 1e-6)
