"""The DataModule inside Lightning: a fit of a few steps and a predict over the test split, with
and without worker processes (the rest of its contract: tests/unit/data/test_datamodule.py)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from pipeline.data import PreparedDataModule


class _Tiny(L.LightningModule):
    def __init__(self, in_features, num_classes):
        super().__init__()
        self.head = torch.nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.head(
            x.flatten(1).float() / 255.0
        )  # conversion on the device, as the model does

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def predict_step(self, batch, _):
        return self(batch[0]).argmax(1)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_lightning_fit_and_predict(digits_dir, digits_test_dir, num_workers):
    dm = PreparedDataModule(
        digits_dir, batch_size=8, num_workers=num_workers, crop_padding=1, hflip=True,
        test_dir=digits_test_dir,
    )
    model = _Tiny(8 * 8 * 1, dm.num_classes)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", devices=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2
    predictions = trainer.predict(model, datamodule=dm)
    assert sum(len(p) for p in predictions) == 40  # every test image once
