"""python -m pipeline.provenance -- CMD: runs CMD and records it only when it succeeds."""

import json
import sys

import pytest

from pipeline.provenance import RUN_RECORD, main


def test_a_command_that_succeeds_is_recorded_and_one_that_fails_is_not(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["--dir", str(tmp_path), "--", sys.executable, "-c", "raise SystemExit(3)"])
    assert exit_.value.code == 3 and not (tmp_path / RUN_RECORD).exists()
    with pytest.raises(SystemExit) as exit_:
        main(["--dir", str(tmp_path), "--", sys.executable, "-c", "pass"])
    assert exit_.value.code == 0
    record = json.loads((tmp_path / RUN_RECORD).read_text())
    assert record["command"].endswith("-c pass") and record["fresh"] is True
    assert record["cells"] is None and record["machine"]["cores"] >= 1
