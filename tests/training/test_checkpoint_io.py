"""Checkpoint writes: a crash mid-save or a non-finite weight leaves the previous file intact."""

import pytest
import torch

from pipeline.training.checkpoint_io import FiniteCheckpointIO, first_non_finite


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
