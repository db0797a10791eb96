"""The frozen-then-unfrozen schedule under DDP: 2 CPU processes (gloo), real all-reduce.

Lightning's BackboneFinetuning unfreezes parameters that DDP never registered (issue 20340);
our design keeps every parameter registered from the start. Asserts, on every rank: the backbone
did not move in the frozen epoch, it moved after, and all ranks hold identical weights.
"""

import lightning as L
import torch

from pipeline.models import build_vit
from pipeline.training import ViTClassifier


class _Data(L.LightningDataModule):
    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (64, 8, 8, 3), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 3, (64,), generator=g)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


class _Record(L.Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_epoch_end(self, trainer, pl_module):
        state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        torch.save(state, f"{self.out_dir}/rank{trainer.global_rank}_epoch{trainer.current_epoch}.pt")


def test_frozen_then_unfrozen_is_identical_across_ddp_ranks(tmp_path):
    torch.manual_seed(0)
    model = build_vit("custom", img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2,
                      num_classes=3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    module = ViTClassifier(model, num_classes=3, optimizer="sgd", lr=0.05, warmup_epochs=0,
                           freeze_epochs=1, backbone_lr_scale=0.5)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[_Record(str(tmp_path))],
                        limit_val_batches=0)
    trainer.fit(module, datamodule=_Data())
    w = {(r, e): torch.load(tmp_path / f"rank{r}_epoch{e}.pt") for r in (0, 1) for e in (0, 1)}
    backbone = [k for k in start if not k.startswith("head.")]
    for r in (0, 1):
        assert all(torch.equal(w[r, 0][k], start[k]) for k in backbone)
        assert not torch.equal(w[r, 0]["head.weight"], start["head.weight"])
        assert any(not torch.equal(w[r, 1][k], w[r, 0][k]) for k in backbone)
    for e in (0, 1):
        for k in start:
            assert torch.equal(w[0, e][k], w[1, e][k]), f"ranks differ in {k} after epoch {e}"
