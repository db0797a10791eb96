"""python -m pipeline.config.overlay: an overlay's entries merged into a params file, its
comments and order kept, the result checked before it is written, a bad overlay refused."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import load_params
from pipeline.config.overlay import main

ROOT = Path(__file__).resolve().parents[2]


def test_an_overlay_adds_its_variants_and_keeps_the_file_as_it_was(tmp_path, capsys):
    target = tmp_path / "params.yaml"
    target.write_text((ROOT / "params.yaml").read_text())
    assert main([str(ROOT / "overlays" / "vit_l16.yaml"), "--into", str(target)]) == 0
    before, after = (ROOT / "params.yaml").read_text().splitlines(), target.read_text().splitlines()
    added = [line for line in after if line not in before]
    assert added[:2] == [
        "  l16_in21k:                # ViT-L/16, ImageNet-21k (then 1k), augreg (Steiner et al. 2021)",
        "    hub_id: timm/vit_large_patch16_224.augreg_in21k_ft_in1k"]
    assert all(line in after for line in before)  # every line, comments and nulls included
    params = load_params(target)
    assert "finetune_l16" in params.finetune and params.finetune["finetune_b16"]


@pytest.mark.parametrize(("overlay", "message"), [
    ("bad: 1\n", "bad: not a section an overlay adds to"),
    ("finetune: 3\n", "finetune: a mapping of names is needed"),
    ("finetune:\n  finetune_x: {pretrained: nowhere}\n", "finetune.finetune_x"),
])
def test_a_bad_overlay_is_refused_and_writes_nothing(tmp_path, capsys, overlay, message):
    """One line for a bad overlay; a result that is not valid params lists each bad key, as
    every params error does."""
    target = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    target.write_text(text)
    bad = tmp_path / "overlay.yaml"
    bad.write_text(overlay)
    assert main([str(bad), "--into", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert target.read_text() == text


def test_every_overlay_is_a_mapping_of_sections():
    for path in sorted((ROOT / "overlays").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert set(data) <= {"pretrained", "scratch", "finetune", "tune"}, path
