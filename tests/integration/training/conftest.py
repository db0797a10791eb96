"""Shared by the training tests: a way to give the Trainer that ``pipeline.training.fit.fit``
builds extra callbacks (the faults a test injects). The small prepared digits set, ``digits_dir``,
is in tests/conftest.py."""

import lightning as L
import pytest


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
