"""The strategy FSDP gets, the FLOP count behind MFU, and ``compile: true`` (checkpoint keys)."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from pipeline.config import parse_params
from pipeline.models import VisionTransformer, forward_gflops, load_model_file, variant_config
from pipeline.models.vit import Block
from pipeline.stages import train as train_stage
from pipeline.training import fit as fit_mod
from pipeline.training import hardware
from pipeline.training.checkpoint_io import read_weights
from pipeline.training.hardware import build_strategy, train_flops_per_batch


def test_fsdp_shards_per_block_and_saves_full_checkpoints():
    s = build_strategy("fsdp")
    assert isinstance(s, FSDPStrategy)
    assert s.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert s.kwargs["use_orig_params"]  # the param groups and the freeze see real parameters
    assert s._state_dict_type == "full"
    assert build_strategy("fsdp_cpu_offload").cpu_offload.offload_params
    assert build_strategy("ddp") == "ddp" and build_strategy("auto") == "auto"


@pytest.mark.parametrize("variant", ["Ti/16", "B/16"])
def test_train_flops_are_three_forwards_per_image(variant):
    """Backward costs two forwards (grads of inputs and of weights); per image, linear in batch."""
    cfg = variant_config(variant, num_classes=10, img_size=32)
    forward = forward_gflops(VisionTransformer(cfg)) * 1e9
    assert train_flops_per_batch(cfg, 4) == 4 * train_flops_per_batch(cfg, 1)
    assert train_flops_per_batch(cfg, 1) / forward == pytest.approx(3.0, rel=0.02)


def test_compiled_training_saves_plain_keys_and_same_weights(tiny_params, digits_dir, tmp_path,
                                                              monkeypatch):
    """``torch.compile(model)`` would save ``model._orig_mod.*``; ours compiles in place. The
    test compiles with the aot_eager backend (dynamo + AOTAutograd, no C++ codegen) to stay fast;
    the default inductor backend was checked by hand (same keys, weights within 3e-8)."""
    tiny_params["scratch"]["scratch"]["train"].update(epochs=1)
    tiny_params["scratch"]["scratch"]["augment"].update(mix_prob=0.0)

    def train(compile_: bool, out: str):
        tiny_params["base"]["trainer"]["compile"] = compile_
        args = SimpleNamespace(variant="scratch", data=str(digits_dir), out=str(tmp_path / out),
                               pretrained=None, fresh=False, seed=None, budget="all")
        train_stage.run(parse_params(tiny_params), args)
        return torch.load(tmp_path / out / "last.ckpt", weights_only=True)["state_dict"]

    compiled = []

    def spy(model):
        compiled.append(model)
        return hardware.compile_model(model, backend="aot_eager")

    monkeypatch.setattr(fit_mod, "compile_model", spy)
    torch._dynamo.reset()
    with_compile = train(True, "compiled")
    assert len(compiled) == 1 and compiled[0]._compiled_call_impl is not None
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    assert not [k for k in with_compile if "_orig_mod" in k]
    eager = train(False, "eager")
    assert sorted(with_compile) == sorted(eager)
    for k in eager:
        torch.testing.assert_close(with_compile[k], eager[k], rtol=0, atol=1e-5, msg=k)
    # strict, into a plain ViT: the model file (exported from best.ckpt) and best.ckpt itself
    model = load_model_file(tmp_path / "compiled" / "model.safetensors").classifier.vit
    assert model._compiled_call_impl is None
    plain = VisionTransformer(model.cfg)
    plain.load_state_dict(read_weights(tmp_path / "compiled" / "best.ckpt"))
    assert plain._compiled_call_impl is None
