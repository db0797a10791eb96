"""A trained variant as an MLflow model: pt2 export with the preprocessing inside, registered,
and served over REST by ``mlflow models serve`` with the same probabilities as the model."""

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
    run = client.create_run(client.create_experiment("serving"))
    info = log_serving_model(model, run_id=run.info.run_id, classes=CLASSES, image_shape=(8, 8, 1),
                             registered_name="vit-test-finetune")
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
    loaded = mlflow.pyfunc.load_model("models:/vit-test-finetune/1")
    images = input_example((8, 8, 1), n=5)  # another batch size than the example's 2
    probs = loaded.predict(images)
    np.testing.assert_allclose(probs, _expected(model, images), atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


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
        probs = np.asarray(answer["predictions"])
        np.testing.assert_allclose(probs, _expected(model, images), atol=1e-6)
        assert probs.argmax(1).tolist() == _expected(model, images).argmax(1).tolist()
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
