"""The REST service (service/) through FastAPI's TestClient with its lifespan run: every route, every error,
per-item errors, response schemas and the request id; then the real server (`python -m service` in a
subprocess on a free loopback port) over HTTP, whose answer must equal the library's and `classify predict`'s.

The model is conftest's ``service_model``: a tiny one trained on EfficientNet-Lite2 embeddings of a few test
pictures, so the real encoder, heads and image code all run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from classifiers.predict import Tagger

# The service needs the serve extra (FastAPI, uvicorn, python-multipart); without it these tests skip.
pytest.importorskip("fastapi", reason="pip install 'vinted-tagger[serve]'")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from service.app import create_app  # noqa: E402
from service.schemas import ErrorResponse, ImageFailure, ImagePrediction, ModelInfo, PredictResponse  # noqa: E402
from service.settings import Settings  # noqa: E402

CLASSES = ["BLOUSES", "SHIRTS", "TANK_TOPS"]  # what conftest's service_model was trained on
TAGS = ["polka dot", "floral"]
ROOT = Path(__file__).resolve().parents[1]
SMALL = Settings(max_file_mb=0.05, max_files=3, max_request_mb=0.12)  # 51 KB per file, 3 files, 123 KB


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def client(service_model: Path):
    with TestClient(create_app(service_model, Settings()), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def small_client(service_model: Path):
    """A service with tiny limits, to reach every limit with small requests."""
    with TestClient(create_app(service_model, SMALL), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def jpegs(picture, image_bytes) -> list[bytes]:
    return [image_bytes(picture(seed)) for seed in range(5)]


def part(name: str, data: bytes, content_type: str = "image/jpeg") -> tuple:
    return ("files", (name, data, content_type))


def post_one(client, data: bytes):
    return client.post("/v1/predict", files=[part("a.jpg", data)])


def error_of(response, status: int, code: str) -> str:
    """Assert the response is the standard error shape with this status and code; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = ErrorResponse.model_validate(response.json())
    assert body.error.code == code, body
    return body.error.message


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb's calling card."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


# ------------------------------------------------------------------------------------------ health, model
def test_healthz(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_when_loaded(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready" and len(response.json()["model_id"]) == 12


def test_not_ready_before_startup(service_model: Path) -> None:
    # Without `with`, TestClient does not run the lifespan: the model is never loaded.
    client = TestClient(create_app(service_model))
    assert client.get("/healthz").status_code == 200
    error_of(client.get("/readyz"), 503, "not_ready")
    error_of(client.get("/v1/model"), 503, "not_ready")
    error_of(client.post("/v1/predict", content=b"x", headers={"content-type": "image/jpeg"}), 503, "not_ready")


def test_model_info(client, service_model: Path) -> None:
    response = client.get("/v1/model")
    assert response.status_code == 200
    info = ModelInfo.model_validate(response.json())
    tagger = Tagger.load(service_model)
    assert info.classes == CLASSES and info.tags == TAGS
    assert info.thresholds == dict(zip(TAGS, tagger.model.thresholds().tolist()))
    assert info.encoder.name == "efficientnet-lite2" and info.encoder.dim == tagger.encoder_spec["dim"]
    assert info.fingerprint == tagger.model.info["data_fingerprint"]
    assert info.training["head"] == "logreg"
    assert info.model_id == client.get("/readyz").json()["model_id"]


def test_stats(client, jpegs) -> None:
    before = client.get("/v1/stats").json()
    client.post("/v1/predict", files=[part("a.jpg", jpegs[0]), part("b.jpg", jpegs[1])])
    after = client.get("/v1/stats").json()
    assert after["images"] == before["images"] + 2 and after["batches"] > before["batches"]
    assert after["pending"] == 0 and after["mean_batch"] >= 1


def test_openapi_and_docs(client) -> None:
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/v1/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"multipart/form-data", "image/*"}
    assert {"200", "413", "415", "422"} <= set(predict["responses"])
    assert {"/healthz", "/readyz", "/v1/model", "/v1/stats"} <= set(spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_page_and_docs_are_served_locally(client) -> None:
    """Without a browser: every asset the page and the docs name is on this service, and answers."""
    for path in ("/", "/docs", "/redoc"):
        response = client.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="([^"#]+)"', response.text)
        assert assets and all(a.startswith("/") or a.startswith("data:") for a in assets), (path, assets)
        for asset in (a for a in assets if a.startswith("/") and a not in ("/docs", "/redoc")):
            assert client.get(asset).status_code == 200, asset
    assert "content-security-policy" not in client.get("/healthz").headers  # JSON answers are left alone


# ----------------------------------------------------------------------------------------------- predict
def test_predict_matches_classifiers_predict(client, service_model: Path, jpegs) -> None:
    response = client.post("/v1/predict", files=[part(f"{i}.jpg", data) for i, data in enumerate(jpegs)])
    assert response.status_code == 200
    body = PredictResponse.model_validate(response.json())
    assert body.model_id == client.get("/readyz").json()["model_id"]
    expected = Tagger.load(service_model).predict_images(jpegs)
    assert [r.index for r in body.results] == list(range(len(jpegs)))
    for result, want in zip(body.results, expected):
        assert isinstance(result, ImagePrediction) and result.filename == f"{result.index}.jpg"
        assert (result.category1, result.category2) == (want["category1"], want["category2"])
        assert [c.category for c in result.categories] == list(want["categories"])  # 3 classes < k=5
        for c in result.categories:
            assert c.probability == pytest.approx(want["categories"][c.category], abs=1e-5)
        for tag, decision in result.tags.items():
            assert decision.present == int(want["tags"][tag]["present"])
            assert decision.score == pytest.approx(want["tags"][tag]["score"], abs=1e-5)
            assert decision.threshold == want["tags"][tag]["threshold"]
            assert decision.present == int(decision.score >= decision.threshold)


def test_predict_raw_body(client, jpegs, picture, image_bytes) -> None:
    for data, content_type in [(jpegs[0], "image/jpeg"), (image_bytes(picture(3), "PNG"), "image/png")]:
        response = client.post("/v1/predict", content=data, headers={"content-type": content_type})
        assert response.status_code == 200, response.text
        (result,) = PredictResponse.model_validate(response.json()).results
        assert result.status == "ok" and result.filename is None


def test_raw_body_and_multipart_agree(client, jpegs) -> None:
    raw = client.post("/v1/predict", content=jpegs[1], headers={"content-type": "image/jpeg"}).json()
    form = client.post("/v1/predict", files=[part("x.jpg", jpegs[1])]).json()
    assert raw["results"][0]["categories"] == form["results"][0]["categories"]


def test_top_k(client, jpegs) -> None:
    def categories(k):
        return client.post(f"/v1/predict?k={k}", files=[part("a.jpg", jpegs[0])])

    one = categories(1).json()["results"][0]
    assert len(one["categories"]) == 1 and one["categories"][0]["category"] == one["category1"]
    probabilities = [c["probability"] for c in categories(3).json()["results"][0]["categories"]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1.0)
    assert len(categories(50).json()["results"][0]["categories"]) == 3  # capped at the class count
    for bad in (0, -1, 101, "two"):
        message = error_of(categories(bad), 422, "invalid_request")
        assert "k" in message


def test_concurrent_requests_are_batched(service_model: Path, jpegs) -> None:
    from concurrent.futures import ThreadPoolExecutor

    settings = Settings(encoder_workers=1, max_batch=8, batch_window_ms=5)
    with TestClient(create_app(service_model, settings)) as client:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda i: post_one(client, jpegs[i % 5]), range(24)))
        assert all(r.status_code == 200 for r in responses)
        stats = client.get("/v1/stats").json()
        assert stats["images"] == 24 and stats["batches"] < 24  # some encoder calls served several requests
        expected = {i: post_one(client, jpegs[i]).json()["results"][0] for i in range(5)}
        for i, response in enumerate(responses):  # batched answers equal the lone ones
            got, want = response.json()["results"][0], expected[i % 5]
            assert got["category1"] == want["category1"]
            for a, b in zip(got["categories"], want["categories"]):
                assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_parallel_encoder_sessions(service_model: Path, jpegs) -> None:
    from concurrent.futures import ThreadPoolExecutor

    settings = Settings(encoder_workers=2, max_batch=1)
    with TestClient(create_app(service_model, settings)) as client:
        assert client.app.state.tagger.sessions == 2
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda i: post_one(client, jpegs[i % 5]), range(12)))
        assert all(r.status_code == 200 for r in responses)
        first = [r.json()["results"][0] for r in responses[:5]]
        again = [client.post("/v1/predict", files=[part("a.jpg", jpegs[i])]).json()["results"][0] for i in range(5)]
        for one, other in zip(first, again):  # the same answer whichever session served it
            assert [c["category"] for c in one["categories"]] == [c["category"] for c in other["categories"]]
            for a, b in zip(one["categories"], other["categories"]):
                assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)
        assert client.get("/v1/stats").json()["mean_batch"] == 1.0
        # The metrics count every image once whichever worker encoded it (threads of one process).
        scrape = client.get("/metrics").text
        assert "vinted_tagger_encoder_batch_images_count 17.0" in scrape  # 12 + 5 one-image calls
        assert 'vinted_tagger_http_requests_total{method="POST",route="/v1/predict",status="200"} 17.0' in scrape


# ---------------------------------------------------------------------------------------- per-item errors
def test_bad_files_fail_only_their_own_entries(small_client, jpegs) -> None:
    files = [
        part("good0.jpg", jpegs[0]),
        part("truncated.jpg", jpegs[1][: len(jpegs[1]) // 2]),
        part("notes.txt", b"just some text", "text/plain"),
        ]
    response = small_client.post("/v1/predict", files=files)
    assert response.status_code == 200
    results = PredictResponse.model_validate(response.json()).results
    assert [r.status for r in results] == ["ok", "error", "error"]
    assert [r.filename for r in results] == ["good0.jpg", "truncated.jpg", "notes.txt"]
    assert isinstance(results[1], ImageFailure) and results[1].error.code == "corrupt_image"
    assert results[2].error.code == "not_an_image"


def test_oversize_empty_and_bomb_files_fail_alone(small_client, jpegs) -> None:
    files = [part("big.jpg", b"\xff" * 60_000), part("empty.jpg", b""), part("bomb.png", png_claiming(20_000, 20_000))]
    response = small_client.post("/v1/predict", files=files)
    assert response.status_code == 200
    results = PredictResponse.model_validate(response.json()).results
    assert [r.error.code for r in results] == ["file_too_large", "empty_file", "decompression_bomb"]
    good = small_client.post("/v1/predict", files=[part("big.jpg", b"\xff" * 60_000), part("ok.jpg", jpegs[2])])
    assert [r["status"] for r in good.json()["results"]] == ["error", "ok"]


# ------------------------------------------------------------------------------------ whole-request errors
def test_single_bad_file_is_the_request_status(client, jpegs) -> None:
    error_of(client.post("/v1/predict", files=[part("a.jpg", b"plain text, not a picture")]), 422, "not_an_image")
    error_of(client.post("/v1/predict", files=[part("a.jpg", jpegs[0][:300])]), 422, "corrupt_image")
    error_of(client.post("/v1/predict", files=[part("a.jpg", b"")]), 400, "empty_file")
    raw = {"content-type": "image/jpeg"}
    # Starts like a GIF, then nothing readable: a broken photo, not a file of another kind.
    error_of(client.post("/v1/predict", content=b"GIF89a-garbage", headers=raw), 422, "corrupt_image")


@pytest.mark.parametrize("width,height", [(9_000, 9_000), (20_000, 20_000)])
def test_decompression_bomb(client, width: int, height: int) -> None:
    bomb = png_claiming(width, height)
    error_of(client.post("/v1/predict", content=bomb, headers={"content-type": "image/png"}), 422, "decompression_bomb")


def test_empty_body(client) -> None:
    error_of(client.post("/v1/predict"), 400, "empty_body")
    error_of(client.post("/v1/predict", content=b"", headers={"content-type": "image/jpeg"}), 400, "empty_body")
    chunked = client.post("/v1/predict", content=iter([b""]), headers={"content-type": "image/jpeg"})
    error_of(chunked, 400, "empty_body")


def test_file_over_size_limit(small_client, jpegs) -> None:
    big = b"\xff" * 60_000
    error_of(small_client.post("/v1/predict", files=[part("big.jpg", big)]), 413, "file_too_large")
    raw = {"content-type": "image/jpeg"}
    error_of(small_client.post("/v1/predict", content=big, headers=raw), 413, "file_too_large")
    # Without a Content-Length (chunked), the limit stops the read as the body streams in.
    chunks = iter([big[i : i + 8192] for i in range(0, len(big), 8192)])
    error_of(small_client.post("/v1/predict", content=chunks, headers=raw), 413, "file_too_large")
    assert small_client.post("/v1/predict", content=jpegs[0], headers=raw).status_code == 200


def test_request_over_size_limit(small_client) -> None:
    files = [part(f"{i}.jpg", b"\xff" * 45_000) for i in range(3)]  # each file fits, the body does not
    error_of(small_client.post("/v1/predict", files=files), 413, "request_too_large")


def test_too_many_files(small_client, jpegs) -> None:
    message = error_of(small_client.post("/v1/predict", files=[part("a.jpg", jpegs[0])] * 4), 413, "too_many_files")
    assert "3" in message
    assert small_client.post("/v1/predict", files=[part("a.jpg", jpegs[0])] * 3).status_code == 200


def test_wrong_content_type(client, jpegs) -> None:
    text = {"content-type": "text/plain"}
    error_of(client.post("/v1/predict", content=jpegs[0], headers=text), 415, "unsupported_media_type")
    error_of(client.post("/v1/predict", json={"image": "abc"}), 415, "unsupported_media_type")
    error_of(client.post("/v1/predict", content=jpegs[0]), 415, "unsupported_media_type")


def test_malformed_multipart(client, jpegs) -> None:
    no_boundary = {"content-type": "multipart/form-data"}
    error_of(client.post("/v1/predict", content=b"--x\r\n", headers=no_boundary), 400, "bad_multipart")
    garbage = {"content-type": "multipart/form-data; boundary=abc"}
    error_of(client.post("/v1/predict", content=b"this is not multipart at all", headers=garbage), 400, "bad_multipart")
    wrong_field = client.post("/v1/predict", files=[("image", ("a.jpg", jpegs[0], "image/jpeg"))])
    assert "files" in error_of(wrong_field, 400, "no_files")


def test_unknown_route_and_method(client) -> None:
    error_of(client.get("/v2/predict"), 404, "not_found")
    error_of(client.get("/nothing-here"), 404, "not_found")
    error_of(client.get("/static/no-such-file.js"), 404, "not_found")
    response = client.get("/v1/predict")
    error_of(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    error_of(client.delete("/v1/model"), 405, "method_not_allowed")


def test_unexpected_error_is_a_logged_500_and_the_service_lives_on(client, jpegs, monkeypatch, caplog) -> None:
    import service.app

    def broken(*args, **kwargs):
        raise RuntimeError("bug in formatting")

    monkeypatch.setattr(service.app, "image_prediction", broken)
    with caplog.at_level(logging.ERROR, logger="service"):
        response = client.post("/v1/predict", files=[part("a.jpg", jpegs[0])])
    error_of(response, 500, "internal_error")
    assert "bug in formatting" not in response.text  # internals stay in the log
    assert any("bug in formatting" in (r.exc_text or "") for r in caplog.records)
    monkeypatch.undo()
    assert client.post("/v1/predict", files=[part("a.jpg", jpegs[0])]).status_code == 200


# ------------------------------------------------------------------------------------ request id, logging
def test_request_id_echoed_or_generated(client) -> None:
    given = client.get("/healthz", headers={"x-request-id": "order-42.retry_1"})
    assert given.headers["x-request-id"] == "order-42.retry_1"
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32 and generated != client.get("/healthz").headers["x-request-id"]
    unsafe = client.get("/healthz", headers={"x-request-id": "a" * 500}).headers["x-request-id"]
    assert unsafe != "a" * 500 and len(unsafe) == 32
    assert client.get("/nowhere", headers={"x-request-id": "r-404"}).headers["x-request-id"] == "r-404"


def test_access_log_line(client, jpegs, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="service.access"):
        two = [part("a.jpg", jpegs[0]), part("b.jpg", jpegs[1])]
        client.post("/v1/predict", files=two, headers={"x-request-id": "log-1"})
        client.get("/missing", headers={"x-request-id": "log-2"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.access"]
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["log-1"]["status"] == 200 and by_id["log-1"]["images"] == 2
    assert by_id["log-1"]["method"] == "POST" and by_id["log-1"]["path"] == "/v1/predict"
    assert by_id["log-1"]["ms"] > 0
    assert by_id["log-2"]["status"] == 404 and by_id["log-2"]["images"] == 0


# ---------------------------------------------------------------------------------- the real server, HTTP
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(process: subprocess.Popen, base_url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {process.stdout.read()}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server not ready in time")


@pytest.fixture()
def server(service_model: Path, tmp_path: Path):
    port = free_port()
    log_path = tmp_path / "server.log"
    command = [sys.executable, "-m", "service", "--model", str(service_model), "--port", str(port)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, env=os.environ)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base_url)
        yield base_url, log_path
    finally:
        process.terminate()
        process.wait(timeout=30)


def classify_cli(model: Path, folder: Path, out: Path) -> pd.DataFrame:
    command = [sys.executable, "-m", "classifiers.cli", "predict", "--model", str(model), "--images", str(folder)]
    subprocess.run([*command, "--out", str(out), "--with-scores"], cwd=ROOT, check=True, capture_output=True)
    return pd.read_parquet(out).set_index("uuid")


def test_http_answer_equals_classify_predict(server, service_model: Path, picture, image_bytes, tmp_path) -> None:
    base_url, log_path = server
    folder = tmp_path / "images"
    folder.mkdir()
    images = {f"shot{seed}": image_bytes(picture(seed, (120, 160))) for seed in (7, 8)}
    for stem, data in images.items():
        (folder / f"{stem}.jpg").write_bytes(data)

    files = [("files", (f"{stem}.jpg", data, "image/jpeg")) for stem, data in images.items()]
    response = httpx.post(f"{base_url}/v1/predict", files=files, headers={"x-request-id": "subprocess-1"}, timeout=30)
    assert response.status_code == 200 and response.headers["x-request-id"] == "subprocess-1"
    results = response.json()["results"]

    library = Tagger.load(service_model).predict_images(list(images.values()))
    cli = classify_cli(service_model, folder, tmp_path / "predictions.parquet")
    for stem, result, want in zip(images, results, library):
        assert result["status"] == "ok" and result["filename"] == f"{stem}.jpg"
        assert (result["category1"], result["category2"]) == (want["category1"], want["category2"])
        assert (result["category1"], result["category2"]) == (cli.at[stem, "category1"], cli.at[stem, "category2"])
        for category in result["categories"]:
            name, probability = category["category"], category["probability"]
            assert probability == pytest.approx(want["categories"][name], abs=1e-5)
            assert probability == pytest.approx(cli.at[stem, f"p_{name}"], abs=1e-5)
        for tag, decision in result["tags"].items():
            assert decision["present"] == int(want["tags"][tag]["present"]) == cli.at[stem, tag]
            assert decision["score"] == pytest.approx(want["tags"][tag]["score"], abs=1e-5)
            assert decision["score"] == pytest.approx(cli.at[stem, f"score_{tag}"], abs=1e-5)

    # The structured access line for that request is in the server's log.
    time.sleep(0.2)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    logged = [line for line in lines if line.get("request_id") == "subprocess-1"]
    assert logged and logged[0]["status"] == 200 and logged[0]["images"] == 2


# --------------------------------------------------------------------------- vinted-serve (python -m service)
def test_serve_flags_are_the_settings(monkeypatch) -> None:
    import service.app
    from service.__main__ import build_parser, main

    flags = {action.dest for action in build_parser()._actions}
    assert set(Settings.model_fields) <= flags  # every setting is a flag
    runs = []
    monkeypatch.setattr(service.app, "run", lambda model, host, port, settings, log_level: runs.append(settings))
    monkeypatch.setenv("VINTED_TAGGER_MAX_BATCH", "2")
    monkeypatch.setenv("VINTED_TAGGER_MAX_FILES", "3")
    assert main(["--max-batch", "4", "--runtime", "onnxruntime"]) == 0
    assert (runs[0].max_batch, runs[0].max_files, runs[0].runtime) == (4, 3, "onnxruntime")  # flag > env > default


@pytest.mark.parametrize("argv, message", [
    (["--model", "no-such-model", "--port", "0"], "no model at no-such-model"),
    (["--max-pending", "0", "--port", "0"], "settings out of range"),
])
def test_serve_user_errors_are_one_line_exit_2(argv, message, capsys) -> None:
    from service.__main__ import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
