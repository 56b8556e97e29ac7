"""The service against the commit issue 24 measured, side by side on this host, in one run.

    python bench/service_baseline.py [--baseline COMMIT] [--rounds 6]

Issue 24's millisecond targets were set on one machine, from this service as it was at ``BASELINE_COMMIT``
(main when the issue was filed): one image p50 7.31 ms against an encoder batch-1 time of 4.59 ms, concurrency 8
at 170 images/s with p99 57 ms. This host's speed is another and moves within minutes (bench/service_bench.py
divides by the encoder measured around its phases for that reason), so a millisecond figure from here says
little about that machine. What this run measures is how much faster or slower this tree is than the baseline
on the same host at the same time; assuming that ratio carries over to the issue's machine, it projects this
tree's figures there.

The baseline is checked out in a temporary git worktree and served with its own committed model, which must have
the same input and embedding size, runtime and precision as this tree's; both servers start one after the
other (each measures its batching limits at start-up on an idle machine) with the service settings at their
defaults. Round after round, each server in turn gets bench/service_bench.py's c=1 phase (``--c1-requests``
single images) and c=8 phase (``--c8-seconds``), the order alternating: two rounds in a row make a pair whose
geometric-mean ratio cancels a host that drifts steadily. The median pair ratio times the baseline's figure on
the issue's machine is the projection, judged against the issue's targets. A run with any wrong or missing
answer is void. Writes bench/results/service_baseline.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import math
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
    EncoderProbe,
    Server,
    latency_phase,
    sample_images,
    single,
    speed_drift,
    throughput_phase,
    tuning_of,
)

# main when issue 24 was filed; the service it measured (micro-batching on the latency request, no /metrics).
BASELINE_COMMIT = "a42a526fbffcb5c7e01eaa101535c643dff55f6b"
# What issue 24 measured of that commit on its machine (the encoder figures are service_bench's).
ISSUE_BASELINE = {"p50_ms": 7.31, "c8_images_per_s": 170.0, "c8_p99_ms": 57.0}
OVERHEAD = "p50_over_encoder_batch1_ms"  # p50 minus the encoder's batch-1 time (both trees run the same encoder)
# What both servers must serve alike for their ratio to be about the service, not the encoder.
SAME_ENCODER = ("input_size", "dim", "runtime", "precision")
# The service settings stay at each tree's defaults (where exported encoders live is not a service setting).
KEPT_SETTINGS = ("VINTED_TAGGER_HOME",)


class Void(Exception):
    """The run cannot be compared: one line saying why."""


def run_round(servers: dict[str, Server], order: list[str], valid: list, references: dict, args) -> dict:
    """One c=1 and one c=8 phase per server, in ``order``: {name: {p50_ms, c8_images_per_s, c8_p99_ms, ...}}."""
    out = {}
    for name in order:
        c1, _ = latency_phase(servers[name], valid, args.c1_requests)
        c8 = throughput_phase(servers[name], valid, references[name], args.c8_seconds)
        if c1["non_200"] or c8["not_correct"]:
            raise Void(f"{name}: {c1['non_200']} c=1 and {c8['not_correct']} c=8 answers wrong or missing")
        out[name] = {"p50_ms": c1["p50_ms"], "c8_images_per_s": c8["images_per_s"], "c8_p50_ms": c8["p50_ms"],
                     "c8_p99_ms": c8["p99_ms"], "c8_mean_batch": c8["mean_batch"]}
    return out


def compare(rounds: list[dict]) -> dict:
    """Pair ratios (this tree over the baseline; the geometric mean of two rounds in a row, which ran in opposite
    orders), their median, and this tree projected onto the issue's machine (the baseline's figures there times
    that median, and times the lowest and highest pair ratio), with each target met or not at the median. The
    one-image overhead (p50 minus the round's ``batch1_ms``, the encoder alone probed around its pair) is compared
    too, and projected from the baseline's overhead there."""
    if any(r[tree]["p50_ms"] <= r["batch1_ms"] for r in rounds for tree in ("current", "baseline")):
        raise Void("a p50 at or under the encoder's own batch-1 time: the host changed speed between the probes")

    def figure(r: dict, tree: str, key: str) -> float:
        return r[tree]["p50_ms"] - r["batch1_ms"] if key == OVERHEAD else r[tree][key]

    issue = {**ISSUE_BASELINE, OVERHEAD: ISSUE_BASELINE["p50_ms"] - ISSUE_ENCODER_BATCH1_MS}
    ratios = {key: [figure(r, "current", key) / figure(r, "baseline", key) for r in rounds] for key in issue}
    pairs = {key: [math.sqrt(a * b) for a, b in zip(values[::2], values[1::2])] for key, values in ratios.items()}
    median = {key: statistics.median(values) for key, values in pairs.items()}

    def judged(ratio: dict[str, float]) -> dict[str, float]:
        """The issue's figures times ``ratio``, in the targets' terms."""
        there = {key: value * ratio[key] for key, value in issue.items()}
        return {**there, "p50_scaled_over_encoder_batch1_ms": there["p50_ms"] - ISSUE_ENCODER_BATCH1_MS,
                "c8_over_encoder": there["c8_images_per_s"] / ISSUE_ENCODER_IMAGES_PER_S}

    there = judged(median)
    ends = [judged({key: bound(values) for key, values in pairs.items()}) for bound in (min, max)]
    bounds = {"p50_scaled_over_encoder_batch1_ms": OVERHEAD, OVERHEAD: OVERHEAD, "c8_over_encoder": "c8_over_encoder",
              "c8_p99_ms": "c8_p99_ms"}
    met = {key: there[key] >= TARGETS[target] if key == "c8_over_encoder" else there[key] <= TARGETS[target]
           for key, target in bounds.items()}
    return {"round_ratios": {key: [round(v, 3) for v in values] for key, values in ratios.items()},
            "pair_ratios": {key: [round(v, 3) for v in values] for key, values in pairs.items()},
            "median_ratio": {key: round(v, 3) for key, v in median.items()},
            "projected_on_issue_machine": {key: round(v, 3) for key, v in there.items()},
            "projected_range": {key: sorted(round(end[key], 3) for end in ends) for key in bounds},
            "met": met}


def check_steady(probes: list[dict]) -> None:
    """Void when the encoder's rate moved more than the service bench allows between two probes in a row."""
    for before, after in zip(probes, probes[1:]):
        if speed_drift(before, after) > TARGETS["host_speed_drift"]:
            raise Void(f"the encoder alone went from {before['images_per_s']} to {after['images_per_s']} images/s "
                       "between two probes")


def check_same_encoder(models: dict[str, dict]) -> None:
    """Void unless both servers' encoders have the same input and embedding size, runtime and precision."""
    served = {name: {key: model["encoder"].get(key) for key in SAME_ENCODER} for name, model in models.items()}
    if served["current"] != served["baseline"]:
        raise Void(f"the two trees serve different encoders: {served}")


@contextlib.contextmanager
def worktree(repository: Path, commit: str):
    """``commit`` checked out (detached) in a temporary git worktree of ``repository``, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="baseline-") as temp:
        path = Path(temp) / "tree"
        added = subprocess.run(["git", "-C", str(repository), "worktree", "add", "--detach", str(path), commit],
                               capture_output=True, text=True)
        if added.returncode:
            raise Void(f"git worktree add failed: {(added.stderr.strip().splitlines() or ['(no message)'])[-1]}")
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(repository), "worktree", "remove", "--force", str(path)],
                           capture_output=True)
            subprocess.run(["git", "-C", str(repository), "worktree", "prune"], capture_output=True)


def resolve(commit: str) -> str | None:
    """The full hash of ``commit`` in this checkout, or None when it has no such commit."""
    found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                           capture_output=True, text=True)
    return found.stdout.strip() or None


def this_tree(repository: Path = ROOT) -> dict:
    """The commit measured as "current", and whether its code had changes on top of it (results and docs aside)."""
    head = subprocess.run(["git", "-C", str(repository), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    # Results files and the documents rendered from them change as benches run; any other tracked change means
    # the tree measured is not that commit.
    changed = subprocess.run(["git", "-C", str(repository), "status", "--porcelain", "--untracked-files=no", "--", ".",
                              ":!bench/results", ":!*.md"], capture_output=True, text=True).stdout.strip()
    return {"commit": head, "uncommitted_changes": bool(changed)}


def default_settings_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("VINTED_TAGGER_") or k in KEPT_SETTINGS}


@contextlib.contextmanager
def serving(tree: Path, logs: Path):
    """{"current": this tree's server, "baseline": the baseline's}, started one after the other, each ready before
    the next starts (each measures its batching limits at start-up: alone on the machine); stopped afterwards."""
    servers: dict[str, Server] = {}
    try:
        for name, path in (("current", ROOT), ("baseline", tree)):
            (logs / name).mkdir()
            servers[name] = Server(path / "artifacts" / "model", logs / name, tree=path, env=default_settings_env())
            servers[name].wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def measure(servers: dict[str, Server], args, images: list[bytes]) -> dict:
    """The alternating rounds, the encoder alone probed around each pair of them."""
    valid = [single(i, image) for i, image in enumerate(images)]
    models = {name: server.get_json("/v1/model") for name, server in servers.items()}
    check_same_encoder(models)
    # Each model's own answers are the reference its c=8 answers are checked against.
    references = {name: latency_phase(server, valid, len(valid))[1] for name, server in servers.items()}
    # The encoder alone, before each pair and after the last: each round's batch-1 time is its pair's two probes.
    probe = EncoderProbe(ROOT / "artifacts" / "model", models["current"]["encoder"], images)
    probes, rounds = [], []
    for k in range(args.rounds):
        if k % 2 == 0:
            probes.append(probe.measure(seconds=1.0))
        order = ["current", "baseline"] if k % 2 == 0 else ["baseline", "current"]
        rounds.append(run_round(servers, order, valid, references, args))
        print(f"round {k + 1}/{args.rounds}: " + "; ".join(
            f"{name} {r['p50_ms']} ms, {r['c8_images_per_s']} images/s, p99 {r['c8_p99_ms']} ms"
            for name, r in rounds[-1].items()), flush=True)
    probes.append(probe.measure(seconds=1.0))
    check_steady(probes)
    for k, r in enumerate(rounds):
        r["batch1_ms"] = round(statistics.mean(p["batch1_ms"] for p in probes[k // 2 : k // 2 + 2]), 3)
    encoders = {name: {key: model["encoder"].get(key) for key in ("name", *SAME_ENCODER)}
                for name, model in models.items()}
    return {"rounds": rounds, "encoder_probes": probes, "encoders": encoders,
            "current_tuning": tuning_of(servers["current"])}


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
    images = sample_images(args.images, SAMPLE_IMAGES)
    try:
        with worktree(ROOT, commit) as tree, tempfile.TemporaryDirectory() as logs:
            with serving(tree, Path(logs)) as servers:
                measured = measure(servers, args, images)
        compared = compare(measured["rounds"])
    except Void as why:
        print(f"service_baseline: void run, nothing written: {why}", file=sys.stderr)
        return 1
    result = {
        "baseline_commit": commit,
        "current": this_tree(),
        "issue_baseline": {**ISSUE_BASELINE, "encoder_batch1_ms": ISSUE_ENCODER_BATCH1_MS,
                           "encoder_batch_images_per_s": ISSUE_ENCODER_IMAGES_PER_S},
        **compared,
        "targets": {key: TARGETS[key] for key in ("p50_over_encoder_batch1_ms", "c8_over_encoder", "c8_p99_ms")},
        **measured,
        "c1_requests": args.c1_requests,
        "c8_seconds": args.c8_seconds,
        "machine": machine(),
    }
    write_results(args.out, result)
    print_table(result)
    return 0


def even_rounds(text: str) -> int:
    """--rounds: a positive even number (rounds are paired)."""
    if not text.isdigit() or int(text) == 0 or int(text) % 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive even number (rounds run in pairs)")
    return int(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="the commit to compare with (default: issue 24's)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--rounds", type=even_rounds, default=6)
    parser.add_argument("--c1-requests", type=int, default=200)
    parser.add_argument("--c8-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service_baseline.json")
    return parser.parse_args()


def print_table(result: dict) -> None:
    ratio, there, met, targets = (result[k] for k in ("median_ratio", "projected_on_issue_machine", "met", "targets"))

    def verdict(key: str, target: str, sign: str) -> str:
        return f"{sign} {targets[target]:g} {'met' if met[key] else 'NOT met'}"

    rows = [
        ("c=1 p50: this tree / baseline", ratio["p50_ms"], ""),
        ("c=1 p50 over batch-1: this / baseline", ratio[OVERHEAD], ""),
        ("c=8 images/s: this tree / baseline", ratio["c8_images_per_s"], ""),
        ("c=8 p99: this tree / baseline", ratio["c8_p99_ms"], ""),
        ("projected: p50 scaled, over batch-1 (ms)", there["p50_scaled_over_encoder_batch1_ms"],
         verdict("p50_scaled_over_encoder_batch1_ms", OVERHEAD, "<=")),
        ("projected: p50 over batch-1 scaled (ms)", there[OVERHEAD], verdict(OVERHEAD, OVERHEAD, "<=")),
        ("projected: c=8 over encoder", there["c8_over_encoder"], verdict("c8_over_encoder", "c8_over_encoder", ">=")),
        ("projected: c=8 p99 (ms)", there["c8_p99_ms"], verdict("c8_p99_ms", "c8_p99_ms", "<=")),
    ]
    for name, value, target in rows:
        print(f"| {name:<40} | {value!s:>8} | {target:>14} |")


if __name__ == "__main__":
    sys.exit(main())
