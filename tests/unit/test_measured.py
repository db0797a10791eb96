"""The docs' tables of measured results: a run's record (pipeline/provenance.py) and the table
made from its results (pipeline/report/measured.py), checked on a known study; and every table
in docs/results/ is what its snapshot renders to."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import RecordError
from pipeline.evaluation.study import Cell, summarise
from pipeline.provenance import cpu_model, read_record, record_run
from pipeline.report import measured

ROOT = Path(__file__).resolve().parents[2]
TOPS = {"scratch": [0.60, 0.62, 0.58], "finetune": [0.70, 0.75, 0.71]}


def _run(tmp_path: Path, tops_by_variant: dict = TOPS) -> Path:
    cells = []
    for variant, tops in tops_by_variant.items():
        for seed, top1 in enumerate(tops):
            correct = np.zeros(100, bool)
            correct[: round(100 * top1)] = True
            kind = variant.split("-")[0]
            cells.append(Cell(variant, kind, "30", seed, 300, top1, correct,
                              tta_top1=top1 + 0.05, tta_correct=correct))
    study = summarise(cells, tta_views="the image and its mirror image")
    results = tmp_path / "results"
    results.mkdir(parents=True)
    (results / "study.json").write_text(json.dumps(study.to_dict()))
    (results / "cells.json").write_text(json.dumps(
        {f"{c.variant}/30/seed{c.seed}": {"variant": c.variant, "budget": "30", "seed": c.seed,
                                          "top1": c.top1, "test_images": 100} for c in cells}))
    (tmp_path / "params.yaml").write_text("base: {dataset: digits}\n")
    return tmp_path


def test_the_table_states_the_answer_and_what_made_it(tmp_path):
    run = _run(tmp_path)
    record_run(run, "python -m pipeline.workspace --params p.yaml --dir d", 123.4, fresh=True)
    text = measured.render(measured.snapshot(run))
    lines = text.splitlines()
    assert "Test top-1 on digits (100 test images)" in lines[0]
    assert "seeds 0, 1, 2" in lines[0] and "Student's t over 3 seeds" in lines[0]
    assert "the image and its mirror image" in lines[0]
    made = lines[2]
    assert "`python -m pipeline.workspace --params p.yaml --dir d`" in made
    assert "123 s of wall time from an empty workspace" in made and "cores" in made
    assert lines[4] == "| | 30 per class (300 labelled images) |"
    # gain: finetune minus scratch, paired over the 3 seeds: +12.00 with its t interval
    diff = np.array(TOPS["finetune"]) - np.array(TOPS["scratch"])
    half = 4.302653 * diff.std(ddof=1) / np.sqrt(3)
    gain = next(line for line in lines if line.startswith("| **gain**"))
    assert gain == (f"| **gain**: finetune − scratch | +12.00 [{100 * (diff.mean() - half):.2f}"
                    f", {100 * (diff.mean() + half):.2f}] |")
    assert "| top-1: scratch | 60.00 [" in text
    assert "| top-1 with TTA: finetune | 77.00 [" in text
    # seed by seed: the paired differences and each variant's top-1
    assert "| 30 per class (300 labelled images) | seed 0 | seed 1 | seed 2 |" in lines
    assert "| **gain**: finetune − scratch | +10.00 | +13.00 | +13.00 |" in lines
    assert "| top-1: scratch | 60.00 | 62.00 | 58.00 |" in lines


def test_a_record_for_other_results_is_refused(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(RecordError, match="no run record"):
        measured.snapshot(run)
    record_run(run, "make quick", 1.0, fresh=False)
    assert read_record(run)["command"] == "make quick"
    (run / "results" / "cells.json").write_text("{}")  # e.g. dvc exp run since
    with pytest.raises(RecordError, match="recorded for other results"):
        measured.snapshot(run)


def test_the_command_writes_the_snapshot_and_table_and_checks_them(tmp_path, capsys):
    run = _run(tmp_path / "run")
    record_run(run, "make quick", 10.0, fresh=False)
    out = tmp_path / "docs" / "quick"
    measured.main([str(run), str(out)])
    assert out.with_suffix(".md").read_text() == measured.render(
        json.loads(out.with_suffix(".json").read_text()))
    assert "some stages' outputs were already there" in out.with_suffix(".md").read_text()
    measured.main(["--check", str(out.parent)])
    assert not out.with_suffix(".png").exists()  # the run drew no figure
    out.with_suffix(".md").write_text("edited by hand\n")
    with pytest.raises(SystemExit, match="stale"):
        measured.main(["--check", str(out.parent)])
    with pytest.raises(SystemExit) as exit_:
        measured.main([str(tmp_path / "nowhere"), str(out)])
    assert exit_.value.code == 2
    assert "no run record" in capsys.readouterr().err


def test_every_table_in_the_docs_is_what_its_snapshot_gives():
    assert measured.check(ROOT / "docs" / "results") == []


def test_the_cpu_is_named_with_its_family_and_model():
    info = "vendor_id : AuthenticAMD\ncpu family : 25\nmodel : 17\nmodel name : AMD EPYC\n"
    assert cpu_model(info) == "AMD EPYC (family 25, model 17)"
    assert cpu_model("model name : Apple M2\n") == "Apple M2"


def test_the_tuned_arms_gain_and_what_tuning_changed_are_shown_seed_by_seed(tmp_path):
    tops = {**TOPS, "scratch-tuned": [0.61, 0.60, 0.59], "finetune-tuned": [0.80, 0.85, 0.81]}
    run = _run(tmp_path, tops)
    record_run(run, "make quick", 1.0, fresh=True)
    lines = measured.render(measured.snapshot(run)).splitlines()
    assert "| **gain**: finetune-tuned − scratch-tuned | +19.00 | +25.00 | +22.00 |" in lines
    assert "| tuned minus fixed gain: finetune − scratch | +9.00 | +12.00 | +9.00 |" in lines
    assert any(line.startswith("| tuned minus fixed gain: finetune − scratch | +10.00 [")
               for line in lines)


def test_the_readme_and_home_page_quote_the_quick_runs_gains_as_measured():
    """The README's and the docs home page's answer is the generated quick-run table's, to the
    digit shown."""
    snap = json.loads((ROOT / "docs" / "results" / "quick.json").read_text())
    for page in (ROOT / "README.md", ROOT / "docs" / "index.md"):
        text = " ".join(page.read_text().split())  # lines wrap anywhere
        for kind in ("gain", "gain_shift"):
            for by_budget in snap["study"][kind].values():
                for iv in by_budget.values():
                    row = (f"{100 * iv['mean']:+.1f} ± {100 * iv['half_width']:.1f}",
                           f"{100 * iv['low']:.1f} to {100 * iv['high']:.1f}")
                    assert all(part in text for part in row), (page.name, row)


def test_a_knobs_effect_is_paired_seed_by_seed_and_kept_for_the_next_table(tmp_path, capsys):
    tops = {**TOPS, "scratch-tuned": [0.61, 0.60, 0.59], "finetune-tuned": [0.80, 0.85, 0.81]}
    run = _run(tmp_path / "run", tops)
    record_run(run, "make knobs", 1.0, fresh=True)
    out = tmp_path / "docs" / "knobs"
    measured.main([str(run), str(out), "--effect", "scratch:scratch-tuned"])
    lines = out.with_suffix(".md").read_text().splitlines()
    assert any(line.startswith("| **effect**: scratch-tuned − scratch | +0.00 [")
               for line in lines)
    assert "| **effect**: scratch-tuned − scratch | +1.00 | \u22122.00 | +1.00 |" in lines
    assert any(line.startswith("| TTA effect: scratch | +5.00")
               for line in lines)
    measured.main([str(run), str(out)])  # no --effect: the snapshot's are kept
    assert out.with_suffix(".md").read_text().splitlines() == lines
    with pytest.raises(SystemExit) as exit_:
        measured.main([str(run), str(tmp_path / "other"), "--effect", "scratch:nope"])
    assert exit_.value.code == 2 and "no variant 'nope'" in capsys.readouterr().err


def test_the_reports_lead_figure_goes_beside_the_table_and_is_checked(tmp_path):
    run = _run(tmp_path / "run")
    figures = run / "results" / "report" / "figures"
    figures.mkdir(parents=True)
    (figures / "study.png").write_bytes(b"\x89PNG the dot plot")
    record_run(run, "make quick", 1.0, fresh=True)
    out = tmp_path / "docs" / "quick"
    measured.write(run, out)
    assert out.with_suffix(".png").read_bytes() == b"\x89PNG the dot plot"
    assert "](quick.png)" in out.with_suffix(".md").read_text()
    assert measured.check(out.parent) == []
    out.with_suffix(".png").write_bytes(b"\x89PNG another figure")
    assert measured.check(out.parent) == [str(out.with_suffix(".png"))]


def test_the_readme_quotes_the_studys_tuned_gains_as_measured():
    snap = json.loads((ROOT / "docs" / "results" / "study.json").read_text())
    readme = " ".join((ROOT / "README.md").read_text().split())  # lines wrap anywhere
    (tuned,) = [by for pair, by in snap["study"]["gain"].items() if pair.endswith("-tuned")]
    for iv in tuned.values():
        quoted = f"{100 * iv['mean']:+.1f} (CI {100 * iv['low']:.1f} to {100 * iv['high']:.1f})"
        assert quoted in readme, quoted


def test_one_run_of_one_arm_reads_as_one_run(tmp_path):
    run = _run(tmp_path, {"scratch": [0.61]})
    record_run(run, "make fmnist", 1.0, fresh=True)
    lines = measured.render(measured.snapshot(run)).splitlines()
    assert "in points: one run (seed 0) with its interval in brackets" in lines[0]
    assert "bootstrap over test images" in lines[0] and "paired" not in lines[0].split("(TTA)")[0]
    assert not [line for line in lines if "seed 0 |" in line]  # no seed-by-seed table
    figures = run / "results" / "report" / "figures"
    figures.mkdir(parents=True)
    (figures / "study.png").write_bytes(b"\x89PNG one dot")
    out = tmp_path / "docs" / "fmnist"
    measured.write(run, out)
    assert not out.with_suffix(".png").exists()  # one variant at one budget: no figure
