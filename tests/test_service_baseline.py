"""bench/service_baseline.py: the ratios to the baseline and the projection onto issue 24's machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import service_baseline as sb  # noqa: E402  (bench/ is not a package)


def figures(p50: float, rate: float, p99: float) -> dict:
    return {"p50_ms": p50, "c8_images_per_s": rate, "c8_p99_ms": p99}


def test_each_round_is_a_ratio_and_the_median_ratio_scales_the_issue_figures():
    rounds = [{"current": figures(9.0, 180.0, 60.0), "baseline": figures(10.0, 120.0, 80.0)},
              {"current": figures(8.0, 200.0, 56.0), "baseline": figures(10.0, 125.0, 80.0)},
              {"current": figures(9.5, 150.0, 90.0), "baseline": figures(9.5, 100.0, 75.0)}]
    out = sb.compare(rounds)
    assert out["ratios"]["p50_ms"] == [0.9, 0.8, 1.0]
    assert out["median_ratio"] == {"p50_ms": 0.9, "c8_images_per_s": 1.5, "c8_p99_ms": 0.75}
    there = out["projected_on_issue_machine"]
    assert there["p50_ms"] == round(7.31 * 0.9, 2)
    assert there["p50_over_encoder_batch1_ms"] == round(7.31 * 0.9 - 4.59, 2)
    assert there["c8_over_encoder"] == round(170 * 1.5 / 396, 3)
    assert there["c8_p99_ms"] == round(57 * 0.75, 2)
    assert out["met"] == {"p50_over_encoder_batch1_ms": True, "c8_over_encoder": True, "c8_p99_ms": True}


def test_a_tree_no_better_than_the_baseline_misses_what_the_baseline_missed():
    same = figures(10.0, 120.0, 80.0)
    out = sb.compare([{"current": same, "baseline": same}])
    # The baseline itself: 7.31 - 4.59 = 2.72 ms over the encoder, 170 / 396 = 0.43; its p99 (57 ms) was within 60.
    assert out["met"] == {"p50_over_encoder_batch1_ms": False, "c8_over_encoder": False, "c8_p99_ms": True}
    slower = sb.compare([{"current": figures(10.0, 120.0, 88.0), "baseline": same}])
    assert not slower["met"]["c8_p99_ms"]  # 57 x 1.1 = 62.7 ms


def test_a_baseline_this_checkout_does_not_have_is_one_line_and_exit_2():
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "service_baseline.py"), "--baseline", "no-such-ref"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "no commit 'no-such-ref'" in run.stderr


@pytest.mark.skipif(sb.resolve(sb.BASELINE_COMMIT) is None, reason="a shallow clone: the baseline commit is not here")
def test_the_baseline_commit_is_the_service_before_issue_24():
    """The commit the issue measured: no /metrics route yet, and issue 24's first service commit follows it."""
    app = subprocess.run(["git", "-C", str(ROOT), "show", f"{sb.BASELINE_COMMIT}:service/app.py"],
                         capture_output=True, text=True, check=True).stdout
    assert '"/metrics"' not in app
    current = (ROOT / "service" / "app.py").read_text()
    assert '"/metrics"' in current
