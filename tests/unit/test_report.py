"""The comparison report (pipeline/report/).

The metrics themselves are tested in tests/evaluation/test_metrics.py; here, that the report
renders the numbers of each variant's ``ClassificationMetrics`` (and refuses metrics of other
labels), which mistakes it shows, and the written report against its contract: every file, PNGs
that decode and are not blank, one inlined image per figure, the table values, no unpaired gain
sentence (the gain is the study's), gray and RGB images, a variant without history or throughput,
100 classes, and no partial report on a failure; the CSV texts (curves from ``EpochRow``s, the
confusion CSV) and ``VariantResult.of_cell``. The label-budget study (a ``Study`` from
synthetic cells): its CSV numbers, markdown cells, figures' plotted data, the page order, and
the test-time augmentation table beside the plain figures.

``make_demo`` builds a realistic case (plausible logits, 20-epoch histories, rollout maps);
``python tests/test_report.py OUT_DIR`` writes its report for a look at the figures.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation.metrics import classification_metrics
from pipeline.evaluation.study import Cell, summarise
from pipeline.layout import CellKey
from pipeline.records import EpochRow, History, RunRecord
from pipeline.report import (
    VariantResult,
    budget_positions,
    build_report,
    confusion_csv,
    curve_csv,
    curve_figure,
    curves_csv,
    gain_csv,
    gain_figure,
    human_duration,
    markdown_report,
    misclassified_figure,
    most_confident_mistakes,
    png_bytes,
    study_markdown,
    study_rows,
)
from pipeline.report import page as page_mod
from pipeline.report.format import budget_header
from pipeline.report.study_figures import study_figures
from pipeline.report.tables import SINGLE_RUN_NOTE

FIGURES = ["per_class_accuracy.png", "reliability.png", "curves.png", "acc_vs_params.png",
           "acc_vs_throughput.png", "misclassified.png"]


# ------------------------------------------------------------------------- synthetic data


def synthetic_logits(rng: np.random.Generator, labels: np.ndarray, num_classes: int, *,
                     skill: float, temperature: float = 1.0) -> np.ndarray:
    """Noisy float32 logits with the true class lifted by ``skill`` and some pairs of classes
    confused with each other (as cat / dog are); ``temperature`` < 1 makes it over-confident."""
    n = len(labels)
    logits = rng.normal(0.0, 1.0, (n, num_classes))
    logits[np.arange(n), labels] += skill * rng.uniform(0.3, 1.7, n)
    partner = (labels + 1) % num_classes  # the look-alike class
    lookalike = labels % 3 == 0
    logits[np.flatnonzero(lookalike), partner[lookalike]] += 0.6 * skill
    return (logits / temperature).astype(np.float32)


def synthetic_history(rng: np.random.Generator, epochs: int, *, final_acc: float,
                      speed: float) -> list[EpochRow]:
    rows = []
    for e in range(epochs):
        progress = 1 - math.exp(-(e + 1) / speed)
        val_acc = float(min(0.999, 0.1 + (final_acc - 0.1) * progress + rng.normal(0, 0.01)))
        train_acc = min(0.999, val_acc + 0.05 * progress)
        rows.append(EpochRow(epoch=e, train_loss=2.3 * (1 - train_acc) + 0.05,
                             train_acc=train_acc, val_loss=2.3 * (1 - val_acc) + 0.1,
                             val_acc=val_acc,
                             lr=1e-3 * 0.5 * (1 + math.cos(math.pi * e / epochs))))
    return rows


def synthetic_images(rng: np.random.Generator, labels: np.ndarray, size: int,
                     channels: int) -> np.ndarray:
    """Class-dependent blobs on noise, uint8 (N, size, size, channels)."""
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size] / size
    cx = 0.25 + 0.5 * (labels % 4) / 3
    cy = 0.25 + 0.5 * (labels // 4 % 3) / 2
    blob = np.exp(-((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2)
                  / 0.03)
    img = 0.75 * blob[..., None] + 0.25 * rng.random((n, size, size, channels))
    if channels == 3:
        tint = rng.random((n, 1, 1, 3)) * 0.6 + 0.4
        img = img * tint
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def synthetic_rollout(rng: np.random.Generator, m: int, grid: int) -> np.ndarray:
    raw = rng.gamma(0.6, 1.0, (m, grid, grid)) + 0.05
    return (raw / raw.sum(axis=(1, 2), keepdims=True)).astype(np.float32)


def make_demo(seed: int = 0, *, n: int = 2000, num_classes: int = 10, size: int = 28,
              channels: int = 1, epochs: int = 20, n_attention: int = 4,
              images: np.ndarray | None = None, labels: np.ndarray | None = None,
              classes: list[str] | None = None) -> dict:
    """Keyword arguments of ``build_report`` for a realistic case: two scratch variants and one
    finetune variant (over-confident), 20-epoch histories, rollout maps on 8x8 / 7x7 grids."""
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = rng.integers(0, num_classes, n)
    if images is None:
        images = synthetic_images(rng, labels, size, channels)
    index = np.arange(n_attention) * 7
    specs = [  # name, kind, model, params, gflops, seconds, images/s, skill, temperature, grid
        ("scratch_ti4", "scratch", "192d/9L/4p@32", 2_700_000, 0.73, 5400.0, 4100.0, 2.6, 0.8, 8),
        ("scratch_s4", "scratch", "384d/12L/4p@32", 21_400_000, 5.6, 9300.0, 1200.0, 3.0, 0.7, 8),
        ("finetune_b16", "finetune", "768d/12L/16p@224", 85_800_000, 17.6, 4100.0, 380.0, 6.5,
         0.6, 7),
    ]
    variants = []
    for name, kind, model, params, gflops, secs, ips, skill, temp, grid in specs:
        metrics = classification_metrics(
            synthetic_logits(rng, labels, num_classes, skill=skill, temperature=temp), labels)
        variants.append(VariantResult(
            name=name, kind=kind, model=model, num_params=params, gflops=gflops,
            train_seconds=secs, images_per_s=ips, metrics=metrics,
            history=synthetic_history(rng, epochs, final_acc=metrics.top1,
                                      speed=1.5 if kind == "finetune" else 6.0),
            attention=synthetic_rollout(rng, len(index), grid)))
    if classes is None:
        classes = [f"class_{i}" for i in range(num_classes)] if num_classes != 10 else [
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
            "Bag", "Ankle boot"]
    return dict(variants=variants, labels=labels, images=images, classes=classes,
                dataset="demo", attention_index=index)


def _row(epoch: int, **values: float) -> EpochRow:
    """An epoch's row, NaN where ``values`` has no value."""
    nan = float("nan")
    return EpochRow(epoch=epoch, **{"train_loss": nan, "train_acc": nan, "val_loss": nan,
                                    "val_acc": nan, "lr": nan, **values})


def _variant(name: str, kind: str, logits: np.ndarray, labels: np.ndarray, **kw) -> VariantResult:
    args = dict(model="32d/2L/4p@16", num_params=30_000, gflops=0.01, train_seconds=12.5,
                images_per_s=1500.0, history=[_row(0, val_acc=0.5, val_loss=1.2,
                                                   train_loss=1.5)])
    args.update(kw)
    return VariantResult(name=name, kind=kind, metrics=classification_metrics(logits, labels),
                         **args)


def _tiny(seed: int = 0, *, n: int = 60, k: int = 4, size: int = 8, channels: int = 1,
          **kw) -> dict:
    """Two scratch variants, 8x8 images: the cheapest report."""
    d = make_demo(seed, n=n, num_classes=k, size=size, channels=channels, epochs=3,
                  n_attention=2, **kw)
    d["variants"] = d["variants"][:2]
    return d


def _report(tmp_path: Path, d: dict, **kw) -> None:
    args = {k: v for k, v in d.items() if k != "variants"}
    args.update(kw)
    return build_report(tmp_path, d["variants"], **args)


def _distinct_colours(path: Path) -> int:
    with Image.open(path) as im:
        im.load()
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint32)
    return len(np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]))


# ----------------------------------------------------------------- what the report renders


def test_most_confident_mistakes_first():
    labels = np.array([0, 0, 1, 1, 2, 0])
    logits = np.array([
        [3.0, 0.0, -2.0],  # right
        [0.0, 2.0, -1.0],  # wrong
        [-1.0, -1.0, 3.0],  # wrong, the most confident
        [0.0, 0.5, -1.0],  # right (label 1)
        [0.0, 0.4, -5.0],  # wrong, the least confident
        [0.0, 2.0, -1.0],  # wrong, the same as 1 (a tie: test-set order)
    ], np.float32)
    m = classification_metrics(logits, labels)
    assert most_confident_mistakes(m, labels, 10).tolist() == [2, 1, 5, 4]
    assert most_confident_mistakes(m, labels, 2).tolist() == [2, 1]
    assert most_confident_mistakes(m, labels, 0).tolist() == []
    right = np.array([0, 1, 2, 1, 1, 1])
    assert most_confident_mistakes(classification_metrics(logits, right), right, 4).tolist() == []


def test_human_duration():
    assert human_duration(42.04) == "42.0 s"
    assert human_duration(725) == "12 min 05 s"
    assert human_duration(3 * 3600 + 7 * 60 + 20) == "3 h 07 min"
    assert human_duration(float("nan")) == "–"


# ---------------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def gray_report(tmp_path_factory):
    """The realistic demo shrunk: 10 classes, 28x28 grayscale, two scratch variants (one without
    history, throughput, GFLOPs or attention maps) and a finetune one; rollout of 2 images."""
    out = tmp_path_factory.mktemp("report")
    d = make_demo(0, n=300, num_classes=10, size=28, channels=1, epochs=6, n_attention=2)
    v = d["variants"]
    v[1] = replace(v[1], history=[], images_per_s=float("nan"), gflops=float("nan"),
                   attention=None)
    assert _report(out, d) is None
    return out, d


def test_every_file_is_written_and_every_png_is_an_image(gray_report):
    out, d = gray_report
    names = [v.name for v in d["variants"]]
    pngs = FIGURES + [f"confusion_{n}.png" for n in names] + ["attention.png"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(pngs)
    for name in pngs:
        with Image.open(out / "figures" / name) as im:
            im.verify()
        with Image.open(out / "figures" / name) as im:
            assert im.format == "PNG" and min(im.size) >= 200
        assert _distinct_colours(out / "figures" / name) > 20, name
    for f in ["report.html", "report.md", "per_class.csv"] + [f"curves/{n}.csv" for n in names]:
        assert (out / f).is_file(), f
    assert not list(out.rglob(".*.tmp-*"))


def test_html_is_self_contained_with_one_image_per_figure_and_the_table(gray_report):
    out, d = gray_report
    page = (out / "report.html").read_text()
    n_png = len(list((out / "figures").glob("*.png")))
    assert page.count('<img src="data:image/png;base64,') == n_png
    assert "<script" not in page and not re.search(r'(src|href)="(?!data:)', page)
    assert "demo" in page.split("</title>")[0]
    for v in d["variants"]:
        m = v.metrics
        assert f"<td>{v.name}</td>" in page
        assert f"{100 * m.top1:.2f}%" in page and f"{m.loss:.4f}" in page
        assert f"{100 * m.ece:.2f}%" in page
    best = max(v.metrics.top1 for v in d["variants"])
    assert f'<td class="num best">{100 * best:.2f}%</td>' in page
    assert "1 h 08 min" in page  # finetune_b16: 4100 s
    assert page.count("<figcaption>") == n_png
    assert "over 15 equal-width confidence bins" in page


def test_markdown_has_a_row_per_variant_and_no_unpaired_gain(gray_report):
    out, d = gray_report
    md = (out / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(d["variants"])
    for v, row in zip(d["variants"], rows[1:]):
        m = v.metrics
        assert row.startswith(f"| {v.name} | {v.kind} |")
        assert f"| {100 * m.top5:.2f}% " in row or f"| **{100 * m.top5:.2f}%** " in row
        assert f"| {m.loss:.4f} | {100 * m.ece:.2f}% |" in row
    # the gain is the study's (paired); best finetune minus best scratch is not stated
    assert "points top-1" not in md and "Pretraining gain" not in md
    assert "points top-1" not in (out / "report.html").read_text()


def test_csv_files(gray_report):
    out, d = gray_report
    with open(out / "per_class.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["class"] + [v.name for v in d["variants"]]
    assert [r[0] for r in rows[1:]] == d["classes"]
    for j, v in enumerate(d["variants"], start=1):
        np.testing.assert_allclose([float(r[j]) for r in rows[1:]], v.metrics.per_class,
                                   rtol=1e-7)
    with open(out / "curves" / "scratch_ti4.csv") as f:
        curves = list(csv.DictReader(f))
    assert list(curves[0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]
    hist = d["variants"][0].history
    assert [int(r["epoch"]) for r in curves] == [h.epoch for h in hist]
    assert float(curves[2]["val_acc"]) == pytest.approx(hist[2].val_acc)


def test_nan_throughput_and_empty_history(gray_report):
    out, _ = gray_report
    assert (out / "curves" / "scratch_s4.csv").read_text() == \
        "epoch,train_loss,train_acc,val_loss,val_acc,lr\n"
    row = next(line for line in (out / "report.md").read_text().splitlines()
               if line.startswith("| scratch_s4 "))
    assert row.endswith("| – | 2 h 35 min | – |")  # GFLOPs, train time, images/s


def test_curves_csv_leaves_missing_values_empty():
    history = [_row(0, val_acc=0.4), _row(1, train_loss=float("nan")),
               _row(2, val_acc=0.6, lr=1e-3)]
    assert curves_csv(history).splitlines() == [
        "epoch,train_loss,train_acc,val_loss,val_acc,lr", "0,,,,0.4,", "1,,,,,",
        "2,,,,0.6,0.001"]


def test_markdown_table_marks_the_best_and_names_top_k(study):
    labels = np.array([0, 1, 2, 0, 1, 2])
    right = 3 * np.eye(3, dtype=np.float32)[labels]
    wrong = 3 * np.eye(3, dtype=np.float32)[(labels + 1) % 3]
    half = np.concatenate([right[:3], wrong[3:]])
    variants = [_variant("ft", "finetune", half, labels), _variant("sc", "scratch", right, labels),
                _variant("sc2", "scratch", wrong, labels)]
    assert variants[1].metrics.top1 == 1.0 and variants[0].metrics.top1 == 0.5
    for st in (None, study):
        md = markdown_report(variants, dataset="toy", num_classes=3, num_images=6, n_bins=15,
                             study=st)
        assert "| sc | scratch | 32d/2L/4p@16 | **100.00%** | **100.00%** |" in md
        assert "| top-3 |" in md  # top-min(5, K)
        assert "minus best scratch" not in md  # no unpaired gain, with or without a study
        assert (SINGLE_RUN_NOTE in md) == (st is not None)


def test_confusion_csv():
    text = confusion_csv(np.array([0, 2, 1]), np.array([0, 1, 1]), ["cat", "dog", "frog"])
    assert text == "actual,predicted\ncat,cat\nfrog,dog\ndog,dog\n"
    assert confusion_csv([], [], ["cat"]) == "actual,predicted\n"


def test_variant_result_of_cell():
    from pipeline.evaluation.cell import CellResult  # torch models, explain: only here

    labels = np.array([0, 1, 1, 0])
    metrics = classification_metrics(3 * np.eye(2, dtype=np.float32)[labels], labels)
    run = RunRecord(run_id=None, experiment_id=None, tracking_uri="x", best_ckpt="best.ckpt",
                    last_ckpt="last.ckpt", model_file="model.safetensors", best_val_acc=0.5,
                    epochs=2, train_seconds=3.0, num_params=10, labelled=5)
    cell = CellResult(key=CellKey("scratch", "all", 0), kind="scratch", run=run,
                      model="32d/2L/4p@16", num_params=30_000, gflops=0.01, images_per_s=1500.0,
                      device="cpu", metrics=metrics)
    history = History(epochs=(_row(0, val_acc=0.4), _row(1, val_acc=0.5)))
    maps = np.ones((1, 2, 2), np.float32)
    v = VariantResult.of_cell(cell, history, attention=maps)
    assert (v.name, v.kind, v.model, v.num_params, v.gflops, v.train_seconds, v.images_per_s) \
        == ("scratch", "scratch", "32d/2L/4p@16", 30_000, 0.01, 3.0, 1500.0)
    assert v.metrics is metrics and v.attention is maps
    assert list(v.history) == list(history.epochs)
    assert curves_csv(v.history).splitlines()[1:] == ["0,,,,0.4,", "1,,,,0.5,"]
    assert VariantResult.of_cell(cell, History()).attention is None


def test_misclassified_figure_without_mistakes_says_so():
    labels = np.array([0, 1, 0, 1])
    m = classification_metrics(5 * np.eye(2, dtype=np.float32)[labels], labels)
    images = np.full((4, 8, 8, 1), 128, np.uint8)
    fig = misclassified_figure("only", images, labels, m, ["x", "y"], 16)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["only made no mistakes on the 4 test images."]


def test_misclassified_figure_titles_and_gray_images():
    """Titles from the metrics' probabilities and predictions, the most confident first."""
    labels = np.array([0, 1, 2, 0])
    probs = np.array([[0.1, 0.87, 0.03], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    m = classification_metrics(np.log(probs), labels)
    images = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 1), dtype=np.uint8)
    fig = misclassified_figure("m", images, labels, m, ["cat", "dog", "frog"], 16)
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title().replace("\n", " ") for ax in shown] == [
        "cat → dog (p=0.87)", "frog → cat (p=0.60)"]
    assert all(ax.images[0].get_cmap().name == "gray" for ax in shown)
    assert shown[0].images[0].get_array().shape == (8, 8)


def test_hundred_classes(tmp_path, monkeypatch):
    """CIFAR-100-like: 32x32 RGB, 2 variants. The figures whose layout depends on the number of
    classes are rendered for real; the report is built with the others not rasterised."""
    d = make_demo(4, n=200, num_classes=100, size=32, channels=3, epochs=3, n_attention=1)
    d["variants"] = d["variants"][1:]
    real_png = page_mod.png_bytes
    rendered = []

    def some_png(fig):
        title = fig.axes[0].get_title()
        if "Per-class" in title or ("confusion" in title and "finetune" in title):
            rendered.append(title)
            return real_png(fig)
        return tiny_png()

    monkeypatch.setattr(page_mod, "png_bytes", some_png)
    _report(tmp_path, d)
    assert len(rendered) == 2
    with open(tmp_path / "per_class.csv") as f:
        assert len(list(csv.reader(f))) == 1 + 100
    assert len(list((tmp_path / "figures").glob("*.png"))) == len(FIGURES) + 2 + 1
    for name in ("per_class_accuracy.png", "confusion_finetune_b16.png"):
        assert _distinct_colours(tmp_path / "figures" / name) > 20, name


def test_no_attention_figure_without_maps(tmp_path, no_rendering):
    d = _tiny(9)
    d["variants"] = [replace(v, attention=None) for v in d["variants"]]
    _report(tmp_path, d, attention_index=None)
    assert not (tmp_path / "figures" / "attention.png").exists()
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == \
        len(FIGURES) + len(d["variants"])


def test_the_figures_draw_the_metrics_they_are_given(tmp_path, monkeypatch, no_rendering):
    """The confusion figure shows ``metrics.confusion``, the reliability diagram
    ``metrics.reliability`` and its ``n_bins``: nothing is recomputed from the labels."""
    d = _tiny(10)
    labels = d["labels"]
    logits = synthetic_logits(np.random.default_rng(1), labels, 4, skill=2.0)
    d["variants"] = [replace(v, metrics=classification_metrics(logits, labels, n_bins=7))
                     for v in d["variants"]]
    figs = {}

    def keep(fig):
        figs.setdefault(fig.axes[0].get_title(), fig)
        return tiny_png()

    monkeypatch.setattr(page_mod, "png_bytes", keep)
    _report(tmp_path, d)
    m = d["variants"][0].metrics
    confusion = figs[next(t for t in figs if t.startswith(f"{d['variants'][0].name}: confusion"))]
    shown = np.asarray(confusion.axes[0].images[0].get_array())
    counts = m.confusion
    np.testing.assert_allclose(shown, counts / counts.sum(axis=1, keepdims=True))
    reliability = figs["Reliability diagram (7 equal-width confidence bins)"]
    conf, acc, count = m.reliability
    x, y = reliability.axes[0].lines[1].get_data()  # after the diagonal
    np.testing.assert_array_equal(x, conf[count > 0])
    np.testing.assert_array_equal(y, acc[count > 0])
    assert "over 7 equal-width confidence bins" in (tmp_path / "report.md").read_text()


# ------------------------------------------------- failures: nothing partial, nothing stale


def tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def no_rendering(monkeypatch):
    """Figures are built but not rasterised (the slow part): each 'PNG' is a fixed small one."""
    monkeypatch.setattr(page_mod, "png_bytes", lambda fig: tiny_png())


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path):
    d = _tiny(5)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="probs must be"):
        _report(out, d, classes=d["classes"][:-1])
    with pytest.raises(ValueError, match="attention_index"):
        _report(out, d, attention_index=None)
    with pytest.raises(ValueError, match="uint8"):
        _report(out, d, images=d["images"].astype(np.float32))
    with pytest.raises(ValueError, match="attention_index must index"):
        _report(out, d, attention_index=np.array([0, len(d["labels"])]))
    with pytest.raises(ValueError, match="file name"):
        _report(out, {**d, "variants": [replace(d["variants"][0], name="../x")]})
    with pytest.raises(ValueError, match="not computed with these labels"):
        _report(out, d, labels=np.roll(d["labels"], 1))
    with pytest.raises(ValueError, match=r"integers in \[0, K=4\)"):
        _report(out, d, labels=d["labels"].astype(np.float64))
    other_bins = replace(d["variants"][1], metrics=classification_metrics(
        synthetic_logits(np.random.default_rng(0), d["labels"], 4, skill=1.0), d["labels"],
        n_bins=10))
    with pytest.raises(ValueError, match="number of ECE bins"):
        _report(out, {**d, "variants": [d["variants"][0], other_bins]})
    d["variants"].append(d["variants"][0])
    with pytest.raises(ValueError, match="unique"):
        _report(out, d)
    assert not out.exists()


@pytest.mark.parametrize("blocker", [".", "figures", "curves"])
def test_an_unwritable_out_dir_raises_and_writes_no_report(tmp_path, blocker, no_rendering):
    out = tmp_path / "report"
    if blocker == ".":
        out.write_text("not a directory")
    else:
        out.mkdir()
        (out / blocker).write_text("in the way")
    with pytest.raises(OSError):
        _report(out, _tiny(6))
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == (["report"] if blocker == "." else [f"report/{blocker}"])


@pytest.mark.parametrize("fail_at", ["figures/reliability.png", "report.md", "report.html"])
def test_a_failed_write_keeps_the_old_report_and_leaves_no_partial_file(tmp_path, monkeypatch,
                                                                         no_rendering, fail_at):
    (tmp_path / "report.html").write_text("old report")
    real = page_mod.atomic_write

    def failing(path, write):
        def half_then_fail(tmp):
            tmp.write_bytes(b"<!DOCTYPE html> half a page")
            raise OSError(28, "No space left on device")

        return real(path, half_then_fail if Path(path) == tmp_path / fail_at else write)

    monkeypatch.setattr(page_mod, "atomic_write", failing)
    monkeypatch.setattr(page_mod, "atomic_write_text",
                        lambda path, text: failing(path, lambda tmp: tmp.write_text(text)))
    with pytest.raises(OSError, match="No space left"):
        _report(tmp_path, _tiny(7), n_misclassified=4)
    assert (tmp_path / "report.html").read_text() == "old report"
    assert not (tmp_path / fail_at).exists() or fail_at == "report.html"
    assert not list(tmp_path.rglob(".*.tmp-*"))


def test_a_failed_figure_writes_nothing(tmp_path, monkeypatch, no_rendering):
    def broken(*args, **kwargs):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(page_mod, "curves_figure", broken)
    with pytest.raises(RuntimeError, match="rendering failed"):
        _report(tmp_path, _tiny(8))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


# ------------------------------------------------------------------- the label-budget study

STUDY_TOP1 = {  # variant -> budget -> top-1 of seeds 0, 1, 2 (on 1000 test images)
    "scratch_ti4": {"10": [0.312, 0.298, 0.335], "100": [0.541, 0.563, 0.522],
                    "all": [0.701, 0.688, 0.712]},
    "finetune_b16": {"10": [0.652, 0.701, 0.688], "100": [0.871, 0.880, 0.866],
                     "all": [0.902, 0.911, 0.899]},
}
STUDY_LABELLED = {"10": 100, "100": 1000, "all": 1212}  # 10 classes


def study_cells(seeds=(0, 1, 2), n_test: int = 1000, top1=STUDY_TOP1) -> list[Cell]:
    rng = np.random.default_rng(0)
    cells = []
    for variant, per_budget in top1.items():
        kind = variant.split("_")[0]
        for budget, values in per_budget.items():
            for seed, acc in zip(seeds, values):
                correct = np.zeros(n_test, bool)
                correct[rng.permutation(n_test)[:round(acc * n_test)]] = True
                cells.append(Cell(variant, kind, budget, seed, STUDY_LABELLED[budget],
                                  correct.mean(), correct))
    return cells


@pytest.fixture(scope="module")
def study():
    return summarise(study_cells())


@pytest.fixture(scope="module")
def one_seed_study():
    return summarise(study_cells(seeds=(7,)))


def test_study_fixture_is_what_it_says(study, one_seed_study):
    assert study.budgets == ("10", "100", "all") and study.seeds == (0, 1, 2)
    assert len(study.aggregates) == 6 and all(a.top1.method == "t" for a in study.aggregates)
    assert [(g.finetune, g.scratch) for g in study.gains] == [("finetune_b16", "scratch_ti4")] * 3
    assert all(a.top1.method == "bootstrap" for a in one_seed_study.aggregates)


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("which", ["study", "one_seed_study"])
def test_study_csvs_hold_the_interval_fields(which, request):
    st = request.getfixturevalue(which)
    rows = _rows(curve_csv(st, 10))
    assert list(rows[0]) == ["variant", "kind", "budget", "per_class", "labelled", "mean", "low",
                             "high", "n", "method"]
    assert len(rows) == len(st.aggregates)
    for r, a in zip(rows, st.aggregates):
        assert (r["variant"], r["kind"], r["budget"], int(r["labelled"])) == \
            (a.variant, a.kind, a.budget, a.labelled)
        assert float(r["per_class"]) == pytest.approx(a.labelled / 10)
        for f in ("mean", "low", "high"):
            assert float(r[f]) == pytest.approx(getattr(a.top1, f), rel=1e-7), f
        assert (int(r["n"]), r["method"]) == (a.top1.n, a.top1.method)
    gains = _rows(gain_csv(st, 10))
    assert len(gains) == len(st.gains) == 3
    for r, g in zip(gains, st.gains):
        assert (r["finetune"], r["scratch"], r["budget"]) == (g.finetune, g.scratch, g.budget)
        for f in ("mean", "low", "high"):
            assert float(r[f]) == pytest.approx(getattr(g.diff, f), rel=1e-7), f
        assert (int(r["n"]), r["method"]) == (g.diff.n, g.diff.method)
        assert r["excludes_zero"] == str(g.diff.excludes_zero).lower()


def test_study_markdown_cells(study):
    md = study_markdown(study)
    row = next(line for line in md.splitlines() if line.startswith("| scratch_ti4 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["scratch_ti4", "scratch"]
    for cell, b in zip(cells[2:], study.budgets):
        iv = next(a.top1 for a in study.aggregates
                  if (a.variant, a.budget) == ("scratch_ti4", b))
        assert cell == f"{100 * iv.mean:.1f} ± {100 * iv.half_width:.1f}"
    assert "| variant | kind | 10 per class | 100 per class | all labels |" in md
    g = study.gains[0].diff  # budget 10: a large, clear gain
    assert g.excludes_zero and g.mean > 0.3
    assert (f"+{100 * g.mean:.1f} ± {100 * g.half_width:.1f} (95% CI {100 * g.low:.1f} to "
            f"{100 * g.high:.1f}; excludes 0)") in md
    sentence = md.splitlines()[-1]  # how the intervals were computed
    assert "Student's t over 3 seeds" in sentence and "mean ± t·s/√n" in sentence
    assert "bootstrap" not in sentence and "(b)" not in md


def test_study_markdown_one_seed_says_bootstrap(one_seed_study):
    md = study_markdown(one_seed_study)
    assert "1 seed: bootstrap over test images" in md
    assert "Student's t" not in md and "test-set noise only" in md
    a = one_seed_study.aggregates[0].top1
    assert f"| {100 * a.mean:.1f} ± {100 * a.half_width:.1f} |" in md


def _line(fig, gid):
    return next(ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == gid)


def _collection(fig, gid):
    return next(c for ax in fig.axes for c in ax.collections if c.get_gid() == gid)


def test_curve_figure_plots_the_means_at_labelled_per_class(study):
    fig = curve_figure(study, {"scratch_ti4": "red", "finetune_b16": "blue"}, num_classes=10)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "95% interval: Student's t over 3 seeds" in ax.get_title()
    for v, color in (("scratch_ti4", "red"), ("finetune_b16", "blue")):
        aggs = [a for a in study.aggregates if a.variant == v]
        x, y = _line(fig, f"mean:{v}").get_data()
        np.testing.assert_allclose(x, [10.0, 100.0, 121.2])
        np.testing.assert_allclose(y, [100 * a.top1.mean for a in aggs])
        assert _line(fig, f"mean:{v}").get_color() == color
        band = _collection(fig, f"band:{v}").get_paths()[0].vertices
        assert band[:, 1].min() == pytest.approx(100 * min(a.top1.low for a in aggs))
        assert band[:, 1].max() == pytest.approx(100 * max(a.top1.high for a in aggs))
        segs = _collection(fig, f"errorbar:{v}").get_segments()
        np.testing.assert_allclose([s[:, 1] for s in segs],
                                   [[100 * a.top1.low, 100 * a.top1.high] for a in aggs])
    ticks = ax.get_xticks()
    np.testing.assert_allclose(ticks, list(budget_positions(study, 10).values()))
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:2] == ["10", "100"] and labels[2].strip() == "all\n(1,212/10 ≈ 121)"


def test_curve_figure_one_seed_and_one_budget(one_seed_study):
    fig = curve_figure(one_seed_study, {}, num_classes=10)
    assert "1 seed: bootstrap over test images" in fig.axes[0].get_title()
    only = summarise([c for c in study_cells(seeds=(7,)) if c.budget == "100"])
    fig = curve_figure(only, {}, num_classes=10)
    x, y = _line(fig, "mean:finetune_b16").get_data()
    assert list(x) == [100.0] and list(y) == pytest.approx([100 * only.aggregates[1].top1.mean])
    assert len(_collection(fig, "errorbar:finetune_b16").get_segments()) == 1
    assert not [c for c in fig.axes[0].collections if str(c.get_gid()).startswith("band:")]
    png_bytes(fig)  # renders
    gain = gain_figure(only, num_classes=10)
    x, y = _line(gain, "gain:finetune_b16-scratch_ti4").get_data()
    assert y == pytest.approx([100 * only.gains[0].diff.mean])


def test_one_budget_is_drawn_as_dots_with_their_intervals(study):
    only = summarise([c for c in study_cells() if c.budget == "100"])
    figures = {name: (fig, caption) for name, fig, caption in study_figures(only, {}, 10)}
    assert list(figures) == ["study.png"]  # no "curve" through a single x position
    fig, caption = figures["study.png"]
    assert "One label budget (100 labelled images per class)" in caption and "line" not in caption
    left, right = fig.axes
    assert [t.get_text() for t in left.get_yticklabels()] == ["scratch_ti4", "finetune_b16"]
    drawn = {a.get_gid(): a for ax in (left, right) for a in [*ax.lines, *ax.collections]}
    for a in only.aggregates:  # the dot at the mean, the bar over the interval
        (x,), _ = drawn[f"dot:{a.variant}"].get_data()
        assert x == pytest.approx(100 * a.top1.mean)
        (seg,) = drawn[f"bar:{a.variant}"].get_segments()
        assert seg[:, 0] == pytest.approx([100 * a.top1.low, 100 * a.top1.high])
    (g,) = only.gains
    (x,), _ = drawn["dot:finetune_b16 − scratch_ti4"].get_data()
    assert x == pytest.approx(100 * g.diff.mean)
    png_bytes(fig)
    assert {n for n, _, _ in study_figures(study, {}, 10)} == {"curve.png", "gain.png"}


def test_one_arm_at_one_budget_has_no_empty_gain_panel():
    scratch_only = summarise([c for c in study_cells()
                              if c.budget == "100" and c.kind == "scratch"])
    assert scratch_only.gains == ()
    ((name, fig, _),) = study_figures(scratch_only, {}, 10)
    assert name == "study.png" and len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["scratch_ti4"]
    png_bytes(fig)


def test_gain_figure_plots_the_gains_and_zero(study):
    fig = gain_figure(study, num_classes=10)
    ax = fig.axes[0]
    x, y = _line(fig, "gain:finetune_b16-scratch_ti4").get_data()
    np.testing.assert_allclose(x, [10.0, 100.0, 121.2])
    np.testing.assert_allclose(y, [100 * g.diff.mean for g in study.gains])
    assert any(list(ln.get_ydata()) == [0, 0] for ln in ax.lines)  # the line at 0
    assert "paired Student's t over 3 seeds" in ax.get_title()


def test_report_with_a_study_starts_with_it(tmp_path, study, monkeypatch):
    rendered = []

    def png(fig):
        rendered.append(fig.axes[0].get_title())
        return tiny_png()

    monkeypatch.setattr(page_mod, "png_bytes", png)
    d = _tiny(11)
    _report(tmp_path, d, study=study)
    assert rendered[0].startswith("Test accuracy against the label budget")
    assert rendered[1].startswith("Pretraining gain")
    page = (tmp_path / "report.html").read_text()
    body = page.split("</h1>", 1)[1]
    assert body.index('alt="curve.png"') < body.index('alt="gain.png"') \
        < body.index("<caption>Test top-1") < body.index("<caption>Pretraining gain") \
        < body.index("Per-variant results") < body.index('alt="per_class_accuracy.png"')
    # the answer first: the headline sentence, then the study
    assert body.lstrip().startswith('<p class="headline">Pretraining adds ')
    assert body.index('<p class="headline">') < body.index('<h2 id="study">')
    assert page.count("data:image/png;base64,") == len(FIGURES) + len(d["variants"]) + 1 + 2
    assert (tmp_path / "curve.csv").read_text() == curve_csv(study, len(d["classes"]))
    assert (tmp_path / "gain.csv").read_text() == gain_csv(study, len(d["classes"]))
    assert {"curve.png", "gain.png"} <= {p.name for p in (tmp_path / "figures").iterdir()}
    md = (tmp_path / "report.md").read_text()
    assert md.index("| variant | kind | 10 per class") < md.index("| variant | kind | model |")
    first = md.split("\n", 2)[2]
    assert first.startswith("**Pretraining adds ")
    assert first.index("**\n") < first.index("## Test accuracy against the label budget")
    assert not list(tmp_path.rglob(".*.tmp-*"))


TTA_VIEWS = "2 views: the image and its mirror image"


def tta_study_cells(seeds=(0, 1, 2)) -> list[Cell]:
    """``study_cells`` evaluated with TTA as well: TTA gets 8, 10 and 12 more of the 1000 test
    images right than the plain pass on seeds 0, 1, 2 (an effect of +1.0 points)."""
    rng = np.random.default_rng(1)
    out = []
    for c in study_cells(seeds):
        correct = c.correct.copy()
        correct[rng.permutation(np.flatnonzero(~correct))[:8 + 2 * seeds.index(c.seed)]] = True
        out.append(replace(c, tta_top1=correct.mean(), tta_correct=correct))
    return out


def test_tta_table_is_beside_the_plain_figures_which_stay_as_they_are(study):
    st = summarise(tta_study_cells(), tta_views=TTA_VIEWS)
    assert study_rows(st)[:2] == study_rows(study)  # the plain tables, unchanged
    title, header, rows = study_rows(st)[2]
    assert title.startswith(f"Test-time augmentation ({TTA_VIEWS}): test top-1 (%)")
    assert header == ["variant", "kind", "budget", "plain top-1", "with TTA", "effect of TTA"]
    assert len(rows) == len(st.tta) == 6
    for row, t in zip(rows, st.tta):
        plain = next(a.top1 for a in st.aggregates
                     if (a.variant, a.budget) == (t.variant, t.budget))
        e = t.effect
        assert e.mean == pytest.approx(0.010) and e.excludes_zero
        assert row == [t.variant, t.kind, budget_header(t.budget),
                       f"{100 * plain.mean:.1f} ± {100 * plain.half_width:.1f}",
                       f"{100 * t.top1.mean:.1f} ± {100 * t.top1.half_width:.1f}",
                       f"+{100 * e.mean:.1f} ± {100 * e.half_width:.1f} (95% CI "
                       f"{100 * e.low:.1f} to {100 * e.high:.1f}; excludes 0)"]
    md = study_markdown(st)
    assert f"**{title}**" in md and "| variant | kind | budget | plain top-1 |" in md
    assert "|---|---|---|---:|---:|---:|" in md  # text left, numbers right
    sentence = md.splitlines()[-1]
    assert "Effects of TTA: 95% interval: paired Student's t over 3 seeds." in sentence
    assert "a gain or an effect of TTA" in sentence
    assert "Test-time augmentation" not in study_markdown(study)  # no TTA, no table


def test_one_seed_tta_table_says_bootstrap():
    st = summarise(tta_study_cells(seeds=(7,)), tta_views=TTA_VIEWS)
    md = study_markdown(st)
    assert "Effects of TTA: 95% interval, 1 seed: paired bootstrap over test images." in md
    assert "(b)" not in md


def test_report_page_has_the_tta_table_after_the_plain_ones(tmp_path, no_rendering):
    st = summarise(tta_study_cells(), tta_views=TTA_VIEWS)
    _report(tmp_path, _tiny(11), study=st)
    body = (tmp_path / "report.html").read_text().split("</h1>", 1)[1]
    assert body.index("<caption>Test top-1") < body.index("<caption>Pretraining gain") \
        < body.index(f"<caption>Test-time augmentation ({TTA_VIEWS})") \
        < body.index("Per-variant results")
    assert "<th>effect of TTA</th>" in body and "<td>all labels</td>" in body
    assert "Test-time augmentation" in (tmp_path / "report.md").read_text()


def test_report_with_a_study_fails_whole(tmp_path, study, monkeypatch, no_rendering):
    """A failing study figure: nothing is written (everything is rendered first)."""
    def broken(*args, **kwargs):
        raise RuntimeError("curve failed")

    monkeypatch.setattr(page_mod, "study_figures", broken)
    with pytest.raises(RuntimeError, match="curve failed"):
        _report(tmp_path, _tiny(12), study=study)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def render_study_check(out: Path) -> None:
    """The study figures (3 seeds, and 1 seed) as PNGs, for a look."""
    out.mkdir(parents=True, exist_ok=True)
    colors = {"scratch_ti4": "tab:blue", "finetune_b16": "tab:green"}
    for tag, st in (("3seeds", summarise(study_cells())),
                    ("1seed", summarise(study_cells(seeds=(7,)))),
                    ("1budget", summarise([c for c in study_cells() if c.budget == "100"]))):
        (out / f"curve_{tag}.png").write_bytes(png_bytes(curve_figure(st, colors,
                                                                      num_classes=10)))
        (out / f"gain_{tag}.png").write_bytes(png_bytes(gain_figure(st, num_classes=10)))


if __name__ == "__main__":  # python tests/test_report.py OUT_DIR: the demo report
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/report_demo")
    for sub, kw in (("gray28", dict(size=28, channels=1)), ("rgb32", dict(size=32, channels=3))):
        demo = make_demo(0, **kw)
        _report(out / sub, demo)
        print(out / sub, {v.name: round(v.metrics.top1, 4) for v in demo["variants"]})
