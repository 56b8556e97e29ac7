"""The service against the commit issue 24 measured, side by side on this host, in one run.

    python bench/service_baseline.py [--baseline COMMIT] [--rounds 4]

Issue 24's millisecond targets were set on one machine, from this service as it was at ``BASELINE_COMMIT``
(main when the issue was filed): one image p50 7.31 ms against an encoder batch-1 time of 4.59 ms, concurrency 8
at 170 images/s with p99 57 ms. This host's speed is another and moves within minutes (bench/service_bench.py
divides by the encoder measured around its phases for that reason), so a millisecond figure from here says
little about that machine. What does carry over is how much faster or slower this tree is than the baseline on
the same host at the same time.

The baseline is checked out in a temporary git worktree and served with its own committed model (same encoder
network and input size as today's), next to a server of this tree. Round after round, each server in turn (the
order alternating, so a host slowing down during a round favours neither) gets bench/service_bench.py's c=1
phase (``--c1-requests`` single images) and c=8 phase (``--c8-seconds``). Each round gives this tree's figure
over the baseline's; the median ratio times the baseline's figure on the issue's machine is this tree's figure
there, judged against the issue's targets. Writes bench/results/service_baseline.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from report import machine, write_results  # bench/, this script's folder
from service_bench import (
    DEFAULT_IMAGES,
    ISSUE_ENCODER_BATCH1_MS,
    ISSUE_ENCODER_IMAGES_PER_S,
    ROOT,
    SAMPLE_IMAGES,
    TARGETS,
    Server,
    latency_phase,
    sample_images,
    single,
    throughput_phase,
)

# main when issue 24 was filed; the service it measured (micro-batching on the latency request, no /metrics).
BASELINE_COMMIT = "a42a526fbffcb5c7e01eaa101535c643dff55f6b"
# What issue 24 measured of that commit on its machine (the encoder figures are service_bench's).
ISSUE_BASELINE = {"p50_ms": 7.31, "c8_images_per_s": 170.0, "c8_p99_ms": 57.0}
FIGURES = ("p50_ms", "c8_images_per_s", "c8_p99_ms")


def run_round(servers: dict[str, Server], order: list[str], valid: list, references: dict, args) -> dict:
    """One c=1 and one c=8 phase per server, in ``order``: {name: {p50_ms, c8_images_per_s, c8_p99_ms, ...}}."""
    out = {}
    for name in order:
        c1, _ = latency_phase(servers[name], valid, args.c1_requests)
        c8 = throughput_phase(servers[name], valid, references[name], args.c8_seconds)
        out[name] = {"p50_ms": c1["p50_ms"], "c1_non_200": c1["non_200"], "c8_images_per_s": c8["images_per_s"],
                     "c8_p50_ms": c8["p50_ms"], "c8_p99_ms": c8["p99_ms"], "c8_not_correct": c8["not_correct"],
                     "c8_mean_batch": c8["mean_batch"]}
    return out


def compare(rounds: list[dict]) -> dict:
    """Per-round ratios (this tree over the baseline), their medians, and this tree projected onto the issue's
    machine (the baseline's figures there times the median ratio), with each target met or not."""
    ratios = {key: [r["current"][key] / r["baseline"][key] for r in rounds] for key in FIGURES}
    median = {key: round(statistics.median(values), 3) for key, values in ratios.items()}
    there = {key: round(ISSUE_BASELINE[key] * median[key], 2) for key in FIGURES}
    projected = {
        **there,
        "p50_over_encoder_batch1_ms": round(there["p50_ms"] - ISSUE_ENCODER_BATCH1_MS, 2),
        "c8_over_encoder": round(there["c8_images_per_s"] / ISSUE_ENCODER_IMAGES_PER_S, 3),
    }
    met = {
        "p50_over_encoder_batch1_ms": projected["p50_over_encoder_batch1_ms"] <= TARGETS["p50_over_encoder_batch1_ms"],
        "c8_over_encoder": projected["c8_over_encoder"] >= TARGETS["c8_over_encoder"],
        "c8_p99_ms": projected["c8_p99_ms"] <= TARGETS["c8_p99_ms"],
    }
    return {"ratios": {key: [round(v, 3) for v in values] for key, values in ratios.items()},
            "median_ratio": median, "projected_on_issue_machine": projected, "met": met}


@contextlib.contextmanager
def worktree(commit: str):
    """The baseline checked out (detached) in a temporary git worktree, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="baseline-") as temp:
        path = Path(temp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True,
                       capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)


def resolve(commit: str) -> str | None:
    """The full hash of ``commit`` in this checkout, or None when it has no such commit."""
    found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                           capture_output=True, text=True)
    return found.stdout.strip() or None


def main() -> int:
    args = parse_args()
    commit = resolve(args.baseline)
    if commit is None:
        print(f"service_baseline: no commit {args.baseline!r} in this checkout (a shallow clone? fetch its history)",
              file=sys.stderr)
        return 2
    if not args.images.exists():
        print(f"service_baseline: {args.images} not found (needs ../shared/data)", file=sys.stderr)
        return 1
    valid = [single(i, image) for i, image in enumerate(sample_images(args.images, SAMPLE_IMAGES))]
    with worktree(commit) as tree, tempfile.TemporaryDirectory() as logs:
        trees = {"current": ROOT, "baseline": tree}
        servers = {}
        try:
            for name, path in trees.items():
                (Path(logs) / name).mkdir()
                servers[name] = Server(path / "artifacts" / "model", Path(logs) / name, tree=path)
            for server in servers.values():
                server.wait_ready()
            # Each model's own answers are the reference its c=8 answers are checked against.
            references = {name: latency_phase(server, valid, len(valid))[1] for name, server in servers.items()}
            rounds = []
            for k in range(args.rounds):
                order = ["current", "baseline"] if k % 2 == 0 else ["baseline", "current"]
                rounds.append(run_round(servers, order, valid, references, args))
                print(f"round {k + 1}/{args.rounds}: " + "; ".join(
                    f"{name} {r['p50_ms']} ms, {r['c8_images_per_s']} images/s, p99 {r['c8_p99_ms']} ms"
                    for name, r in rounds[-1].items()), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    result = {
        "baseline_commit": commit,
        "issue_baseline": {**ISSUE_BASELINE, "encoder_batch1_ms": ISSUE_ENCODER_BATCH1_MS,
                           "encoder_batch_images_per_s": ISSUE_ENCODER_IMAGES_PER_S},
        **compare(rounds),
        "targets": {key: TARGETS[key] for key in ("p50_over_encoder_batch1_ms", "c8_over_encoder", "c8_p99_ms")},
        "rounds": rounds,
        "c1_requests": args.c1_requests,
        "c8_seconds": args.c8_seconds,
        "machine": machine(),
        "server_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("VINTED_TAGGER_")},
    }
    write_results(args.out, result)
    print_table(result)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="the commit to compare with (default: issue 24's)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--c1-requests", type=int, default=200)
    parser.add_argument("--c8-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service_baseline.json")
    return parser.parse_args()


def print_table(result: dict) -> None:
    ratio, there, met, targets = (result[k] for k in ("median_ratio", "projected_on_issue_machine", "met", "targets"))
    rows = [
        ("c=1 p50: this tree / baseline", ratio["p50_ms"], ""),
        ("c=8 images/s: this tree / baseline", ratio["c8_images_per_s"], ""),
        ("c=8 p99: this tree / baseline", ratio["c8_p99_ms"], ""),
        ("there: c=1 p50 over batch-1 (ms)", there["p50_over_encoder_batch1_ms"],
         f"<= {targets['p50_over_encoder_batch1_ms']:g} {'met' if met['p50_over_encoder_batch1_ms'] else 'NOT met'}"),
        ("there: c=8 over encoder", there["c8_over_encoder"],
         f">= {targets['c8_over_encoder']:g} {'met' if met['c8_over_encoder'] else 'NOT met'}"),
        ("there: c=8 p99 (ms)", there["c8_p99_ms"],
         f"<= {targets['c8_p99_ms']:g} {'met' if met['c8_p99_ms'] else 'NOT met'}"),
    ]
    for name, value, target in rows:
        print(f"| {name:<36} | {value!s:>8} | {target:>14} |")


if __name__ == "__main__":
    sys.exit(main())
