"""Stage CLIs: bad input stops the stage with one clear line (exit 2) before work or deletion."""

import contextlib
import io
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import yaml
from safetensors.torch import save_file

from pipeline.models import CheckpointError, load_model_file

ROOT = Path(__file__).resolve().parents[2]


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
    tiny_params["pretrained"]["tiny"] = {"source": "file",
                                         "path": str(tmp_path / "small.safetensors")}
    res = _stage(tmp_path, "pretrained", "tiny", params=tiny_params)
    assert res.returncode == 2
    assert "pretrained.tiny" in res.stderr and "does not fit finetune.finetune.model" in res.stderr
    assert "checkpoint does not fit ViT config" in res.stderr and "shape clashes" in res.stderr


def test_pretrained_from_hub_offline_points_to_the_quick_run(tmp_path, tiny_params):
    tiny_params["pretrained"]["tiny"] = {"source": "hub", "hub_id": "timm/not-cached-here"}
    res = _stage(tmp_path, "pretrained", "tiny", params=tiny_params)
    assert res.returncode == 2
    assert "timm/not-cached-here" in res.stderr and "make quick" in res.stderr


def test_a_missing_model_file_names_the_stage_to_run(tmp_path):
    with pytest.raises(CheckpointError, match="no model file at .*model.safetensors: run the "
                                              "stage that trains it first"):
        load_model_file(tmp_path / "model.safetensors")


def test_unknown_variant_or_weights_name_is_named(tmp_path, tiny_params):
    res = _stage(tmp_path, "train", "scratch_ti4", "--out", "models/x", params=tiny_params)
    assert res.returncode == 2
    assert "no variant 'scratch_ti4' in params (scratch: ['scratch']" in res.stderr
    res = _stage(tmp_path, "pretrained", "b16", params=tiny_params)
    assert res.returncode == 2 and "no pretrained.b16 in params (have ['tiny'])" in res.stderr


def test_a_tta_shift_that_does_not_fit_the_test_images_stops_evaluate(tmp_path, tiny_params):
    tiny_params["prepare"].update(max_train=100, max_test=20)
    res = _stage(tmp_path, "prepare", "--out", "data/prepared", params=tiny_params)
    assert res.returncode == 0, res.stderr
    tiny_params["evaluate"]["tta"] = {"hflip": True, "shift": 8}  # digits are 8x8
    res = _stage(tmp_path, "evaluate", "--test", "data/test", "--models", "models",
                 "--out", "results", params=tiny_params)
    assert res.returncode == 2  # before it reads a model
    assert "evaluate.tta.shift: shift must be in [0, 8) for 8x8 images (reflect padding), " \
           "got 8" in res.stderr
    assert not (tmp_path / "results").exists()


def test_failed_fetch_keeps_the_previous_pretrained_weights(tmp_path, tiny_params):
    previous = tmp_path / "models" / "pretrained" / "tiny"
    previous.mkdir(parents=True)
    (previous / "model.safetensors").write_bytes(b"weights fetched earlier")
    tiny_params["pretrained"]["tiny"] = {"source": "file",
                                         "path": str(tmp_path / "missing.safetensors")}
    res = _stage(tmp_path, "pretrained", "tiny", params=tiny_params)
    assert res.returncode == 2 and "missing.safetensors" in res.stderr
    assert (previous / "model.safetensors").read_bytes() == b"weights fetched earlier"
    assert sorted(p.name for p in previous.iterdir()) == ["model.safetensors"]


def test_a_training_cell_never_opens_the_test_split(tmp_path, tiny_params, digits_dir):
    """The train stage on a prepared dir with no test split anywhere (the prepare stage writes
    it to data/test, which no training stage depends on): it trains, and its MLflow run names
    only the splits it read."""
    shutil.copytree(digits_dir, tmp_path / "data" / "prepared")
    tiny_params["scratch"]["scratch"]["train"]["epochs"] = 1
    res = _stage(tmp_path, "train", "scratch", "--data", "data/prepared", "--out", "cell",
                 params=tiny_params)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "cell" / "model.safetensors").is_file() and not (tmp_path / "data" /
                                                                         "test").exists()


def test_evaluate_given_the_prepared_dir_for_the_test_split_names_it(tmp_path, tiny_params):
    """``--test data/prepared`` (the train/val dir): one line naming the dir and where the test
    split is, before any model is read."""
    tiny_params["prepare"].update(max_train=100, max_test=20)
    assert _stage(tmp_path, "prepare", params=tiny_params).returncode == 0
    res = _stage(tmp_path, "evaluate", "--test", "data/prepared", params=tiny_params)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("error: data/prepared holds the splits train, val, not 'test'")
    assert "data/test" in line and not (tmp_path / "results").exists()
