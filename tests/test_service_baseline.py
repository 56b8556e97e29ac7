"""bench/service_baseline.py: paired ratios to the baseline, the projection onto issue 24's machine, what voids a
run, and the worktree it serves the baseline from."""

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


def rounds_of(*pairs: tuple[dict, dict], batch1_ms: float = 4.0) -> list[dict]:
    return [{"current": current, "baseline": baseline, "batch1_ms": batch1_ms} for current, baseline in pairs]


def test_rounds_pair_up_and_the_median_pair_ratio_scales_the_issue_figures():
    base = figures(10.0, 100.0, 80.0)
    rounds = rounds_of((figures(8.0, 200.0, 40.0), base),  # ratios 0.8, 2.0, 0.5
                       (figures(5.0, 50.0, 160.0), base),  # 0.5, 0.5, 2.0: pair 1 = sqrt(0.4), 1, 1
                       (figures(9.0, 150.0, 60.0), base),  # 0.9, 1.5, 0.75
                       (figures(9.0, 150.0, 60.0), base),  # pair 2 = 0.9, 1.5, 0.75
                       (figures(10.0, 160.0, 64.0), base),  # 1.0, 1.6, 0.8
                       (figures(10.0, 160.0, 64.0), base))  # pair 3 = 1.0, 1.6, 0.8
    out = sb.compare(rounds)
    assert out["pair_ratios"]["p50_ms"] == [0.632, 0.9, 1.0]
    # Over the encoder's 4 ms: 4, 1, 5, 5, 6, 6 ms against 6: pairs sqrt(4/6 x 1/6) = 1/3, 5/6, 1.
    assert out["pair_ratios"]["p50_over_encoder_batch1_ms"] == [0.333, 0.833, 1.0]
    assert out["median_ratio"] == {"p50_ms": 0.9, "c8_images_per_s": 1.5, "c8_p99_ms": 0.8,
                                   "p50_over_encoder_batch1_ms": 0.833}
    # 7.31 x 0.9 = 6.579 ms, 1.989 over 4.59; (7.31 - 4.59) x 5/6 = 2.267 ms; 170 x 1.5 = 255 images/s, 0.644 of
    # 396; 57 x 0.8 = 45.6 ms.
    there = out["projected_on_issue_machine"]
    assert there == {"p50_ms": 6.579, "c8_images_per_s": 255.0, "c8_p99_ms": 45.6, "p50_over_encoder_batch1_ms": 2.267,
                     "p50_scaled_over_encoder_batch1_ms": 1.989, "c8_over_encoder": 0.644}
    assert all(out["met"].values()) and len(out["met"]) == 4
    # The pairs' lowest and highest ratio: 2.72 x 1/3 = 0.907 to 2.72 ms; 57 x 0.75 = 42.75 to 57 x 1 = 57 ms.
    assert out["projected_range"]["p50_over_encoder_batch1_ms"] == [0.907, 2.72]
    assert out["projected_range"]["c8_p99_ms"] == [42.75, 57.0]


def test_each_round_is_judged_against_the_encoder_probed_around_its_pair():
    base = figures(10.0, 100.0, 80.0)
    rounds = rounds_of((figures(8.0, 100.0, 80.0), base), (figures(8.0, 100.0, 80.0), base), batch1_ms=4.0)
    rounds += rounds_of((figures(8.0, 100.0, 80.0), base), (figures(8.0, 100.0, 80.0), base), batch1_ms=7.0)
    # (8 - 4) / (10 - 4) = 2/3 for the first pair, (8 - 7) / (10 - 7) = 1/3 for the second: the median is 0.5.
    assert sb.compare(rounds)["pair_ratios"]["p50_over_encoder_batch1_ms"] == [0.667, 0.333]


def test_a_p50_under_the_encoders_own_time_voids_the_run():
    rounds = rounds_of(*[(figures(5.0, 100.0, 80.0), figures(10.0, 100.0, 80.0))] * 2, batch1_ms=6.0)
    with pytest.raises(sb.Void, match="batch-1 time"):
        sb.compare(rounds)


def test_an_encoder_rate_that_moves_between_probes_voids_the_run():
    sb.check_steady([{"images_per_s": 280.0}, {"images_per_s": 260.0}, {"images_per_s": 250.0}])
    with pytest.raises(sb.Void, match="280.0 to 200.0"):
        sb.check_steady([{"images_per_s": 280.0}, {"images_per_s": 200.0}])


def test_a_void_found_after_the_rounds_is_one_line_and_nothing_written(monkeypatch, tmp_path, capsys):
    """compare() voids a run after the servers are gone: main says so in one line, writes nothing, exits 1."""
    import contextlib

    rounds = rounds_of(*[(figures(5.0, 100.0, 80.0), figures(10.0, 100.0, 80.0))] * 2, batch1_ms=6.0)
    monkeypatch.setattr(sb, "worktree", lambda repository, commit: contextlib.nullcontext(tmp_path))
    monkeypatch.setattr(sb, "serving", lambda tree, logs: contextlib.nullcontext({}))
    monkeypatch.setattr(sb, "sample_images", lambda path, count: [])
    monkeypatch.setattr(sb, "measure", lambda servers, args, images: {"rounds": rounds})
    out = tmp_path / "out.json"
    monkeypatch.setattr(sys, "argv", ["service_baseline.py", "--baseline", "HEAD", "--images", __file__,
                                      "--out", str(out)])
    assert sb.main() == 1
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "void run, nothing written" in said and not out.exists()


def test_a_steady_drift_cancels_within_a_pair():
    """The host slows 10% a phase: whoever runs second looks slower; the pair's two orders cancel it."""
    base, same = figures(10.0, 100.0, 80.0), figures(10.0, 100.0, 80.0)
    rounds = rounds_of((same, figures(11.0, 100 / 1.1, 88.0)),  # current first
                       (figures(11.0, 100 / 1.1, 88.0), base), batch1_ms=6.0)  # baseline first
    assert set(sb.compare(rounds)["median_ratio"].values()) == {1.0}


def test_a_tree_no_better_than_the_baseline_misses_what_the_baseline_missed():
    same = figures(10.0, 120.0, 80.0)
    out = sb.compare(rounds_of((same, same), (same, same), batch1_ms=6.0))
    # The baseline itself: 7.31 - 4.59 = 2.72 ms over the encoder, 170 / 396 = 0.43; its p99 (57 ms) was within 60.
    assert out["met"] == {"p50_scaled_over_encoder_batch1_ms": False, "p50_over_encoder_batch1_ms": False,
                          "c8_over_encoder": False, "c8_p99_ms": True}
    slower = figures(10.0, 120.0, 88.0)
    assert not sb.compare(rounds_of((slower, same), (slower, same)))["met"]["c8_p99_ms"]  # 57 x 1.1 = 62.7 ms


def test_trees_serving_different_encoders_void_the_run():
    encoder = {"name": "a", "input_size": 260, "dim": 4480, "runtime": "openvino", "precision": "bf16"}
    sb.check_same_encoder({"current": {"encoder": encoder}, "baseline": {"encoder": {**encoder, "name": "b"}}})
    with pytest.raises(sb.Void, match="different encoders"):
        sb.check_same_encoder({"current": {"encoder": encoder},
                               "baseline": {"encoder": {**encoder, "precision": "fp32"}}})


def test_service_settings_do_not_reach_the_servers(monkeypatch):
    monkeypatch.setenv("VINTED_TAGGER_MAX_BATCH", "2")
    monkeypatch.setenv("VINTED_TAGGER_HOME", "/encoders")
    env = sb.default_settings_env()
    assert "VINTED_TAGGER_MAX_BATCH" not in env and env["VINTED_TAGGER_HOME"] == "/encoders"


def repository(path: Path) -> Path:
    """A git repository with one commit: f.txt = "old" and bench/results/r.json."""
    path.mkdir()
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    (path / "f.txt").write_text("old")
    (path / "README.md").write_text("tables")
    (path / "bench" / "results").mkdir(parents=True)
    (path / "bench" / "results" / "r.json").write_text("{}")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "old"], check=True)
    return path


def test_the_tree_measured_is_its_commit_unless_code_changed(tmp_path):
    repo = repository(tmp_path / "repo")
    (repo / "bench" / "results" / "r.json").write_text('{"new": 1}')  # a bench wrote its results
    (repo / "README.md").write_text("rendered again")
    assert sb.this_tree(repo)["uncommitted_changes"] is False
    (repo / "f.txt").write_text("new")
    assert sb.this_tree(repo)["uncommitted_changes"] is True


def test_the_baseline_worktree_is_gone_afterwards_even_when_the_run_fails(tmp_path):
    repo = repository(tmp_path / "repo")
    (repo / "f.txt").write_text("new")
    with pytest.raises(RuntimeError), sb.worktree(repo, "HEAD") as tree:
        assert (tree / "f.txt").read_text() == "old"  # the commit, not the working tree
        raise RuntimeError("a phase failed")
    assert not tree.exists()
    listed = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True, text=True).stdout
    assert len(listed.splitlines()) == 1
    with pytest.raises(sb.Void, match="git worktree add failed"), sb.worktree(repo, "no-such-ref"):
        pass


@pytest.mark.parametrize("rounds", ["no-such-ref", "0", "3"])
def test_a_baseline_this_checkout_lacks_or_odd_rounds_exit_2(rounds):
    args = ["--baseline", rounds] if rounds == "no-such-ref" else ["--rounds", rounds]
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "service_baseline.py"), *args],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert ("no commit 'no-such-ref'" if rounds == "no-such-ref" else "not a positive even number") in run.stderr


@pytest.mark.skipif(sb.resolve(sb.BASELINE_COMMIT) is None, reason="a shallow clone: the baseline commit is not here")
def test_the_baseline_commit_is_the_service_before_issue_24():
    """The commit the issue measured: an ancestor of this one, with no /metrics route yet."""
    ancestor = subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", sb.BASELINE_COMMIT, "HEAD"])
    assert ancestor.returncode == 0
    app = subprocess.run(["git", "-C", str(ROOT), "show", f"{sb.BASELINE_COMMIT}:service/app.py"],
                         capture_output=True, text=True, check=True).stdout
    assert '"/metrics"' not in app
