"""Searches (pipeline/tuning/search.py) on the tiny digits: real trials, real Optuna storage.

The same params give the same trials; a killed search resumes without losing or repeating a
trial; a grid visits every point once; no trial opens the test split; two processes share one
search through its journal file; the choice is the best completed trial."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.config import SearchParams, parse_params
from pipeline.records import Choice, SearchRecord
from pipeline.training.start import start_model
from pipeline.tuning import search as search_mod
from pipeline.tuning.search import SearchJob, run_search

ROOT = Path(__file__).resolve().parents[2]

SCRATCH_SEARCH = {
    "trials": 3, "sampler": {"name": "random", "seed": 7}, "seed": 5, "epochs": 2,
    "space": {"train.optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True},
              "train.label_smoothing": {"choices": [0.0, 0.1]}},
}


def _job(params, digits_dir, out: Path, search: dict | None = None) -> SearchJob:
    recipe = params.scratch["scratch"]
    sp = SearchParams.model_validate(search or SCRATCH_SEARCH)

    def start(r, seed):
        return start_model(r, num_classes=10, seed=seed)

    return SearchJob(arm="scratch", variant="scratch", budget="all", search=sp, recipe=recipe,
                     data_dir=digits_dir, out_dir=out / "search", chosen_file=out / "chosen.json",
                     trainer_params=params.base.trainer, start=start, identity={"data": "digits"})


@pytest.fixture
def params(tiny_params):
    return parse_params(tiny_params)


def _trials(record: SearchRecord) -> list[tuple]:
    return [(t.number, t.state, tuple(sorted(t.params.items())), t.value) for t in record.trials]


def test_the_same_params_give_the_same_trials_and_the_best_is_chosen(params, digits_dir,
                                                                      tmp_path):
    a, choice = run_search(_job(params, digits_dir, tmp_path / "a"))
    b, _ = run_search(_job(params, digits_dir, tmp_path / "b"))
    assert _trials(a) == _trials(b)
    assert len(a.trials) == 3 and {t.state for t in a.trials} == {"complete"}
    assert len({tuple(sorted(t.params.items())) for t in a.trials}) == 3
    best = max(a.trials, key=lambda t: (t.value, -t.number))
    assert (choice.trial, choice.overrides, choice.value) == (best.number, best.params,
                                                              best.value)
    for t in a.trials:  # the curve, its best and the compute are the trial's own
        assert t.value == max(t.curve) and t.epochs == len(t.curve) == 2
        assert t.seconds > 0 and t.flops > 0 and t.flops == pytest.approx(2 * t.flops_per_epoch)
    assert a.val_images == 32 and a.epochs == 2


def test_a_killed_search_resumes_without_losing_or_repeating_a_trial(params, digits_dir,
                                                                     tmp_path, monkeypatch):
    reference, _ = run_search(_job(params, digits_dir, tmp_path / "ref",
                                   {**SCRATCH_SEARCH, "trials": 4}))
    job = _job(params, digits_dir, tmp_path / "run", {**SCRATCH_SEARCH, "trials": 4})
    real_fit = search_mod.fit_trial
    calls = []

    def dies_in_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies mid-trial: the trial stays RUNNING
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(search_mod, "fit_trial", dies_in_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_search(job)
    monkeypatch.setattr(search_mod, "fit_trial", real_fit)
    seen = []
    record, choice = run_search(job, on_trial=lambda t: seen.append(t.number))
    # trials 0 and 1 kept (not run again); 2 was interrupted: run again as 3, with its params
    assert seen == [3, 4]
    by_number = {t.number: t for t in record.trials}
    assert sorted(by_number) == [0, 1, 3, 4]
    ref = {t.number: t for t in reference.trials}
    for n in (0, 1):
        assert by_number[n].params == ref[n].params and by_number[n].value == ref[n].value
    assert by_number[3].params == ref[2].params and by_number[3].value == ref[2].value
    assert len(record.trials) == 4 and choice is not None


def test_a_grid_visits_each_point_once_and_no_trial_opens_the_test_split(params, digits_dir,
                                                                         tmp_path, monkeypatch):
    from pipeline.data import splits

    opened = []
    real = splits.load_prepared

    def spy(path, *a, **kw):
        opened.append(Path(path).resolve())
        return real(path, *a, **kw)

    monkeypatch.setattr(splits, "load_prepared", spy)
    grid = {"trials": 4, "sampler": {"name": "grid", "seed": 0}, "epochs": 1,
            "space": {"train.optimizer.lr": {"choices": [0.001, 0.003]},
                      "train.label_smoothing": {"choices": [0.0, 0.1]}}}
    record, _ = run_search(_job(params, digits_dir, tmp_path, grid))
    points = [tuple(sorted(t.params.items())) for t in record.trials]
    assert len(points) == 4 and len(set(points)) == 4
    assert opened and set(opened) == {Path(digits_dir).resolve()}  # never the test dir


def test_a_changed_search_starts_afresh_and_keeps_the_old_storage(params, digits_dir, tmp_path):
    job = _job(params, digits_dir, tmp_path, {**SCRATCH_SEARCH, "trials": 1})
    run_search(job)
    changed = _job(params, digits_dir, tmp_path,
                   {**SCRATCH_SEARCH, "trials": 1, "sampler": {"name": "random", "seed": 8}})
    record, _ = run_search(changed)
    assert [t.number for t in record.trials] == [0]
    assert (tmp_path / "search" / "study.journal.old").exists()


WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import make_tiny_params
    from pipeline.config import SearchParams, parse_params
    from pipeline.training.start import start_model
    from pipeline.tuning.search import SearchJob, run_search
    params = parse_params(make_tiny_params())
    sp = SearchParams.model_validate(json.loads({search!r}))
    job = SearchJob(arm="scratch", variant="scratch", budget="all", search=sp,
                    recipe=params.scratch["scratch"], data_dir=Path({data!r}),
                    out_dir=Path({out!r}), chosen_file=Path({out!r}) / "chosen.json",
                    trainer_params=params.base.trainer,
                    start=lambda r, s: start_model(r, num_classes=10, seed=s),
                    identity={{"data": "digits"}})
    ran = []
    run_search(job, join=True, on_trial=lambda t: ran.append(t.number))
    print("RAN", json.dumps(ran))
""")


def test_two_processes_share_one_search_through_its_journal(params, digits_dir, tmp_path):
    search = {**SCRATCH_SEARCH, "trials": 6, "epochs": 3}
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(ROOT / "tests"), search=json.dumps(search),
                                    data=str(digits_dir), out=str(tmp_path / "search")))
    env = {"OMP_NUM_THREADS": "1", "PATH": "", "NO_ALBUMENTATIONS_UPDATE": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), "join"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # two extra workers at once on one journal file
    ran = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        ran.append(json.loads(out.split("RAN", 1)[1]))
    numbers = sorted(ran[0] + ran[1])
    assert len(numbers) == len(set(numbers))  # none run twice
    assert ran[0] and ran[1]  # both worked on it
    # at most one trial beyond K: two workers may ask for the last place at once
    assert 6 <= len(numbers) <= 7 and numbers == list(range(len(numbers)))
    # the search's own process then finds every trial done: it runs none and chooses
    job = _job(params, digits_dir, tmp_path, search)
    seen = []
    record, choice = run_search(job, on_trial=lambda t: seen.append(t.number))
    assert seen == [] and sorted(t.number for t in record.trials) == numbers
    assert choice.trial in numbers


def test_the_tune_stage_writes_the_trials_and_the_choice(tiny_params, digits_dir, tmp_path):
    tiny_params["tune"]["scratch"] = {"scratch": {**SCRATCH_SEARCH, "trials": 2, "epochs": 1}}
    path = tmp_path / "params.yaml"
    import yaml

    path.write_text(yaml.safe_dump(tiny_params))
    out = tmp_path / "models" / "scratch-tuned" / "all"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.tune", "scratch", "--params", str(path),
         "--data", str(digits_dir), "--out", str(out / "search"),
         "--chosen", str(out / "chosen.json")],
        cwd=ROOT, capture_output=True, text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = SearchRecord.read(out / "search")
    choice = Choice.read(out)
    assert len(record.trials) == 2 and record.run_id
    assert choice.trial == record.chosen and choice.trials == 2
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(record.run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{record.run_id}'")
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert {c.data.tags["trial.state"] for c in children} == {"complete"}
    assert all(len(client.get_metric_history(c.info.run_id, "val/acc")) == 1 for c in children)
