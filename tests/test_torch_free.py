"""Prediction never imports the PyTorch side: `classify predict --images` and the service (startup and one
POST /v1/predict), each in a fresh process, end with neither torch, torchvision, timm nor open_clip in
``sys.modules``. The CLI's model is trained on the tiny open_clip encoder (conftest's ``tiny_clip``): resolving
that encoder by its name would import open_clip (and fail: its architecture is registered only in this test
process), so the model's recorded encoder identity must be what loads its exported ONNX file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "timm", "open_clip")
REPORT = f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"

CLI = f"""
import json, sys
from classifiers.cli import main
assert main(sys.argv[1:]) == 0
{REPORT}
"""

SERVICE = f"""
import json, sys
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
with TestClient(create_app(sys.argv[1], Settings(encoder_workers=1))) as client:
    image = open(sys.argv[2], "rb").read()
    response = client.post("/v1/predict", files=[("files", ("a.jpg", image, "image/jpeg"))])
    assert response.status_code == 200 and response.json()["results"][0]["status"] == "ok", response.text
{REPORT}
"""


def heavy_modules(script: str, *args: str) -> list[str]:
    """Run ``script`` in a fresh interpreter (the repository's code); the heavy modules it ended with."""
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def open_clip_model(tmp_path_factory, tiny_encoder, picture) -> Path:
    """A tiny tagger trained on the tiny open_clip encoder's embeddings of 24 pictures."""
    from classifiers.artifacts import save_model
    from classifiers.train import train
    from embed.cache import Embeddings

    vectors, errors = tiny_encoder.embed_images([picture(seed) for seed in range(24)])
    assert not any(errors)
    uuids = [f"img{i:02d}" for i in range(24)]
    labels = pd.DataFrame({"uuid": uuids, "cc3": [("SHIRTS", "BLOUSES", "TANK_TOPS")[i % 3] for i in range(24)],
                           "floral": [i % 2 for i in range(24)]})
    embeddings = Embeddings({"encoder": tiny_encoder.spec.to_dict()}, np.array(uuids), vectors)
    folder = tmp_path_factory.mktemp("open-clip-model") / "model"
    save_model(train(labels, embeddings, head="logreg", n_jobs=1, tags=["floral"]), folder)
    return folder


def test_classify_predict_images_imports_no_torch(open_clip_model, tiny_clip, write_image, tmp_path) -> None:
    images = [write_image(tmp_path / "images" / f"shot{seed}.jpg", seed) for seed in (40, 41)]
    out = tmp_path / "predictions.parquet"
    argv = ["predict", "--model", str(open_clip_model), "--images", *map(str, images), "--out", str(out)]
    assert heavy_modules(CLI, *argv) == []
    assert pd.read_parquet(out)["uuid"].tolist() == ["shot40", "shot41"]


def test_service_startup_and_predict_import_no_torch(service_model, write_image, tmp_path) -> None:
    pytest.importorskip("fastapi", reason="pip install 'vinted-tagger[serve]'")
    image = write_image(tmp_path / "a.jpg", 42)
    assert heavy_modules(SERVICE, str(service_model), str(image)) == []


def test_a_missing_onnx_file_is_an_error_at_prediction_not_an_export(service_model, tmp_path, monkeypatch) -> None:
    """Prediction never builds the encoder (that needs torch): an encoder not exported here (and not shipped in
    the package) is one clear error."""
    from classifiers.predict import Tagger
    from embed import runtime

    monkeypatch.setenv("VINTED_TAGGER_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setattr(runtime, "packaged_dir", lambda spec: tmp_path / "not-shipped")
    tagger = Tagger.load(service_model)
    hint = r"not built here .* `embed --export-only --encoder efficientnet-lite2`"
    for attempt in (tagger.check_encoder, tagger.load_encoder):
        with pytest.raises(FileNotFoundError, match=hint):
            attempt()
    assert not (tmp_path / "empty-home").exists()
