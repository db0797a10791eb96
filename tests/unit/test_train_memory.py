"""benchmarks/train_memory.py, the counter behind the docs' memory table for B/16, L/16 and
H/14: what it counts must be exact on a model small enough to check by hand."""

import json
from pathlib import Path

import pytest

from bench_helpers import benchmark_module
from pipeline.models.variants import variant_config

ROOT = Path(__file__).resolve().parents[2]
# s = 17 tokens (16 patches + [CLS]), h = 64, a = 4 heads, m = 128 (mlp_ratio 2: not the paper's 4)
TINY = variant_config("custom", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                      mlp_ratio=2.0, num_classes=10)


@pytest.fixture(scope="module")
def tm():
    with benchmark_module("train_memory") as module:
        yield module


@pytest.fixture(scope="module")
def counted(tm):
    return tm.count(TINY)


def vit_params(cfg) -> int:
    """A ViT's parameter count by hand: patch projection, [CLS], position embeddings, blocks
    (2 LayerNorms, qkv, projection, 2 MLP layers), the final LayerNorm, the head."""
    d, m, n = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio), cfg.num_patches
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
    return (3 * cfg.patch_size**2 * d + d) + d + (n + 1) * d + cfg.depth * block + 2 * d \
        + d * cfg.num_classes + cfg.num_classes


@pytest.mark.parametrize("attention", ["flash", "math"])
def test_saved_activations_grow_linearly_in_the_batch(tm, attention):
    with tm.training_model(TINY, real=False) as model:
        one, two, three = (tm.saved_bytes(model, b, attention) for b in (1, 2, 3))
    assert three - two == two - one > 0


def test_fake_tensors_count_what_real_ones_do(tm, counted):
    assert tm.count(TINY, real=True) == counted


def test_weights_gradients_and_optimizer_state_are_exact(tm, counted):
    p = vit_params(TINY)
    assert counted.params == p
    assert counted.weights == counted.grads == counted.optimizer_state == 4 * p  # SGD: momentum
    assert tm.count(TINY, optimizer="adamw").optimizer_state == 8 * p  # exp_avg, exp_avg_sq
    # autocast's bf16 copies of the Linear and Conv weights (not their biases: the backward does
    # not need them), and cross-entropy's fp32 total weight, a scalar
    d, m = TINY.embed_dim, int(TINY.embed_dim * TINY.mlp_ratio)
    cast = 3 * TINY.patch_size**2 * d + TINY.depth * (4 * d * d + 2 * d * m) + d * 10
    assert counted.weight_copies == 2 * cast + 4


def test_one_block_saves_what_the_formula_says(tm, counted):
    """flash 20sh + 4sm + 4as + 16s, math 26sh + 4sm + 4as^2 + 16s bytes per image."""
    s, h, a, m = 17, 64, 4, 128
    assert counted.per_block == {"flash": 20 * s * h + 4 * s * m + 4 * a * s + 16 * s,
                                 "math": 26 * s * h + 4 * s * m + 4 * a * s * s + 16 * s}
    assert counted.per_block == {a: tm.block_bytes(TINY, a) for a in ("flash", "math")}


def test_math_attention_costs_the_attention_matrix_over_flash(counted):
    """Per block and image: the fp32 (heads, N, N) probabilities, and fp32 q, k, v where flash
    keeps the bf16 qkv output, less flash's fp32 log-sum-exp per head and token."""
    s, h, a = 17, 64, 4
    per_block = 4 * a * s * s + (12 - 6) * s * h - 4 * a * s
    assert counted.per_image["math"] - counted.per_image["flash"] == TINY.depth * per_block


def test_totals_and_the_largest_batch_that_fits(counted):
    for attention in ("flash", "math"):
        per_image = counted.per_image[attention]
        assert counted.total(3, attention) == counted.fixed + 3 * per_image
        budget = counted.fixed + 5.5 * per_image
        assert counted.max_batch(budget, attention) == 5
        assert counted.max_batch(counted.fixed / 2, attention) == 0


def test_the_cli_prints_and_writes_every_config(tm, tmp_path, capsys):
    out = tmp_path / "memory.json"
    tm.run(tm.parser().parse_args(["--config", "Ti/16@32", "--batch-sizes", "8,16",
                                   "--json", str(out)]))
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    assert row["config"] == "Ti/16@32" and set(row["total"]) == {"8", "16"}
    assert row["per_block"] == row["formula_block"]
    assert set(row["max_batch"]) == {"H100", "H200"}
    assert "Ti/16@32" in capsys.readouterr().out
