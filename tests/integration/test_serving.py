"""A trained variant as an MLflow model: a torch.export graph with the preprocessing inside,
served through its code (pipeline/tracking/serving_pyfunc.py), registered, and served over REST
by ``mlflow models serve``: per image the class names of the top 5 and every probability, the
same probabilities as the model's."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import numpy as np
import pytest
import torch

from pipeline.models import ImageClassifier, build_vit
from pipeline.tracking.serving import ServingModel, input_example, log_serving_model
from pipeline.tracking.uri import tracking_uri

CLASSES = [f"c{i}" for i in range(10)]


@pytest.fixture
def registered():
    torch.manual_seed(0)
    vit = build_vit("custom", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                    num_classes=10)
    torch.nn.init.normal_(vit.head.weight, std=0.5)  # not the zero head: distinct classes
    model = ImageClassifier(vit).eval()
    client = mlflow.MlflowClient(tracking_uri())
    run = client.create_run(client.create_experiment("serving"), start_time=1_000)
    client.set_terminated(run.info.run_id, "FINISHED", end_time=17_000)  # trained in 16 s
    info = log_serving_model(model, run_id=run.info.run_id, classes=CLASSES, image_shape=(8, 8, 1),
                             name="finetune-all-seed0", registered_name="vit-test-finetune")
    # logging the model into the finished training run leaves its status and its duration
    after = client.get_run(run.info.run_id).info
    assert (after.status, after.start_time, after.end_time) == ("FINISHED", 1_000, 17_000)
    return model, info


def _expected(model, images):
    with torch.no_grad():
        return ServingModel(model)(torch.from_numpy(images)).numpy()


def test_logged_model_has_signature_classes_and_registered_version(registered):
    model, info = registered
    assert info.registered_model_version == 1
    (inp,) = info.signature.inputs.inputs
    assert str(inp.type) == "uint8" and inp.shape == (-1, 8, 8, 1)
    assert info.metadata["classes"] == CLASSES
    assert info.name == "finetune-all-seed0"
    loaded = mlflow.pyfunc.load_model("models:/vit-test-finetune/1")
    images = input_example((8, 8, 1), n=5)  # another batch size than the example's 2
    _check_answer(loaded.predict(images), _expected(model, images))
    _check_answer(loaded.predict(images[:1]), _expected(model, images[:1]))  # one image


def _check_answer(predictions: list[dict], expected: np.ndarray) -> None:
    """One record per image: the top class by name with its probability, the top 5 by name
    (most probable first), every probability; as the model computes them."""
    assert len(predictions) == len(expected)
    for record, probs in zip(predictions, expected):
        np.testing.assert_allclose(record["probabilities"], probs, atol=1e-6)
        order = np.argsort(-probs, kind="stable")[:5]
        assert [t["class"] for t in record["top_k"]] == [CLASSES[i] for i in order]
        assert [t["index"] for t in record["top_k"]] == order.tolist()
        assert record["label"] == CLASSES[order[0]]
        assert record["probability"] == pytest.approx(probs[order[0]], abs=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_with_the_models_probabilities(registered):
    model, _ = registered
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/vit-test-finetune/1",
         "-h", "127.0.0.1", "-p", str(port), "--env-manager", "local"],
        # mlflow execs `uvicorn` through the shell: this interpreter's bin dir first on PATH, so
        # it is found when the venv is not activated (`.venv/bin/python -m pytest`)
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(),
             "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).read()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "the scoring server did not start in 120 s"
                time.sleep(0.2)
        images = input_example((8, 8, 1), n=3)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        _check_answer(answer["predictions"], _expected(model, images))
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
