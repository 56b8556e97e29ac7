"""`pip install .` (not editable) works with no checkout: the wheel, installed into a temporary venv, predicts
with `classify predict --images` and serves with `vinted-serve`, from the committed default model it ships.

The venv borrows this environment's dependencies (a .pth line naming its site-packages: nothing is
downloaded, and the editable install there is not activated); the commands run outside the repository with no
PYTHONPATH, so only the installed copy can answer. The encoder's ONNX graph (and its int8 copy) come from the
wheel too: VINTED_TAGGER_HOME is an empty folder, so nothing exported on this machine can answer.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("fastapi", reason="pip install 'vinted-tagger[serve]'")
httpx = pytest.importorskip("httpx", reason="pip install 'vinted-tagger[dev]'")


def source_copy(folder: Path) -> Path:
    """What the wheel is built from (pyproject, README, the packages it lists, artifacts/), copied so that
    the build writes nothing into the checkout."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    folder.mkdir(parents=True)
    for name in ["pyproject.toml", "README.md", "artifacts", *dict.fromkeys(packages)]:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, folder / name)
    return folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with the wheel installed: its bin/ folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = source_copy(work / "source")
    run = {"check": True, "capture_output": True, "text": True, "timeout": 300}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(work / "dist"), str(source)], **run)
    wheel = next((work / "dist").glob("vinted_tagger-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], **run)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               **run).stdout.strip())
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
                    str(wheel)], **run)
    return venv / "bin"


def outside_env(home: Path) -> dict:
    """No PYTHONPATH, and ``home`` (empty) as VINTED_TAGGER_HOME."""
    return {**{key: value for key, value in os.environ.items() if key != "PYTHONPATH"}, "VINTED_TAGGER_HOME": str(home)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_installed_wheel_predicts_and_serves_with_its_default_model(installed, write_image, tmp_path) -> None:
    env = outside_env(tmp_path / "empty-home")
    run = {"cwd": tmp_path, "env": env, "capture_output": True, "text": True, "timeout": 120}
    where = subprocess.run([str(installed / "python"), "-c", "import classifiers.artifacts as a, embed.encoders as e; "
                            "import embed.runtime as r; "
                            "print(a.__file__); print(a.DEFAULT_MODEL_DIR); "
                            "print(e.weight_path(e.get_encoder('efficientnet-lite2-clothing'))); "
                            "import json; m = json.loads((a.DEFAULT_MODEL_DIR / 'model.json').read_text()); "
                            "g = r.packaged_dir(e.EncoderSpec.from_dict(m['encoder'])); "
                            "print(*(g / n for n in r.GRAPH_FILES + r.INT8_FILES))"], **run)
    module, model_dir, weights, *graph = where.stdout.split()
    assert len(graph) == 4, where.stderr
    # the installed copy answers, and ships the model, the weights, the encoder's graph and its int8 copy
    for path in (module, model_dir, weights, *graph):
        assert Path(path).is_relative_to(installed.parent) and Path(path).exists(), path

    images = [write_image(tmp_path / "images" / f"shot{seed}.jpg", seed, (200, 260)) for seed in (3, 4)]
    out = tmp_path / "predictions.parquet"
    done = subprocess.run([str(installed / "classify"), "predict", "--images", str(tmp_path / "images"),
                           "--out", str(out)], **run)
    assert done.returncode == 0, done.stderr
    predictions = pd.read_parquet(out).set_index("uuid")
    assert sorted(predictions.index) == ["shot3", "shot4"]

    port = free_port()
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen([str(installed / "vinted-serve"), "--port", str(port), "--encoder-workers", "1"],
                                  cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert server.poll() is None, (tmp_path / "server.log").read_text()
        response = httpx.post(f"{base}/v1/predict", files=[("files", ("shot3.jpg", images[0].read_bytes()))],
                              timeout=30)
        served = httpx.get(f"{base}/v1/model", timeout=10).json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert (result["category1"], result["category2"]) == tuple(predictions.loc["shot3", ["category1", "category2"]])
    assert Path(served["model_dir"]) == Path(model_dir) and served["model_id"] == response.json()["model_id"]
