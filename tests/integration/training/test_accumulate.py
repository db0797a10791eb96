"""Gradient accumulation: batches of 8 accumulated 4 times train as batches of 32.

Through :func:`pipeline.training.fit.fit`, on the prepared digits (128 labelled images: 4 steps an
epoch either way), with everything random that is not the data order switched off (augmentation,
Mixup/CutMix, dropout, stochastic depth), so the only difference is how the gradient of a step
is summed: 4 means over 8 images, each divided by 4 (Lightning), against one mean over 32. That
is the same number up to float32 rounding, so the tolerance is rounding-sized.

One exception, under AdamW: the key bias (the middle third of ``qkv.bias``) has a gradient of
exactly zero in exact arithmetic (softmax ignores a shift that is the same for every key), so its
float gradient is rounding noise that Adam divides by its own size into lr-sized steps: it ends
1e-5 apart, and it changes no output. It is compared through the outputs instead.
"""

import lightning as L
import pytest
import torch

from pipeline.config import FinetuneRecipe, Recipe, parse_params
from pipeline.models import ImageClassifier, VisionTransformer
from pipeline.training.fit import TrainingJob, fit

# float32 sums in another order, through 8 steps: measured max |diff| 1.3e-6 (AdamW), 3e-8 (SGD)
ATOL = 1e-5


def _fit(tiny_params, digits_dir, out_dir, *, batch_size, accumulate, optimizer, finetune):
    p = parse_params(tiny_params)
    d = p.scratch["scratch"].model_dump()
    d["model"].update(dropout=0.0, drop_path=0.0)
    d["augment"].update(crop_padding=0, hflip=False, randaugment=None, erasing=0.0,
                        mixup_alpha=0.0, cutmix_alpha=0.0, mix_prob=0.0)
    d["train"].update(epochs=2, batch_size=batch_size, accumulate_grad_batches=accumulate,
                      warmup_epochs=0.5, optimizer=optimizer)
    if finetune:  # the frozen start and layer-wise decay count optimizer steps too
        sp = FinetuneRecipe.model_validate({**d, "pretrained": "tiny", "freeze_epochs": 1,
                                            "backbone_lr_scale": 0.5, "layer_decay": 0.7})
    else:
        sp = Recipe.model_validate(d)
    L.seed_everything(0)
    model = ImageClassifier(VisionTransformer(sp.model.vit_config(num_classes=10)))
    job = TrainingJob(name="acc", stage="train_scratch", recipe=sp, seed=0, data_dir=digits_dir,
                      out_dir=out_dir, logged_params={"train": sp.model_dump()})
    result = fit(job, model, p.base.trainer, "accumulate")
    weights = torch.load(out_dir / "last.ckpt", weights_only=True)["state_dict"]
    return result, weights


@pytest.mark.parametrize("optimizer,finetune", [
    ({"name": "adamw", "lr": 1e-3, "weight_decay": 0.05}, False),
    ({"name": "sgd", "lr": 0.05, "momentum": 0.9}, True),
], ids=["adamw-scratch", "sgd-finetune"])
def test_batch_8_accumulated_4_times_ends_where_batch_32_does(
        tiny_params, digits_dir, tmp_path, optimizer, finetune):
    big, w_big = _fit(tiny_params, digits_dir, tmp_path / "b32", batch_size=32, accumulate=1,
                      optimizer=optimizer, finetune=finetune)
    acc, w_acc = _fit(tiny_params, digits_dir, tmp_path / "b8x4", batch_size=8, accumulate=4,
                      optimizer=optimizer, finetune=finetune)
    assert big.steps == acc.steps == 8  # optimizer steps: 2 epochs of 128 / 32
    for name, value in w_big.items():
        got = w_acc[name]
        if name.endswith("attn.qkv.bias"):  # all but the key bias (see the module doc)
            d = value.numel() // 3
            value, got = torch.cat([value[:d], value[2 * d:]]), torch.cat([got[:d], got[2 * d:]])
        torch.testing.assert_close(got, value, rtol=0, atol=ATOL, msg=name)
    x = torch.randint(0, 256, (16, 8, 8, 1), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    logits = []
    for w in (w_big, w_acc):
        clf = ImageClassifier(VisionTransformer(parse_params(tiny_params).scratch["scratch"]
                                                .model.vit_config(num_classes=10)))
        clf.load_state_dict({k.removeprefix("model."): v for k, v in w.items()})
        logits.append(clf.eval()(x))
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=1e-4)
    # the runs trained (a run that took no step would agree with nothing)
    assert big.best_val_acc > 0.2
