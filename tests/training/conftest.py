"""Shared by the training tests: a small prepared digits set, and a way to give the Trainer that
``pipeline.training.run.fit`` builds extra callbacks (the faults a test injects)."""

import lightning as L
import pytest

from pipeline.data import load_raw, prepare_dataset


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """128 train / 32 val / 40 test digits, 8x8 gray."""
    out = tmp_path_factory.mktemp("digits") / "prepared"
    prepare_dataset(load_raw("digits", out.parent / "raw"), out, val_fraction=0.2, seed=0,
                    max_train=160, max_test=40)
    return out


@pytest.fixture
def patch_trainer(monkeypatch):
    """``patch_trainer(*callbacks, edit=None, mp=monkeypatch)``: every ``L.Trainer`` built until
    ``mp`` is undone gets ``callbacks`` too, and ``edit(kwargs)`` may change its arguments."""
    real = L.Trainer

    def patch(*callbacks, edit=None, mp=monkeypatch):
        def make(**kw):
            kw["callbacks"] = [*kw["callbacks"], *callbacks]
            if edit is not None:
                edit(kw)
            return real(**kw)

        mp.setattr(L, "Trainer", make)

    return patch
