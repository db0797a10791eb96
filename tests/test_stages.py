"""Stage CLIs: bad input stops the stage with one clear line (exit 2) before work or deletion."""

import contextlib
import io
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import yaml
from safetensors.torch import save_file

from pipeline.evaluation import comparison_markdown, load_trained
from pipeline.models import CheckpointError

ROOT = Path(__file__).resolve().parent.parent


def _stage(tmp_path, module, *args, params: dict, in_process: bool = True):
    """Run ``python -m pipeline.stages.<module> ARGS`` in ``tmp_path``: in this process (the same
    ``__main__`` code path, without paying the imports again) or as a real subprocess."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    if not in_process:
        return subprocess.run([sys.executable, "-m", f"pipeline.stages.{module}", *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    out, err, cwd, argv = io.StringIO(), io.StringIO(), os.getcwd(), sys.argv
    code = 0
    try:
        os.chdir(tmp_path)
        sys.argv = [f"pipeline.stages.{module}", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_module(f"pipeline.stages.{module}", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(cwd)
        sys.argv = argv
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_params_typo_stops_before_anything_is_touched(tmp_path, tiny_params):
    tiny_params["prepare"]["max_trian"] = 10
    out = tmp_path / "data" / "prepared"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("earlier results")
    res = _stage(tmp_path, "prepare", "--out", "data/prepared", params=tiny_params,
                 in_process=False)  # one real process: the CLI's exit code and stderr
    assert res.returncode == 2
    assert "prepare.max_trian: unknown key (typo?); value 10" in res.stderr
    assert "Traceback" not in res.stderr
    assert (out / "keep.txt").read_text() == "earlier results"


def test_missing_raw_data_offline_names_the_file(tmp_path, tiny_params):
    tiny_params["base"]["dataset"] = "cifar10"
    tiny_params["prepare"]["download"] = False
    res = _stage(tmp_path, "prepare", "--raw", "raw", "--out", "prepared", params=tiny_params)
    assert res.returncode == 2
    assert "cifar-10-python.tar.gz" in res.stderr
    assert not (tmp_path / "prepared").exists()


def test_pretrained_weights_that_do_not_fit_fail_in_the_pretrained_stage(tmp_path, tiny_params):
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=16, depth=1)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
              str(tmp_path / "small.safetensors"))
    tiny_params["pretrained"].update(source="file", path=str(tmp_path / "small.safetensors"))
    res = _stage(tmp_path, "pretrained", "--out", "models/pretrained", params=tiny_params)
    assert res.returncode == 2
    assert "checkpoint does not fit ViT config" in res.stderr and "shape clashes" in res.stderr


def test_pretrained_from_hub_offline_points_to_the_quick_run(tmp_path, tiny_params):
    tiny_params["pretrained"].update(source="hub", hub_id="timm/not-cached-here")
    res = _stage(tmp_path, "pretrained", "--out", "models/pretrained", params=tiny_params)
    assert res.returncode == 2
    assert "timm/not-cached-here" in res.stderr and "make quick" in res.stderr


def test_load_trained_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*best.ckpt"):
        load_trained(tmp_path / "best.ckpt")


def test_comparison_table_reports_the_difference():
    row = dict(model="m", top1=0.9, top5=1.0, loss=0.3, num_params=2e6, images_per_s=100,
               best_val_acc=0.91)
    md = comparison_markdown({"scratch": row, "finetune": {**row, "top1": 0.95}}, "digits")
    assert "| finetune | m | 95.00% |" in md
    assert "finetune - scratch: +5.00 points top-1." in md


def test_failed_fetch_keeps_the_previous_pretrained_weights(tmp_path, tiny_params):
    previous = tmp_path / "models" / "pretrained"
    previous.mkdir(parents=True)
    (previous / "model.safetensors").write_bytes(b"weights fetched earlier")
    tiny_params["pretrained"].update(source="file", path=str(tmp_path / "missing.safetensors"))
    res = _stage(tmp_path, "pretrained", "--out", "models/pretrained", params=tiny_params)
    assert res.returncode == 2 and "missing.safetensors" in res.stderr
    assert (previous / "model.safetensors").read_bytes() == b"weights fetched earlier"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["pretrained"]
