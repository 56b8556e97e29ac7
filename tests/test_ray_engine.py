"""``embed --engine ray`` (embed/engines/ray.py): same cache as the local engine, bad images reported, resume
after a killed driver or worker, and a two-node cluster in a network namespace of its own where
both nodes encode.

One local cluster serves the session (``ray_cluster`` in conftest.py, loopback only); the two-node test
starts its own with ``ray start`` and tears it down by killing the process groups it started (never ``ray stop``, which
would stop every Ray on the machine)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'vinted-tagger[ray]')")

from embed.cache import part_files, part_info, read_cache  # noqa: E402
from embed.pipeline import EncoderChoice, embed_sources  # noqa: E402
from embed.summary import FAILURES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LITE2 = "efficientnet-lite2"
N_GOOD = 12
BROKEN = ["text", "truncated-jpeg", "zero-bytes"]
FAILING = ["truncated-jpeg", "zero-bytes"]  # a text file is no photo: ignored (_ignored.csv), not failed


@pytest.fixture(scope="module")
def source(tmp_path_factory, picture, image_bytes, broken_image) -> Path:
    """A zip of N_GOOD photos and three broken files, like the assignment's archive."""
    path = tmp_path_factory.mktemp("ray-source") / "data.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(N_GOOD):
            archive.writestr(f"data/g{i:02d}.jpg", image_bytes(picture(40 + i, size=(80 + 4 * i, 64))))
        for kind in BROKEN:
            archive.writestr(f"data/bad_{kind}.jpg", broken_image(kind)[0])
    return path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, source, lite2_encoder) -> Path:
    out = tmp_path_factory.mktemp("local") / "cache"
    summary = embed_sources([source], out, EncoderChoice(LITE2, threads=2, batch_size=4), progress=False)
    assert (summary.encoded, summary.failed, summary.ignored) == (N_GOOD, len(FAILING), 1)
    return out


def by_uuid(out: Path) -> dict[str, np.ndarray]:
    cache = read_cache(out)
    frame = pd.read_parquet(out)
    assert frame["uuid"].is_unique and len(frame) == len(cache.uuids), "a uuid is cached twice"
    return dict(zip(cache.uuids, cache.vectors))


def failures(out: Path) -> dict[str, str]:
    with open(out / FAILURES, newline="") as handle:
        return {row["uuid"]: row["reason"] for row in csv.DictReader(handle)}


def assert_same(out: Path, reference: Path) -> None:
    got, expected = by_uuid(out), by_uuid(reference)
    assert sorted(got) == sorted(expected)
    worst = max(float(np.abs(got[u] - expected[u]).max()) for u in expected)
    assert worst <= 1e-5, worst


def test_ray_engine_writes_what_the_local_engine_writes(tmp_path, source, local_run, ray_cluster) -> None:
    out = tmp_path / "cache"
    summary = embed_sources([source], out, EncoderChoice(LITE2, batch_size=4), engine="ray", progress=False)
    assert (summary.encoded, summary.failed, summary.skipped) == (N_GOOD, len(FAILING), 0)
    assert_same(out, local_run)
    # Bad images are failure rows with the same reasons as the local engine gives, not lost blocks.
    assert failures(out) == failures(local_run) and set(failures(out)) == {f"bad_{k}" for k in FAILING}
    made_by = {label for p in part_files(out) for label in part_info(p)["made_by"]}
    node_id = ray_cluster.get_runtime_context().get_node_id()
    assert made_by == {f"{socket.gethostname()}/{node_id[:12]}"}
    again = embed_sources([source], out, LITE2, engine="ray", progress=False)
    assert (again.encoded, again.skipped) == (0, N_GOOD + len(BROKEN) - len(BROKEN))


KILLED_DRIVER = """
import functools, os, signal, sys
from embed import pipeline
from embed.engines import EngineChoice, ray as ray_engine
from embed.cache import CacheWriter

source, out, address, mode, marker = sys.argv[1:6]
pipeline.CacheWriter = functools.partial(CacheWriter, flush_rows=2)
real_consume, consumed = ray_engine.consume, []


def consume(*args, **kwargs):
    real_consume(*args, **kwargs)
    consumed.append(1)
    if mode == "driver" and len(consumed) == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # no finally, no flush: whatever was pending is lost


class KilledOnce(ray_engine.EncodeBatches):
    def __call__(self, batch):
        if mode == "worker" and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # the actor dies in the middle of a batch
        return super().__call__(batch)


ray_engine.consume, ray_engine.EncodeBatches = consume, KilledOnce
pipeline.embed_sources([source], out, pipeline.EncoderChoice("efficientnet-lite2", threads=1, batch_size=2),
                       engine=EngineChoice("ray", address, workers=1), progress=False)
"""


def run_driver(tmp_path: Path, source: Path, out: Path, mode: str, ray_cluster) -> subprocess.CompletedProcess:
    script = tmp_path / "driver.py"
    script.write_text(KILLED_DRIVER)
    address = ray_cluster.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(script), str(source), str(out), address, mode,
                           str(tmp_path / "killed-once")], env=env, capture_output=True, timeout=150)


def test_driver_killed_then_rerun(tmp_path, source, local_run, ray_cluster) -> None:
    out = tmp_path / "cache"
    done = run_driver(tmp_path, source, out, "driver", ray_cluster)
    assert done.returncode == -9, done.stderr.decode()[-3000:]
    partial = by_uuid(out)
    assert 0 < len(partial) < N_GOOD
    summary = embed_sources([source], out, EncoderChoice(LITE2, batch_size=4), engine="ray", progress=False)
    assert summary.skipped == len(partial) and summary.encoded == N_GOOD - len(partial)
    assert_same(out, local_run)
    assert json.loads((out / "_manifest.json").read_text())["rows"] == N_GOOD


def test_worker_killed_mid_batch(tmp_path, source, local_run, ray_cluster) -> None:
    out = tmp_path / "cache"
    done = run_driver(tmp_path, source, out, "worker", ray_cluster)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert (tmp_path / "killed-once").exists()  # the actor did die once; Ray restarted it and retried
    assert_same(out, local_run)
    assert set(failures(out)) == {f"bad_{k}" for k in FAILING}


# --- two nodes on one machine -------------------------------------------------------------------------------
# Both nodes and the driver run inside one network namespace the test makes, holding only its own loopback:
# there Ray's "address other nodes can reach" is 127.0.0.1, so nothing the cluster sends can leave it.

HEAD_PORT = 6379  # the namespace is new and empty: every port is free
NODE_PORTS = {"head": 20001, "node": 20011}  # first of five ports per node, clear of Ray's worker ports


@pytest.fixture
def netns() -> list[str]:
    """The prefix that runs a command inside a fresh network namespace (only ``lo``, up); deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the two-node test makes a network namespace for its cluster, which needs root")
    if shutil.which("ip") is None:
        pytest.skip("the two-node test makes a network namespace with `ip netns` (Debian package iproute2)")
    name = f"vt-ray-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        prefix = ["ip", "netns", "exec", name]
        subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        yield prefix
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def ray_start(netns: list[str], role: str, args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """``ray start --block`` in the namespace and in its own process group, so that killing the group tears
    the node down (``ip netns exec`` execs the command: the group is Ray's)."""
    first = NODE_PORTS[role]
    ports = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port"]
    command = [*netns, str(Path(sys.executable).with_name("ray")), "start", "--block", "--num-cpus=1",
               "--disable-usage-stats", "--node-ip-address=127.0.0.1",
               *(f"{flag}={first + i}" for i, flag in enumerate(ports)), *args]
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for_nodes(netns: list[str], address: str, env: dict, count: int, deadline: float, nodes: list) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], configure_logging=False, log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n['Alive']))")
    while time.monotonic() < deadline:
        assert all(node.poll() is None for node in nodes), "a `ray start` exited; see head.log / node.log"
        done = subprocess.run([*netns, sys.executable, "-c", probe, address], env=env, capture_output=True,
                              timeout=60)
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count).encode()]:
            return
        time.sleep(2)
    raise AssertionError(f"the two-node cluster did not come up at {address}")


def test_two_node_cluster_both_nodes_encode(tmp_path, source, local_run, tagger_home, netns) -> None:
    address = f"127.0.0.1:{HEAD_PORT}"
    # A private test cluster: no token authentication (Ray 2.60's head would otherwise write a token to ~/.ray).
    env = {**os.environ, "PYTHONPATH": str(REPO), "VINTED_TAGGER_HOME": str(tagger_home), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    nodes = []
    try:
        nodes.append(ray_start(netns, "head", ["--head", f"--port={HEAD_PORT}", "--include-dashboard=false",
                                               f"--temp-dir={temp}", '--resources={"node_a": 1}'],
                               env, tmp_path / "head.log"))
        nodes.append(ray_start(netns, "node", [f"--address={address}", f"--temp-dir={temp}",
                                               '--resources={"node_b": 1}'], env, tmp_path / "node.log"))
        wait_for_nodes(netns, address, env, 2, time.monotonic() + 90, nodes)
        out = tmp_path / "cache"
        done = subprocess.run([*netns, str(Path(sys.executable).with_name("embed")), str(source), "--out", str(out),
                               "--encoder", LITE2, "--engine", "ray", "--address", address, "--workers", "2",
                               "--batch-size", "2", "--quiet"], env=env, capture_output=True, timeout=150)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
    finally:  # tear down the worker node then the head: their whole process groups, even on failure
        for node in reversed(nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGTERM)
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)  # gcs_server and raylet may outlive `ray start`
        shutil.rmtree(temp, ignore_errors=True)
    assert_same(out, local_run)
    made_by = [part_info(p)["made_by"] for p in part_files(out)]
    labels = {label.rsplit("/", 1)[-1] for labels in made_by for label in labels}
    assert labels == {"node_a", "node_b"}, made_by  # both nodes encoded, and each part says which
    assert all(len(labels) == 1 for labels in made_by)  # a part holds the rows of one node
