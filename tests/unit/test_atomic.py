"""A set of outputs written as a whole (pipeline/atomic.py): filled in a staging dir, moved into
place together; what a killed run leaves is undone by the next."""

from pathlib import Path

from pipeline.atomic import publish, recover, staging_dir


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _old_results(out: Path) -> None:
    (out / "report").mkdir(parents=True)
    (out / "report" / "page.html").write_text("old page")
    (out / "report" / "gone.png").write_text("an old figure")
    (out / "metrics.json").write_text("old")
    (out / "kept.txt").write_text("not ours")


def test_publish_replaces_each_entry_whole_and_leaves_the_rest(tmp_path):
    out = tmp_path / "results"
    _old_results(out)
    staging = staging_dir(out)
    (staging / "report").mkdir()
    (staging / "report" / "page.html").write_text("new page")
    (staging / "metrics.json").write_text("new")
    written = publish(staging, out)
    assert sorted(p.name for p in written) == ["metrics.json", "report"]
    # the old report dir is replaced, not merged: its stale figure is gone
    assert _tree(out) == {"kept.txt": "not ours", "metrics.json": "new",
                          "report/page.html": "new page"}


def test_a_run_killed_before_publishing_leaves_the_old_outputs(tmp_path):
    out = tmp_path / "results"
    _old_results(out)
    before = _tree(out)
    staging = staging_dir(out)
    (staging / "metrics.json").write_text("half")  # then the process dies
    recover(out)  # what the next run does first
    assert _tree(out) == before and not staging.exists()


def test_a_run_killed_between_the_two_renames_gets_its_old_dir_back(tmp_path):
    out = tmp_path / "results"
    _old_results(out)
    before = _tree(out)
    (out / "report").rename(out / ".old-report")  # set aside; the new one never arrived
    recover(out)
    assert _tree(out) == before
    # and an old dir whose replacement did arrive is removed
    (out / ".old-report").mkdir()
    recover(out)
    assert not (out / ".old-report").exists() and _tree(out) == before
