"""The comparison parent's name says what differs from the experiment's previous comparison
first, so two parents' names differ where the MLflow UI shows them (cut off)."""

from pipeline.tracking.comparison import NAME_LIMIT, Group, changes, parent_name


def _group(**params) -> Group:
    return Group(key="0123456789abcdef", variants=("scratch", "finetune"), dataset="digits",
                 params=params)


def test_the_first_comparison_is_named_by_its_variants():
    assert parent_name(_group(a=1), None) == "digits: scratch vs finetune [01234567]"


def test_later_ones_start_with_what_changed():
    before = {"finetune.finetune.train.optimizer.lr": 0.03, "base.seeds": [0, 1], "x": "y"}
    after = {"finetune.finetune.train.optimizer.lr": 0.003, "base.seeds": [0, 1, 2], "z": 1}
    assert changes(before, after) == ["base.seeds [0, 1]→[0, 1, 2]",
                                      "finetune.finetune.train.optimizer.lr 0.03→0.003",
                                      "-x", "+z 1"]
    name = parent_name(_group(**after), before)
    assert name.startswith("base.seeds [0, 1]→[0, 1, 2]; finetune.finetune.train.optimizer.lr")
    assert name.endswith("| digits: scratch vs finetune [01234567]")
    assert parent_name(_group(**after), after).startswith("same params | ")


def test_a_long_diff_is_cut_and_the_name_fits():
    before = {f"k{i}": i for i in range(100)}
    after = {f"k{i}": i + 1 for i in range(100)}
    name = parent_name(_group(**after), before)
    assert len(name) <= NAME_LIMIT and "..." in name
    assert name.endswith("[01234567]")
