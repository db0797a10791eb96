"""Prediction and attention rollout (pipeline/predict.py, pipeline/explain.py).

One tiny model is trained for one epoch through the real ``pipeline.training.fit.fit``, so the
model file ``model.safetensors`` and its MLflow artifact ``trained/model.safetensors`` are exactly
what training writes. Predictions must equal the best checkpoint's weights + ``DevicePreprocess`` +
softmax done by hand; a bad file
gets its own error while the rest are predicted; rollout must equal one computed from attention
matrices materialised by a hand-written forward pass that reproduces the model's logits.
"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, make_tiny_params
from PIL import Image

from pipeline.config import parse_params
from pipeline.data import load_prepared
from pipeline.errors import CheckpointError
from pipeline.explain import attention_rollout, overlay, rollout
from pipeline.models import (
    DevicePreprocess,
    ImageClassifier,
    VisionTransformer,
    ViTConfig,
    build_vit,
)
from pipeline.predict import ImageError, Predictor, find_images, main, to_rgb
from pipeline.training.checkpoint_io import read_weights
from pipeline.training.fit import TrainingJob, fit


@pytest.fixture(scope="module")
def trained(digits_dir, digits_test_dir, tmp_path_factory):
    """A 1-epoch tiny ViT on digits: its model file (and best.ckpt), MLflow run (own SQLite db)
    and test images."""
    tmp = tmp_path_factory.mktemp("predict")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    p = parse_params(make_tiny_params())
    # the fine-tune variant's light augmentation: one epoch of the heavily regularised scratch
    # recipe leaves the model near uniform, and this test needs confident, varied predictions
    sp = p.scratch["scratch"].model_copy(update={
        "train": p.scratch["scratch"].train.model_copy(update={"epochs": 1, "batch_size": 32}),
        "augment": p.finetune["finetune"].augment})
    torch.manual_seed(0)
    model = ImageClassifier(VisionTransformer(sp.model.vit_config(num_classes=10)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        job = TrainingJob(name="scratch", stage="train_scratch", recipe=sp, seed=0,
                          data_dir=digits_dir, out_dir=tmp / "ckpt")
        result = fit(job, model, p.base.trainer, "predict")
    _, splits = load_prepared(digits_test_dir)
    images = np.array(splits["test"][0][:12])  # (12, 8, 8, 1) uint8
    return SimpleNamespace(model=tmp / "ckpt" / result.model_file, dir=tmp / "ckpt",
                           ckpt=tmp / "ckpt" / "best.ckpt", run_id=result.run_id, uri=uri,
                           images=images)


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor.load(trained.model, device="cpu")


def _hparams(ckpt) -> dict:
    """The record training keeps in a Lightning checkpoint: params, model config, classes."""
    return torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]


def _reference_probs(ckpt, images: np.ndarray) -> np.ndarray:
    """By hand, from the best checkpoint: its weights into a plain ViT of its config,
    DevicePreprocess on the uint8 batch, softmax."""
    model = VisionTransformer(ViTConfig(**_hparams(ckpt)["model_config"]))
    model.load_state_dict(read_weights(ckpt))
    with torch.no_grad():
        x = DevicePreprocess(model.cfg.img_size, model.cfg.in_chans)(torch.from_numpy(images))
        return model.eval()(x).softmax(-1).numpy()


def _save(path: Path, array: np.ndarray, mode: str | None = None, **kw) -> Path:
    im = Image.fromarray(array)
    (im.convert(mode) if mode else im).save(path, **kw)
    return path


# --------------------------------------------------------------------------- predict


def test_probabilities_match_best_weights_plus_preprocess_plus_softmax(trained, predictor):
    ref = _reference_probs(trained.ckpt, trained.images)
    probs = predictor.predict_proba(trained.images, batch_size=5)  # a 4-D batch, 3 batches
    assert probs.shape == (12, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, ref, atol=1e-6)
    assert ref.std(axis=-1).min() > 1e-3  # not uniform: the comparison can fail

    preds = predictor.predict(trained.images, top_k=3)
    hp = _hparams(trained.ckpt)
    assert predictor.classes == hp["classes"] == [str(i) for i in range(10)]
    for pred, row in zip(preds, ref):
        order = np.argsort(-row)[:3]
        assert pred.indices == tuple(order)
        assert [c for c, _ in pred.top_k] == [hp["classes"][i] for i in order]
        np.testing.assert_allclose([p for _, p in pred.top_k], row[order], atol=1e-6)
        assert pred.label == pred.top_k[0][0] and pred.probability == pred.top_k[0][1]
    assert len(predictor.predict(trained.images[:1], top_k=50)[0].top_k) == 10  # capped
    # the variant's dir holding the model file loads the same model
    by_dir = Predictor.load(trained.dir, device="cpu")
    np.testing.assert_allclose(by_dir.predict_proba(trained.images), ref, atol=1e-6)
    assert by_dir.classes == predictor.classes


def test_every_input_kind_and_file_mode_gives_the_same_probabilities(trained, predictor, tmp_path):
    img = trained.images[0, ..., 0]  # (8, 8) gray
    ref = _reference_probs(trained.ckpt, trained.images[:1])[0]
    rgba = np.dstack([np.repeat(img[..., None], 3, -1), np.full_like(img, 255)])
    inputs = [
        img, img[..., None], np.repeat(img[..., None], 3, -1), rgba,  # arrays HW, HW1, HWC, RGBA
        Image.fromarray(img), Image.fromarray(img).convert("P"),  # PIL gray, palette
        _save(tmp_path / "gray.png", img), _save(tmp_path / "rgb.png", img, "RGB"),
        _save(tmp_path / "rgba.png", rgba), _save(tmp_path / "la.png", img, "LA"),
        str(_save(tmp_path / "gray16.png", img.astype(np.uint16) * 257)),  # 16-bit PNG
    ]
    probs = predictor.predict_proba(inputs, batch_size=4)
    np.testing.assert_allclose(probs, np.broadcast_to(ref, probs.shape), atol=1e-6)
    # JPEG is lossy: it must load and predict, close to the lossless image
    jpg = predictor.predict_proba([_save(tmp_path / "gray.jpg", img, "RGB", quality=95)])[0]
    np.testing.assert_allclose(jpg.sum(), 1.0, atol=1e-6)
    assert np.abs(jpg - ref).max() < 0.1


def test_alpha_is_composited_over_black_and_bad_arrays_are_refused():
    px = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [200, 100, 50, 128]]], np.uint8)
    np.testing.assert_array_equal(to_rgb(px), [[[200, 100, 50], [0, 0, 0], [100, 50, 25]]])
    np.testing.assert_array_equal(to_rgb(Image.fromarray(px)), to_rgb(px))
    with pytest.raises(ImageError, match="uint8"):
        to_rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageError, match="shape"):
        to_rgb(np.zeros((4, 4, 2), np.uint8))


def test_a_bad_file_in_the_api_raises_naming_it(predictor, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="notes.jpg: not a readable image"):
        predictor.predict([bad])


@pytest.fixture
def image_tree(trained, tmp_path):
    """root/ with good PNG/JPEG files in nested folders, a corrupt and a truncated PNG, a text
    file named .jpg, and a .txt file that folder recursion must skip."""
    root = tmp_path / "images"
    (root / "b" / "c").mkdir(parents=True)
    imgs = trained.images[..., 0]
    _save(root / "a0.png", imgs[0])
    _save(root / "b" / "a1.PNG", imgs[1], "RGBA")
    _save(root / "b" / "c" / "a2.jpeg", imgs[2], "RGB")
    _save(root / "b" / "c" / "a3.jpg", imgs[3], "RGB")
    whole = (root / "a0.png").read_bytes()
    (root / "b" / "broken.png").write_bytes(whole[:8] + bytes(range(256)) * 4)  # PNG magic, junk
    (root / "b" / "cut.png").write_bytes(whole[: len(whole) // 2])
    (root / "b" / "c" / "text.jpg").write_text("hello, I am not a JPEG\n")
    (root / "readme.txt").write_text("skip me")
    return root


GOOD = ["a0.png", "b/a1.PNG", "b/c/a2.jpeg", "b/c/a3.jpg"]
BAD = ["b/broken.png", "b/c/text.jpg", "b/cut.png"]


def test_folders_recurse_sorted_for_images_only(image_tree):
    found = [f.relative_to(image_tree).as_posix() for f in find_images([image_tree])]
    assert found == ["a0.png", "b/a1.PNG", "b/broken.png", "b/c/a2.jpeg", "b/c/a3.jpg",
                     "b/c/text.jpg", "b/cut.png"]
    # a file named explicitly is kept whatever its suffix, and each file appears once
    again = find_images([image_tree / "a0.png", image_tree, image_tree / "readme.txt"])
    assert len(again) == 8 and again[-1].name == "readme.txt"


def test_cli_json_reports_each_bad_file_and_predicts_the_rest(
        trained, predictor, image_tree, capsys):
    code = main(["--model", str(trained.model), "--json", "--top-k", "3", "--batch-size", "3",
                 str(image_tree)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "3 of 7 files failed" in err
    doc = json.loads(out)
    assert doc["failed"] == 3
    results = {Path(r["path"]).relative_to(image_tree).as_posix(): r for r in doc["results"]}
    assert sorted(results) == sorted(GOOD + BAD)
    for name in BAD:
        assert "predictions" not in results[name]
        assert results[name]["error"].startswith(f"{image_tree / name}: not a readable image")
    direct = predictor.predict([image_tree / n for n in GOOD], top_k=3)
    for name, pred in zip(GOOD, direct):
        got = results[name]["predictions"]
        assert "error" not in results[name] and len(got) == 3
        assert [g["class"] for g in got] == [c for c, _ in pred.top_k]
        assert tuple(g["index"] for g in got) == pred.indices
        np.testing.assert_allclose([g["probability"] for g in got],
                                   [p for _, p in pred.top_k], atol=1e-6)


def test_cli_table_exit_codes(trained, image_tree, tmp_path, capsys):
    assert main(["--model", str(trained.model), str(image_tree / "a0.png"),
                 str(image_tree / "b" / "c" / "a2.jpeg")]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["file", "rank", "probability", "class"]
    assert len(lines) == 1 + 2 * 5  # top-5 rows per image
    assert lines[1].startswith(str(image_tree / "a0.png"))

    assert main(["--model", str(trained.model), str(image_tree)]) == 1
    out, _ = capsys.readouterr()
    assert f"{image_tree / 'b' / 'cut.png'}" in out and "error: " in out

    for argv, msg in [
        (["--model", str(tmp_path / "none.safetensors"), str(image_tree)], "no model file at"),
        (["--model", str(trained.model), str(tmp_path / "empty")], "no .png/.jpg/.jpeg images"),
    ]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert main(argv) == 2
        assert f"error: {msg}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: --model is required
        main([str(image_tree)])
    assert e.value.code == 2


# --------------------------------------------------------------------------- MLflow sources


def test_load_by_run_id_runs_uri_and_registered_model(trained, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    client = mlflow.MlflowClient(trained.uri, registry_uri=trained.uri)
    arts = [a.path for a in client.list_artifacts(trained.run_id, "trained")]
    assert arts == ["trained/model.safetensors"]  # what pipeline.training.fit logs
    assert client.list_artifacts(trained.run_id, "checkpoints") == []  # no Lightning checkpoint
    client.create_registered_model("vit-digits")
    mv = client.create_model_version("vit-digits", f"runs:/{trained.run_id}/trained",
                                     run_id=trained.run_id)
    client.set_registered_model_alias("vit-digits", "champion", mv.version)

    ref = _reference_probs(trained.ckpt, trained.images)
    for source in (trained.run_id, f"runs:/{trained.run_id}",
                   f"runs:/{trained.run_id}/trained/model.safetensors", "models:/vit-digits/1",
                   "models:/vit-digits@champion", "models:/vit-digits/champion"):
        p = Predictor.load(source, device="cpu")
        np.testing.assert_allclose(p.predict_proba(trained.images), ref, atol=1e-6,
                                   err_msg=source)
        assert p.classes == [str(i) for i in range(10)]

    for source, msg in [
        ("0" * 32, f"no MLflow run {'0' * 32}"),
        (f"runs:/{trained.run_id}/checkpoints/best.ckpt", "has no artifact checkpoints/best"),
        ("models:/vit-digits/7", "has no version '7'"),
        ("models:/nope@champion", "'nope' has no alias 'champion'"),
    ]:
        with pytest.raises(CheckpointError, match=msg):
            Predictor.load(source)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nonexistent/dir/mlflow.db")
    with pytest.raises(CheckpointError, match="no MLflow database at"):
        Predictor.load(f"runs:/{trained.run_id}")


# --------------------------------------------------------------------------- explain


def _materialised_forward(model, x):
    """The ViT forward written out with explicit attention matrices: (logits, [A (B, nh, N, N)]);
    with no [CLS] token it has register tokens, position embeddings for the patches only and
    average pooling."""
    attns = []
    h = model.patch_embed(x)
    if model.cfg.class_token:
        h = torch.cat((model.cls_token.expand(len(h), -1, -1), h), 1) + model.pos_embed
    else:
        h = torch.cat((model.reg_token.expand(len(h), -1, -1), h + model.pos_embed), 1)
    for blk in model.blocks:
        at = blk.attn
        B, N, D = h.shape
        qkv = at.qkv(blk.norm1(h)).reshape(B, N, 3, at.num_heads, at.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, nh, N, hd)
        a = (q @ k.transpose(-2, -1) / at.head_dim**0.5).softmax(-1)  # (B, nh, N, N)
        attns.append(a)
        h = h + blk.ls1(at.proj((a @ v).transpose(1, 2).reshape(B, N, D)))
        h = h + blk.ls2(blk.mlp(blk.norm2(h)))
    if model.cfg.class_token:
        return model.head(model.norm(h)[:, 0]), attns
    return model.head(model.fc_norm(h[:, model.cfg.reg_tokens:].mean(1))), attns


def _paper_rollout(attns, prefix: int = 1, cls: bool = True) -> np.ndarray:
    """Abnar & Zuidema, in their notation: A_hat = 0.5 W_att + 0.5 I, rolled out first layer
    first; the [CLS] row (or the mean of the patch rows) over the patches, normalised."""
    out = []
    for b in range(attns[0].shape[0]):
        R = np.eye(attns[0].shape[-1])
        for a in attns:
            R = (0.5 * a[b].mean(0).double().numpy() + 0.5 * np.eye(len(R))) @ R
        row = R[0, prefix:] if cls else R[prefix:, prefix:].mean(0)
        out.append(row / row.sum())
    return np.stack(out)


@pytest.mark.parametrize("options", [{}, dict(class_token=False, global_pool="avg", reg_tokens=2,
                                             no_embed_class=True, layer_scale=0.5)],
                         ids=["cls", "avg-registers"])
def test_rollout_equals_one_from_materialised_attention(options):
    torch.manual_seed(0)
    cfg = {k: v for k, v in TINY_MODEL.items() if k != "variant"}
    model = build_vit("custom", **{**cfg, "depth": 3}, num_classes=5, **options).eval()
    classifier = ImageClassifier(model).eval()
    with torch.no_grad():
        for blk in model.blocks:  # sharper attention than at init, so heads and layers differ
            blk.attn.qkv.weight.mul_(4.0)
        model.head.weight.normal_()
        images = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
        x = classifier.preprocess(images)
        logits_ref, attns = _materialised_forward(model, x)
        logits, masks = rollout(classifier, images)
        logits_list, masks_list = rollout(classifier, list(images))  # a list of images: the same
    torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=1e-5)  # same attention
    torch.testing.assert_close(logits_list, logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(masks_list, masks, atol=1e-6, rtol=0)
    expected = _paper_rollout(attns, model.cfg.num_prefix_tokens, model.cfg.class_token)
    assert masks.shape == (2, 4, 4)
    assert (masks >= 0).all()
    np.testing.assert_allclose(masks.sum((1, 2)).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(masks.reshape(2, -1).numpy(), expected, atol=1e-6)
    # the check can fail: neither uniform nor the same when the layers are rolled in reverse
    assert np.abs(expected - 1 / 16).max() > 1e-2
    assert np.abs(_paper_rollout(attns[::-1], model.cfg.num_prefix_tokens,
                                 model.cfg.class_token) - expected).max() > 1e-3
    assert not model.blocks[0].attn.qkv._forward_hooks  # the hooks are gone afterwards


def test_rollout_of_a_hand_made_attention_points_at_the_attended_patch():
    N = 1 + 9
    a = torch.full((1, N, N), 1.0 / N)
    a[0, 0] = 0.0
    a[0, 0, 1 + 5] = 1.0  # [CLS] attends only to patch 5
    mask = attention_rollout([a])
    assert mask.shape == (1, 3, 3)
    expected = torch.zeros(9)
    expected[5] = 1.0
    torch.testing.assert_close(mask.reshape(-1), expected)


def test_rollout_of_an_avg_pooled_model_with_registers_leaves_the_registers_out():
    P, N = 3, 3 + 9  # 3 register tokens before the 3x3 patches: left out of the map
    a = torch.full((1, N, N), 1.0 / N)
    a[0, P:] = 0.0
    a[0, P:, P + 5] = 1.0  # every patch attends only to patch 5
    mask = attention_rollout([a], num_prefix_tokens=P, global_pool="avg").reshape(-1)
    expected = torch.full((9,), 0.5 / 9)  # half each patch itself (the residual), half patch 5
    expected[5] += 0.5
    torch.testing.assert_close(mask, expected)
    with pytest.raises(ValueError, match="12 tokens are not 1 prefix token"):
        attention_rollout([a])  # [CLS] + 11 patches: not a square grid


def test_explain_api_cli_and_overlay(trained, predictor, image_tree, tmp_path, monkeypatch,
                                     capsys):
    mask = predictor.explain(image_tree / "a0.png")
    assert mask.shape == (4, 4) and (mask >= 0).all()
    assert abs(mask.sum() - 1) < 1e-5

    photo = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    out = overlay(photo, mask)
    assert out.size == (20, 12) and out.mode == "RGB"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # no matplotlib: the red blend
    red = np.asarray(overlay(np.zeros((12, 20), np.uint8), mask)).astype(int)
    assert red.shape == (12, 20, 3) and red[..., 0].max() > 100 and red[..., 1:].max() == 0

    out_dir = tmp_path / "attn"
    (image_tree / "b" / "a0.png").write_bytes((image_tree / "a0.png").read_bytes())  # same stem
    assert main(["--model", str(trained.model), "--json", "--explain", str(out_dir),
                 str(image_tree)]) == 1
    doc = json.loads(capsys.readouterr().out)
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == ["a0_2_attention.png", "a0_attention.png", "a1_attention.png",
                       "a2_attention.png", "a3_attention.png"]
    for r in doc["results"]:
        if "error" not in r:
            with Image.open(r["attention"]) as im:
                assert im.size == Image.open(r["path"]).size == (8, 8)
    first = next(r for r in doc["results"] if r["path"].endswith("images/a0.png"))
    assert first["attention"] == str(out_dir / "a0_attention.png")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_runs_under_autocast_and_agrees_with_the_cpu(trained, predictor):
    gpu = Predictor.load(trained.model)
    assert gpu.device.type == "cuda" and gpu.amp_dtype is not None
    probs = gpu.predict_proba(trained.images)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, predictor.predict_proba(trained.images), atol=2e-2)
    mask = gpu.explain(trained.images[0])
    assert mask.dtype == np.float32 and abs(mask.sum() - 1) < 1e-5
    np.testing.assert_allclose(mask, predictor.explain(trained.images[0]), atol=2e-2)
