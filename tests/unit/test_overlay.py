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


def _overlay_variants():
    for path in sorted((ROOT / "overlays").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        for name, recipe in data.get("finetune", {}).items():
            yield pytest.param(data, name, recipe, id=f"{path.stem}:{name}")


# the 10-class counts the docs quote (docs/real-experiment.md)
COUNTS = {"finetune_l16": 303_311_882, "finetune_h14": 630_777_610}


@pytest.mark.parametrize(("overlay", "name", "recipe"), list(_overlay_variants()))
def test_each_ready_fine_tune_is_the_model_its_weights_were_trained_as(overlay, name, recipe):
    """Every fine-tune variant of an overlay builds the architecture of the timm model its hub
    weights belong to: the same parameter count with a 10-class head at its image size."""
    import timm
    import torch

    from pipeline.config import FinetuneRecipe
    from pipeline.models import VisionTransformer

    recipe = FinetuneRecipe.model_validate(recipe)
    hub_id = overlay["pretrained"][recipe.pretrained]["hub_id"]
    with torch.device("meta"):  # no memory: H/14 is 631M parameters
        ours = VisionTransformer(recipe.model.vit_config(num_classes=10))
        ref = timm.create_model(hub_id.split("/", 1)[1], pretrained=False, num_classes=10,
                                img_size=recipe.model.img_size)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in ref.parameters())
    assert count == COUNTS.get(name, count)
    tag_cfg = ref.pretrained_cfg
    assert tuple(recipe.model.mean) == pytest.approx(tag_cfg["mean"])
    assert tuple(recipe.model.std) == pytest.approx(tag_cfg["std"])


@pytest.mark.parametrize("overlay", sorted((ROOT / "overlays").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_overlay_merges_into_params_yaml(tmp_path, overlay):
    target = tmp_path / "params.yaml"
    target.write_text((ROOT / "params.yaml").read_text())
    assert main([str(overlay), "--into", str(target)]) == 0
    params = load_params(target)
    assert set(yaml.safe_load(overlay.read_text())["finetune"]) <= set(params.finetune)
