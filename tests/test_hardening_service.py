"""Issue 10, points 1, 6 and 9 in the service: decode budget and lanes, whole-request admission (503 +
Retry-After), HEAD /healthz, the schema's file count, and a bounded shutdown with a slow client."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="pip install 'vinted-tagger[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from service.app import create_app  # noqa: E402
from service.batcher import Batcher  # noqa: E402
from service.errors import ApiError  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.test_hardening_images import sixteen_bit_png  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "artifacts" / "model"


def jpeg(seed: int, size=(120, 90)) -> bytes:
    array = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG")
    return buffer.getvalue()


def files(*payloads: bytes) -> list:
    return [("files", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(payloads)]


@pytest.fixture(scope="module")
def client(lite2_encoder):
    settings = Settings(max_pending=3, max_files=8, max_heavy_pending=1, heavy_decode_mb=1)
    with TestClient(create_app(MODEL, settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_request_over_capacity_is_refused_whole_with_retry_after(client) -> None:
    response = client.post("/v1/predict", files=files(*(jpeg(i) for i in range(4))))  # 4 images, room for 3
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "overloaded"
    ok = client.post("/v1/predict", files=files(*(jpeg(i) for i in range(3))))
    assert ok.status_code == 200 and [r["status"] for r in ok.json()["results"]] == ["ok"] * 3
    assert client.get("/v1/stats").json()["pending"] == 0


def test_heavy_images_count_against_their_own_capacity(client) -> None:
    heavy = jpeg(7, size=(1200, 1000))  # decodes at 1/4: over heavy_decode_mb=1 here
    response = client.post("/v1/predict", files=files(heavy, heavy))
    assert response.status_code == 503
    assert client.post("/v1/predict", files=files(heavy, jpeg(1))).status_code == 200


def test_decode_heavy_upload_is_refused_from_its_header(client) -> None:
    started = time.perf_counter()
    response = client.post("/v1/predict", files=files(sixteen_bit_png(8940, 8940)))
    assert response.status_code == 422 and response.json()["error"]["code"] == "decompression_bomb"
    assert time.perf_counter() - started < 5  # decoding it took 16.8 s of CPU for 16 copies


def test_head_healthz(client) -> None:
    response = client.head("/healthz")
    assert response.status_code == 200 and response.content == b""


def test_schema_requires_at_least_one_file_and_states_the_limit(client) -> None:
    body = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["requestBody"]
    files_schema = body["content"]["multipart/form-data"]["schema"]["properties"]["files"]
    assert files_schema["minItems"] == 1 and files_schema["maxItems"] == 8


# --- the batcher: all-or-nothing admission, heavy lane ------------------------------------------------------


def test_concurrent_requests_are_each_answered_whole_or_refused_whole() -> None:
    def decode(data: bytes) -> np.ndarray:
        time.sleep(0.002)
        return np.zeros((2, 2, 3), np.uint8)

    async def scenario():
        batcher = Batcher(decode, lambda pixels, lane: [1] * len(pixels), max_batch=4, window_s=0.001,
                          max_pending=40, decode_threads=2)
        batcher.start()

        async def request(n: int):
            payloads = [b"x"] * n
            costs = await batcher.costs(payloads)
            with batcher.admission(costs):
                return await asyncio.gather(*(batcher.run_image(p, c) for p, c in zip(payloads, costs)))

        try:
            return await asyncio.gather(*(request(16) for _ in range(10)), return_exceptions=True)
        finally:
            await batcher.stop()

    answers = asyncio.run(scenario())
    refused = [a for a in answers if isinstance(a, ApiError)]
    assert refused and all(a.status == 503 and a.headers == {"Retry-After": "1"} for a in refused)
    assert all(a == [1] * 16 for a in answers if not isinstance(a, ApiError))  # never a partial answer


def test_heavy_lane_keeps_light_images_moving() -> None:
    running, peak, finished, priority = [0], [0], [], {}
    lock = threading.Lock()

    def decode(data: bytes) -> np.ndarray:
        priority[data] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        with lock:
            running[0] += data == b"heavy"
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2 if data == b"heavy" else 0.005)
        with lock:
            running[0] -= data == b"heavy"
        return np.zeros((2, 2, 3), np.uint8)

    async def scenario():
        batcher = Batcher(decode, lambda pixels, lane: [0] * len(pixels), max_batch=1, window_s=0, max_pending=64,
                          decode_threads=2, inspect=lambda data: 100 if data == b"heavy" else 1, heavy_work=10)
        batcher.start()

        async def one(data: bytes):
            await batcher.predict(data)
            finished.append((data, time.perf_counter()))

        try:
            started = time.perf_counter()
            await asyncio.gather(*(one(b"heavy") for _ in range(4)), *(one(b"light") for _ in range(20)))
            return started
        finally:
            await batcher.stop()

    started = asyncio.run(scenario())
    light = [t - started for data, t in finished if data == b"light"]
    assert peak[0] == 1  # one heavy decode at a time, the other thread stays free
    assert priority[b"heavy"] == 19 and priority[b"light"] < 19  # heavy decodes only get idle CPU
    assert max(light) < 0.5  # all light images done long before the four heavy ones (0.8 s)


# --- shutdown with a slow client --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_with_a_slow_client_stops_within_the_timeout(tmp_path, lite2_encoder) -> None:
    port = free_port()
    env = {**os.environ, "VINTED_TAGGER_SHUTDOWN_TIMEOUT_S": "1"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "service", "--model", str(MODEL), "--port", str(port)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                    probe.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if b" 200 " in probe.recv(100):
                        break
            except OSError:
                pass
            time.sleep(0.2)
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 1000000\r\n\r\n" + b"\xff\xd8" + b"\0" * 100)  # ...and then nothing
        time.sleep(0.5)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        assert time.monotonic() - started < 10
        slow.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
