"""Checkpoint writes: a crash mid-save or a non-finite weight leaves the previous file intact;
reading the ViT's weights back out of one (``read_weights``)."""

import pytest
import torch

from pipeline.errors import CheckpointError
from pipeline.training.checkpoint_io import FiniteCheckpointIO, first_non_finite, read_weights


def _ckpt(value: float, epoch: int) -> dict:
    return {"epoch": epoch, "global_step": 10 * epoch,
            "state_dict": {"model.w": torch.full((3,), value), "model.n": torch.tensor(4)}}


def test_non_finite_weight_is_refused_and_previous_kept(tmp_path):
    io, path = FiniteCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint(_ckpt(1.0, epoch=1), path)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(FloatingPointError, match=r"weight 'model.w' is not finite \(epoch 2"):
            io.save_checkpoint(_ckpt(bad, epoch=2), path)
    kept = io.load_checkpoint(path)
    assert kept["epoch"] == 1 and torch.equal(kept["state_dict"]["model.w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_crash_while_writing_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    io, path = FiniteCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint(_ckpt(1.0, epoch=1), path)
    import fsspec.implementations.local as local

    real_write = local.LocalFileOpener.write

    def write_half_then_die(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError("disk died mid-write")

    monkeypatch.setattr(local.LocalFileOpener, "write", write_half_then_die)
    with pytest.raises(OSError, match="disk died"):
        io.save_checkpoint(_ckpt(2.0, epoch=2), path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_first_non_finite_ignores_integer_tensors():
    assert first_non_finite({"a": torch.tensor([1, 2]), "b": torch.zeros(2)}) is None
    assert first_non_finite({"a": torch.zeros(2), "b": torch.tensor([0.0, float("nan")])}) == "b"


def test_read_weights_gives_the_vit_state_dict_of_a_training_checkpoint(tmp_path):
    from pipeline.models import ImageClassifier, VisionTransformer, ViTConfig

    vit = VisionTransformer(ViTConfig(img_size=8, patch_size=4, embed_dim=16, depth=1,
                                      num_heads=2, num_classes=3))
    # the LightningModule holds the ImageClassifier as ``model``: keys ``model.vit.*``
    state = {f"model.{k}": v for k, v in ImageClassifier(vit).state_dict().items()}
    path = tmp_path / "best.ckpt"
    torch.save({"epoch": 0, "state_dict": {**state, "val_acc.tp": torch.zeros(3)}}, path)
    weights = read_weights(path)
    assert sorted(weights) == sorted(vit.state_dict())
    VisionTransformer(vit.cfg).load_state_dict(weights)  # strict
    assert all(torch.equal(weights[k], v) for k, v in vit.state_dict().items())


def test_read_weights_refuses_in_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "none.ckpt"
    with pytest.raises(CheckpointError, match=f"no checkpoint at {missing}"):
        read_weights(missing)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"model.vit.w": torch.ones(1000)}}, good)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError) as e:
        read_weights(cut)
    assert str(e.value).startswith(f"{cut} is not a readable checkpoint (truncated or corrupt")
    assert "\n" not in str(e.value)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.w": torch.ones(2)}}, other)  # not our LightningModule's
    with pytest.raises(CheckpointError, match=f"{other} holds no weights under 'model.vit.'"):
        read_weights(other)
