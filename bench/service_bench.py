"""Benchmark the REST service over loopback HTTP: single-image latency, throughput under load, a mixed soak.

    python bench/service_bench.py [--model artifacts/model] [--images ../shared/data/clothing/images.zip]

Starts `python -m service` as a subprocess on a free 127.0.0.1 port and drives it from this process (a
separate process) with the standard library's http.client: one keep-alive connection per client thread and
request bodies built in advance, so the load generator steals as little CPU as possible from the server on
a small machine. Every phase is bounded in requests and seconds.

0. encoder: in this process, while the server idles, the model's encoder (the variant the server runs, from
   /v1/model) on decoded pixels in memory: its batch-16 rate and its batch-1 time, right before c=1 and again
   right after c=8. Their mean is ``encoder_batch_images_per_s`` / ``encoder_batch1_ms``; how far the two
   rates are apart is ``host_speed_drift`` (over 0.15: the host changed speed during the run, rerun it).
1. c=1: 300 single-image requests, one at a time (p50/p99 latency). Their answers are the reference.
   ``p50_over_encoder_batch1_ms`` = p50 minus the encoder's batch-1 time (target <= 2.5 ms).
2. c=8: eight clients for 20 s (images/s, p50/p99 latency), while a scraper reads GET /metrics every second
   (as Prometheus would, more often): the scrape's own time is recorded, and its cost shows in the p99.
   ``c8_over_encoder`` = c8 images/s over the encoder's batch-16 rate: how much of what the machine can encode
   the service delivers under load (target >= 0.6); p99 target 60 ms.
2b. c=32: thirty-two clients for 15 s (images/s, p99, 503 and other 5xx answers).
3. soak: eight clients for 60 s mixing valid images, a multi-file request with one corrupt file, corrupt
   files, oversize files, non-images, a wrong content type and empty bodies. Counts 5xx answers, valid
   requests without a correct 200 ("lost": wrong status, wrong category, or no answer) and the server's
   RSS growth (VmRSS from /proc before and after).
4. attack: two clients send ordinary single photos while four others send decode-heavy files (16-bit PNGs
   just under the decode budget, a 108 MP JPEG, an 80 MP 16-bit PNG that the budget refuses from its
   header) and oversize files, for 30 s. The ordinary requests' p99 is ``attack_normal_p99_ms`` (target
   <= 100 ms); attack files are generated here, in memory.
The two targets in milliseconds of the encoder's own speed are also written in units of this run's encoder
(``TARGETS``): ``p50_overhead_share`` (the overhead over the batch-1 time) and ``c8_p99_encoder_images`` (the
p99 times the batch-16 rate).
Writes bench/results/service.json and prints a table.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from report import machine, write_results  # bench/, this script's folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from classifiers.predict import Tagger  # noqa: E402
from embed.pipeline import BATCH_SIZE  # noqa: E402  the encoder's own batch: embed's
DEFAULT_MODEL = ROOT / "artifacts" / "model"
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "clothing" / "images.zip"
MB = 1024 * 1024
# Issue 24's targets, set on a machine whose encoder ran 396 images/s at batch 16 and 4.59 ms at batch 1. A
# target in milliseconds moves with the machine's speed (this shared host's has changed by half within an
# hour), so each is also judged in units of this run's own encoder: the same bound on the issue's machine.
ISSUE_ENCODER_IMAGES_PER_S, ISSUE_ENCODER_BATCH1_MS = 396.0, 4.59
# Between two c=1 requests the server idles for a few ms (the answer and the next request cross loopback), and an
# encode after an idle spell is slower than one in a tight loop (threads asleep, caches cold): the probe also
# times that, so the one-image overhead can be split into what the service adds and what idling costs.
IDLE_GAP_S = 0.005
TARGETS = {
    "c8_over_encoder": 0.6,  # at least
    "p50_over_encoder_batch1_ms": 2.5,  # at most, and the rest at most:
    "c8_p99_ms": 60.0,
    "p50_overhead_share": round(2.5 / ISSUE_ENCODER_BATCH1_MS, 3),  # the 2.5 ms over the encoder's batch-1 time
    "c8_p99_encoder_images": round(60.0 * ISSUE_ENCODER_IMAGES_PER_S / 1000, 1),  # 60 ms of batch-16 encoding
    "attack_normal_p99_ms": 100.0,
    "soak_rss_growth_mb": 50.0,
    "host_speed_drift": 0.15,  # the encoder's rate before c=1 and after c=8: further apart, the run is void
    "issue_encoder_images_per_s": ISSUE_ENCODER_IMAGES_PER_S,  # (not targets: what the two above derive from)
    "issue_encoder_batch1_ms": ISSUE_ENCODER_BATCH1_MS,
}
SAMPLE_IMAGES = 50


# ------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Request:
    kind: str
    body: bytes
    content_type: str | None
    expect: int  # the right status
    images: tuple[int, ...] = ()  # indices of the valid sample images it carries, in order


def multipart(files: list[tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = os.urandom(12).hex()
    out = io.BytesIO()
    for name, data, content_type in files:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'.encode())
        out.write(f"Content-Type: {content_type}\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def sample_images(path: Path, count: int, seed: int = 0) -> list[bytes]:
    """``count`` JPEGs picked at random (fixed seed) from the archive, read into memory only."""
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith((".jpg", ".jpeg")))
        picked = random.Random(seed).sample(names, count)
        return [archive.read(name) for name in picked]


def single(index: int, image: bytes) -> Request:
    body, content_type = multipart([(f"{index}.jpg", image, "image/jpeg")])
    return Request("valid", body, content_type, 200, (index,))


def soak_requests(images: list[bytes]) -> list[tuple[Request, int]]:
    """(request, weight) pairs: mostly valid traffic, with every kind of bad upload mixed in."""
    corrupt = images[0][: len(images[0]) // 2]  # a JPEG cut in half
    oversize = os.urandom(11 * MB)  # over the default 10 MB limit
    text = b"<html><body>not an image</body></html>" * 20
    valid = [single(i, image) for i, image in enumerate(images)]
    mixed_body, mixed_type = multipart(
        [("a.jpg", images[1], "image/jpeg"), ("bad.jpg", corrupt, "image/jpeg"), ("b.jpg", images[2], "image/jpeg")]
    )
    bad = [
        (Request("multi_with_corrupt", mixed_body, mixed_type, 200, (1, -1, 2)), 6),
        (Request("corrupt", *multipart([("c.jpg", corrupt, "image/jpeg")]), 422), 5),
        (Request("oversize", *multipart([("big.jpg", oversize, "image/jpeg")]), 413), 2),
        (Request("oversize_raw", oversize, "image/jpeg", 413), 1),
        (Request("not_image", *multipart([("x.jpg", text, "image/jpeg")]), 422), 5),
        (Request("wrong_type", text, "text/plain", 415), 2),
        (Request("empty", b"", "image/jpeg", 400), 2),
    ]
    return [(request, 70 / len(valid)) for request in valid] + bad


def sixteen_bit_png(width: int, height: int) -> bytes:
    """A 16-bit greyscale PNG of zeros, compressed row by row: a small file that is costly to decode."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor, row = zlib.compressobj(9), b"\0" * (1 + 2 * width)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def big_jpeg(width: int = 12000, height: int = 9000) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (150, 60, 40)).save(buffer, "JPEG", quality=40)
    return buffer.getvalue()


def attack_requests() -> list[Request]:
    """Decode-heavy and oversize uploads; each is answered (200 with per-item results, 413, 422 or 503)."""
    heavy_png = sixteen_bit_png(3800, 3800)  # ~14 MP of 16-bit: under the service's decode budget
    bomb_png = sixteen_bit_png(8940, 8940)  # the issue's 80 MP 16-bit PNG: refused from its header
    jpeg_108mp = big_jpeg()
    oversize = os.urandom(11 * MB)
    return [
        Request("attack_heavy_png", *multipart([(f"h{i}.png", heavy_png, "image/png") for i in range(4)]), 0),
        Request("attack_bomb_png", *multipart([(f"b{i}.png", bomb_png, "image/png") for i in range(16)]), 0),
        Request("attack_108mp_jpeg", *multipart([("big.jpg", jpeg_108mp, "image/jpeg")]), 0),
        Request("attack_oversize", *multipart([("o.jpg", oversize, "image/jpeg")]), 0),
    ]


# --------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m service`` in a subprocess, run from ``tree`` (a checkout: this one, or another commit's for
    bench/service_baseline.py) with ``env`` (None: this process's); its log goes to a temporary file."""

    def __init__(self, model: Path, log_dir: Path, tree: Path = ROOT, env: dict | None = None):
        self.port = free_port()
        self.log_path = log_dir / "server.log"
        command = [sys.executable, "-m", "service", "--model", str(model), "--port", str(self.port)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def get_json(self, path: str) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS for the server process")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------------------------------------- client
@dataclass
class Outcome:
    kind: str
    status: int | None  # None: no answer (connection error)
    ms: float
    correct: bool


@dataclass
class Client:
    """One keep-alive connection; reopened after any answer that may have closed it."""

    port: int
    connection: http.client.HTTPConnection | None = None
    reference: dict = field(default_factory=dict)  # image index -> category1 from the c=1 phase

    def send(self, request: Request) -> Outcome:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": request.content_type} if request.content_type else {}
        start = time.perf_counter()
        try:
            self.connection.request("POST", "/v1/predict", body=request.body, headers=headers)
            response = self.connection.getresponse()
            payload = response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            self.close()
            return Outcome(request.kind, None, (time.perf_counter() - start) * 1000, False)
        ms = (time.perf_counter() - start) * 1000
        if status != 200 or response.getheader("connection", "").lower() == "close":
            self.close()
        return Outcome(request.kind, status, ms, self.is_correct(request, status, payload))

    def is_correct(self, request: Request, status: int, payload: bytes) -> bool:
        if status != request.expect:
            return False
        if status != 200:
            return True
        results = json.loads(payload)["results"]
        if len(results) != len(request.images):
            return False
        for index, result in zip(request.images, results):
            if index < 0:
                if result["status"] != "error":
                    return False
            elif result["status"] != "ok" or (index in self.reference and result["category1"] != self.reference[index]):
                return False
        return True

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def run_clients(port: int, pick, concurrency: int, seconds: float, max_requests: int, reference: dict) -> tuple:
    """``concurrency`` threads sending ``pick(rng)`` until the time or request budget is spent."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    budget = [max_requests]
    deadline = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        client = Client(port, reference=reference)
        while time.perf_counter() < deadline:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            outcome = client.send(pick(rng))
            with lock:
                outcomes.append(outcome)
        client.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


class CpuMeter:
    """CPU used during a phase by the server, by this load generator and by everything else on the machine.

    The load average counts the benchmark itself; "others_cores" (busy cores not ours) says how much of the
    machine other work took, which is what makes a number on a shared box honest or not.
    """

    def __init__(self, server: Server):
        self.server = server
        self.start = self.read()

    def read(self) -> tuple[float, float, float, float]:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = [int(v) for v in fields]
        busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
        stat = Path(f"/proc/{self.server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        server = int(stat[11]) + int(stat[12])  # utime + stime
        own = os.times()
        hz = os.sysconf("SC_CLK_TCK")
        return time.monotonic(), busy / hz, server / hz, own.user + own.system

    def cores(self) -> dict:
        now = self.read()
        wall, busy, server, own = (b - a for a, b in zip(self.start, now))
        return {
            "server_cores": round(server / wall, 2),
            "load_generator_cores": round(own / wall, 2),
            "others_cores": round(max(busy - server - own, 0.0) / wall, 2),
        }


# ---------------------------------------------------------------------------------------------- phases
def latency_phase(server: Server, valid: list[Request], count: int) -> tuple[dict, dict]:
    client = Client(server.port)
    for request in valid[:20]:  # warm-up, not timed
        client.send(request)
    latencies, reference, failures = [], {}, 0
    for i in range(count):
        request = valid[i % len(valid)]
        outcome = client.send(request)
        failures += outcome.status != 200
        latencies.append(outcome.ms)
    client.close()
    # The reference answers, from one request per image.
    for request in valid:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("POST", "/v1/predict", body=request.body, headers={"Content-Type": request.content_type})
        reference[request.images[0]] = json.loads(connection.getresponse().read())["results"][0]["category1"]
        connection.close()
    stats = {
        "requests": count,
        "non_200": failures,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": round(float(np.mean(latencies)), 2),
    }
    return stats, reference


def throughput_phase(server: Server, valid: list[Request], reference: dict, seconds: float,
                     concurrency: int = 8) -> dict:
    before = server.get_json("/v1/stats")
    outcomes, elapsed = run_clients(
        server.port, lambda rng: rng.choice(valid), concurrency, seconds, int(seconds * 400), reference
    )
    after = server.get_json("/v1/stats")
    ok = [o for o in outcomes if o.status == 200 and o.correct]
    latencies = [o.ms for o in outcomes]
    calls = after["batches"] - before["batches"]
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests": len(outcomes),
        "not_correct": len(outcomes) - len(ok),
        "images_per_s": round(len(ok) / elapsed, 1),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "answers_503": sum(1 for o in outcomes if o.status == 503),
        "answers_5xx_other": sum(1 for o in outcomes if o.status is not None and o.status >= 500 and o.status != 503),
        "no_answer": sum(1 for o in outcomes if o.status is None),
        "encoder_calls": calls,
        "mean_batch": round((after["images"] - before["images"]) / max(calls, 1), 2),
    }


class Scraper:
    """GET /metrics every ``every_s`` seconds in a thread, timing each scrape."""

    def __init__(self, server: Server, every_s: float = 1.0):
        self.server, self.every_s, self.ms, self.failures = server, every_s, [], 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def loop(self) -> None:
        while not self.done.wait(self.every_s):
            started = time.perf_counter()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
                connection.request("GET", "/metrics")
                response = connection.getresponse()
                response.read()
                self.failures += response.status != 200
                connection.close()
            except (OSError, http.client.HTTPException):
                self.failures += 1
            self.ms.append((time.perf_counter() - started) * 1000)

    def summary(self) -> dict:
        return {"scrapes": len(self.ms), "failures": self.failures, "p50_ms": percentile(self.ms, 50),
                "max_ms": round(max(self.ms), 2) if self.ms else float("nan")}


class EncoderProbe:
    """The model's encoder alone, in this process, on decoded pixels (the variant the server runs, from
    /v1/model): its batch-16 rate and batch-1 time (median, each encode after a decode as in the service).

    Measured right before c=1 and right after c=8 while the server idles, so that the ratios of those phases
    to the encoder are taken within one stretch of time: on a shared host the machine's speed can change by
    half within minutes, and a probe minutes away from the phase it divides would measure another machine.
    """

    def __init__(self, model: Path, served: dict, images: list[bytes]):
        tagger = Tagger.load(model)
        self.encoder = tagger.load_encoder(served["runtime"], served["precision"], batches=(1, BATCH_SIZE))
        self.encoder.warm()
        self.images = images
        self.pixels = np.stack([self.encoder.pixels(image) for image in images])

    def measure(self, seconds: float = 4.0, singles: int = 100) -> dict:
        pixels, encoder = self.pixels, self.encoder
        batches = [pixels[i : i + BATCH_SIZE] for i in range(0, len(pixels) - BATCH_SIZE + 1, BATCH_SIZE)]
        done, runs, started = 0, 0, time.perf_counter()
        while time.perf_counter() - started < seconds or runs < 3:
            done += len(encoder.encode(batches[runs % len(batches)]))
            runs += 1
        rate = done / (time.perf_counter() - started)
        one, decode, rested = [], [], []
        for k in range(max(singles, len(pixels))):
            tick = time.perf_counter()
            encoder.encode(pixels[k % len(pixels)][None])
            one.append((time.perf_counter() - tick) * 1000)
            tick = time.perf_counter()
            encoder.pixels(self.images[k % len(self.images)])  # what the service does to an upload before encoding it
            decode.append((time.perf_counter() - tick) * 1000)
        for k in range(singles // 2):  # as a lone request finds it: the machine idle a few ms, then one decode
            time.sleep(IDLE_GAP_S)
            encoder.pixels(self.images[k % len(self.images)])
            tick = time.perf_counter()
            encoder.encode(pixels[k % len(pixels)][None])
            rested.append((time.perf_counter() - tick) * 1000)
        return {"images_per_s": round(rate, 1), "batch1_ms": round(float(np.median(one)), 3),
                "batch1_p99_ms": percentile(one, 99), "decode_ms": round(float(np.median(decode)), 3),
                "batch1_after_idle_ms": round(float(np.median(rested)), 3)}

    def summary(self, before: dict, after: dict) -> dict:
        """The two probes, their mean (what the phases between them are divided by) and how far apart they are."""
        mean = {key: round((before[key] + after[key]) / 2, 3) for key in before}
        return {"variant": self.encoder.variant.name, "batch": BATCH_SIZE, **mean, "before": before, "after": after,
                "host_speed_drift": round(speed_drift(before, after), 3), "idle_gap_ms": IDLE_GAP_S * 1000}


def speed_drift(before: dict, after: dict) -> float:
    """How far two probes' batch-16 rates are apart, over the slower (TARGETS["host_speed_drift"] bounds it)."""
    rates = before["images_per_s"], after["images_per_s"]
    return abs(rates[0] - rates[1]) / min(rates)


def soak_phase(server: Server, mix: list[tuple[Request, int]], reference: dict, seconds: float) -> dict:
    requests, weights = zip(*mix)
    rss_before = server.rss_mb()
    samples, done = [], threading.Event()

    def sample_rss() -> None:  # the curve shows a plateau (buffers sized once) from a leak (steady climb)
        while not done.wait(5.0):
            samples.append(round(server.rss_mb(), 1))

    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    outcomes, elapsed = run_clients(
        server.port, lambda rng: rng.choices(requests, weights)[0], 8, seconds, int(seconds * 400), reference
    )
    done.set()
    sampler.join()
    time.sleep(2)  # let in-flight buffers be freed before reading RSS
    rss_after = server.rss_mb()
    by_kind: dict[str, dict] = {}
    for outcome in outcomes:
        entry = by_kind.setdefault(outcome.kind, {"requests": 0, "wrong": 0, "statuses": {}})
        entry["requests"] += 1
        entry["wrong"] += not outcome.correct
        key = str(outcome.status)
        entry["statuses"][key] = entry["statuses"].get(key, 0) + 1
    valid_kinds = {"valid", "multi_with_corrupt"}
    return {
        "seconds": round(elapsed, 2),
        "requests": len(outcomes),
        "soak_5xx": sum(1 for o in outcomes if o.status is not None and o.status >= 500),
        "soak_no_answer": sum(1 for o in outcomes if o.status is None),
        "soak_lost": sum(1 for o in outcomes if o.kind in valid_kinds and not o.correct),
        "soak_wrong_status_invalid": sum(1 for o in outcomes if o.kind not in valid_kinds and not o.correct),
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        "soak_rss_growth_mb": round(rss_after - rss_before, 1),
        "rss_every_5s_mb": samples,
        "by_kind": by_kind,
    }


def attack_phase(server: Server, valid: list[Request], reference: dict, seconds: float) -> dict:
    """Ordinary photos from 2 clients while 4 clients send decode-heavy and oversize files."""
    attacks = attack_requests()
    normal: list[Outcome] = []
    attack: list[Outcome] = []
    done = threading.Event()

    def attacker(seed: int) -> None:
        rng, client = random.Random(seed), Client(server.port)
        while not done.is_set():
            attack.append(client.send(rng.choice(attacks)))
        client.close()

    threads = [threading.Thread(target=attacker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2)  # the attack is under way before the ordinary traffic is timed
    outcomes, elapsed = run_clients(server.port, lambda rng: rng.choice(valid), 2, seconds, int(seconds * 200),
                                    reference)
    normal.extend(outcomes)
    done.set()
    for thread in threads:
        thread.join()
    statuses: dict[str, dict[str, int]] = {}
    for outcome in attack:
        kind = statuses.setdefault(outcome.kind, {})
        kind[str(outcome.status)] = kind.get(str(outcome.status), 0) + 1
    latencies = [o.ms for o in normal]
    return {
        "seconds": round(elapsed, 2),
        "normal_requests": len(normal),
        "normal_not_correct": sum(1 for o in normal if not o.correct),
        "attack_normal_p50_ms": percentile(latencies, 50),
        "attack_normal_p99_ms": percentile(latencies, 99),
        "attack_requests": len(attack),
        "attack_5xx_other_than_503": sum(1 for o in attack if o.status is not None and o.status >= 500
                                         and o.status != 503),
        "attack_statuses": statuses,
    }


def tuning_of(server: Server) -> dict:
    """The batching limits the server measured at start-up: the labels of its model info metric."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/metrics")
    for family in text_string_to_metric_families(connection.getresponse().read().decode()):
        if family.name == "vinted_tagger_model_info":
            return dict(family.samples[0].labels)
    return {}


def main() -> int:
    args = parse_args()
    if not args.model.is_dir() or not any(args.model.iterdir()):
        print(f"service_bench: no trained model in {args.model}; train one with `classify train`", file=sys.stderr)
        return 1
    if not args.images.exists():
        print(f"service_bench: {args.images} not found (needs ../shared/data)", file=sys.stderr)
        return 1
    images = sample_images(args.images, SAMPLE_IMAGES)
    phases = server_phases(args, images)
    result = summary(phases, phases["encoder"])
    write_results(args.out, result)
    print_table(result)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--c1-requests", type=int, default=300)
    parser.add_argument("--c8-seconds", type=float, default=20.0)
    parser.add_argument("--c32-seconds", type=float, default=15.0)
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--attack-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service.json")
    return parser.parse_args()


def server_phases(args: argparse.Namespace, images: list[bytes]) -> dict:
    """Every phase against one server, with the CPU each took and the load average after it."""
    valid = [single(i, image) for i, image in enumerate(images)]
    out = {"load": {"before": os.getloadavg()}, "cpu": {}}
    with tempfile.TemporaryDirectory() as temp:
        server = Server(args.model, Path(temp))
        try:
            started = time.perf_counter()
            server.wait_ready()
            out["startup_s"] = round(time.perf_counter() - started, 2)
            out["model"] = server.get_json("/v1/model")
            probe = EncoderProbe(args.model, out["model"]["encoder"], images)
            phases = {
                "encoder_before": probe.measure,
                "c1": lambda: latency_phase(server, valid, args.c1_requests),
                "c8": lambda: scraped(server, lambda: throughput_phase(server, valid, reference, args.c8_seconds)),
                "encoder_after": probe.measure,
                "c32": lambda: throughput_phase(server, valid, reference, args.c32_seconds, concurrency=32),
                "soak": lambda: soak_phase(server, soak_requests(images), reference, args.soak_seconds),
                "attack": lambda: attack_phase(server, valid, reference, args.attack_seconds),
            }
            for name, phase in phases.items():
                meter = CpuMeter(server)
                out[name] = phase()
                out["cpu"][name] = meter.cores()
                out["load"][f"after_{name}"] = os.getloadavg()
                if name == "c1":
                    out["c1"], reference = out["c1"]
            out["encoder"] = probe.summary(out.pop("encoder_before"), out.pop("encoder_after"))
            out["tuning"] = tuning_of(server)
            out["alive"] = server.get_json("/healthz")["status"] == "ok"
        finally:
            server.stop()
    c8 = out["c8"]
    c8["server_cpu_ms_per_image"] = round(1000 * out["cpu"]["c8"]["server_cores"] / max(c8["images_per_s"], 1e-9), 2)
    return out


def scraped(server: Server, phase) -> dict:
    """``phase()``'s result, run while a scraper reads /metrics every second, with the scrapes' summary."""
    with Scraper(server) as scraper:
        result = phase()
    return {**result, "metrics_scrapes": scraper.summary()}


def summary(phases: dict, encoder: dict) -> dict:
    c1, c8, c32, soak, attack = (phases[name] for name in ("c1", "c8", "c32", "soak", "attack"))
    return {
        "p50_ms": c1["p50_ms"],
        "p99_ms": c1["p99_ms"],
        "c8_images_per_s": c8["images_per_s"],
        "c8_p99_ms": c8["p99_ms"],
        "encoder_batch_images_per_s": encoder["images_per_s"],
        "encoder_batch1_ms": encoder["batch1_ms"],
        "c8_over_encoder": round(c8["images_per_s"] / encoder["images_per_s"], 3),
        "p50_over_encoder_batch1_ms": round(c1["p50_ms"] - encoder["batch1_ms"], 2),
        "decode_ms": encoder["decode_ms"],  # median decode + resize of the sample uploads: part of that overhead
        "encoder_batch1_after_idle_ms": encoder["batch1_after_idle_ms"],
        "p50_over_encoder_batch1_after_idle_ms": round(c1["p50_ms"] - encoder["batch1_after_idle_ms"], 2),
        "p50_overhead_share": round((c1["p50_ms"] - encoder["batch1_ms"]) / encoder["batch1_ms"], 3),
        "c8_p99_encoder_images": round(c8["p99_ms"] * encoder["images_per_s"] / 1000, 1),
        "host_speed_drift": encoder["host_speed_drift"],
        "targets": TARGETS,
        "c32_images_per_s": c32["images_per_s"],
        "c32_p99_ms": c32["p99_ms"],
        "c32_503": c32["answers_503"],
        "c32_5xx_other": c32["answers_5xx_other"],
        "soak_5xx": soak["soak_5xx"],
        "soak_lost": soak["soak_lost"],
        "soak_rss_growth_mb": soak["soak_rss_growth_mb"],
        "attack_normal_p99_ms": attack["attack_normal_p99_ms"],
        "alive_after_soak": phases["alive"],
        "startup_s": phases["startup_s"],
        "c1": c1,
        "c8": c8,
        "c32": c32,
        "encoder_alone": encoder,
        "soak": soak,
        "attack": attack,
        "model_id": phases["model"]["model_id"],
        "encoder": phases["model"]["encoder"]["name"],
        "sample_images": SAMPLE_IMAGES,
        "cpu_cores_used": phases["cpu"],
        "load_avg": {phase: [round(v, 2) for v in values] for phase, values in phases["load"].items()},
        "machine": machine(),
        "client": "http.client keep-alive, one connection per client thread, in the bench process",
        "server_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("VINTED_TAGGER_")},
        "batching": {"c8_encoder_calls": c8["encoder_calls"], "c8_mean_batch": c8["mean_batch"],
                     "c32_mean_batch": c32["mean_batch"], "tuning": phases["tuning"]},
    }


def print_table(result: dict) -> None:
    c1, c8, soak, load = result["c1"], result["c8"], result["soak"], result["load_avg"]
    others = {phase: cores["others_cores"] for phase, cores in result["cpu_cores_used"].items()}
    rows = [
        ("c=1 p50 / p99 latency (ms)", f"{c1['p50_ms']} / {c1['p99_ms']}", "<= 20 / <= 50"),
        ("encoder alone: batch-1 ms", result["encoder_batch1_ms"], ""),
        ("c=1 p50 over encoder batch-1 (ms)", result["p50_over_encoder_batch1_ms"], f"<= {TARGETS['p50_over_encoder_batch1_ms']:g}"),
        ("  the same, over encoder batch-1", result["p50_overhead_share"], f"<= {TARGETS['p50_overhead_share']}"),
        ("  p50 over batch-1 after idle (ms)", result["p50_over_encoder_batch1_after_idle_ms"], ""),
        ("encoder alone: batch-16 images/s", result["encoder_batch_images_per_s"], ""),
        ("c=8 images/s", c8["images_per_s"], ""),
        ("c=8 over encoder batch rate", result["c8_over_encoder"], f">= {TARGETS['c8_over_encoder']:g}"),
        ("c=8 p50 / p99 latency (ms)", f"{c8['p50_ms']} / {c8['p99_ms']}", f"p99 <= {TARGETS['c8_p99_ms']:g}"),
        ("  p99 in encoder images (x rate)", result["c8_p99_encoder_images"], f"<= {TARGETS['c8_p99_encoder_images']}"),
        ("encoder rate before c1 / after c8", "{} / {}".format(result["encoder_alone"]["before"]["images_per_s"],
                                                           result["encoder_alone"]["after"]["images_per_s"]),
         f"drift <= {TARGETS['host_speed_drift']}"),
        ("c=8 mean batch", c8["mean_batch"], ""),
        ("c=32 images/s / p99 (ms)", f"{result['c32_images_per_s']} / {result['c32_p99_ms']}", ""),
        ("c=32 503 / other 5xx", f"{result['c32_503']} / {result['c32_5xx_other']}", "- / 0"),
        (f"soak requests ({soak['seconds']:.0f} s, mixed)", soak["requests"], ""),
        ("soak 5xx", soak["soak_5xx"], "0"),
        ("soak lost valid requests", soak["soak_lost"], "0"),
        ("soak RSS growth (MB)", soak["soak_rss_growth_mb"], f"< {TARGETS['soak_rss_growth_mb']:g}"),
        ("attack: ordinary p99 (ms)", result["attack_normal_p99_ms"], f"<= {TARGETS['attack_normal_p99_ms']:g}"),
        ("other work, cores (c1/c8/soak/attack)", "/".join(str(others[p]) for p in ("c1", "c8", "soak", "attack")),
         "0 = quiet box"),
        ("load avg (1 min) before / after", f"{load['before'][0]} / {load['after_soak'][0]}", ""),
    ]
    print(f"| {'measure':<32} | {'value':>15} | {'target':>14} |")
    print(f"|{'-' * 34}|{'-' * 17}|{'-' * 16}|")
    for name, value, target in rows:
        print(f"| {name:<32} | {value!s:>15} | {target:>14} |")


if __name__ == "__main__":
    sys.exit(main())
