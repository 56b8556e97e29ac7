"""The README's and docs/' result tables are what bench/render_docs.py renders from bench/results (and the
committed model, the notebook's findings, the product's settings and encoder table): a figure typed by hand, or a
results file re-measured without re-rendering, fails here. Replaces the older per-number README check."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import render_docs  # noqa: E402  (bench/ is not a package)

from devtools import finetune_report  # noqa: E402

README_MAX_LINES = 250


def test_committed_tables_equal_their_rendering() -> None:
    problems = render_docs.stale()
    assert not problems, "\n".join(problems) + "\nrun `python bench/render_docs.py` (make docs)"


def test_a_changed_figure_or_results_file_is_caught(tmp_path, monkeypatch) -> None:
    readme = (ROOT / "README.md").read_text()
    top1 = render_docs.num(json.loads((ROOT / "bench/results/heads.json").read_text())["top1"])
    assert f"**{top1}**" in readme
    typed = tmp_path / "README.md"
    typed.write_text(readme.replace(f"**{top1}**", "**0.999**", 1))  # a figure edited by hand
    assert render_docs.stale([typed]) == [f"{typed}: heads"]
    typed.write_text(readme)
    results = tmp_path / "results"
    results.mkdir()
    for path in (ROOT / "bench/results").glob("*.json"):
        (results / path.name).write_text(path.read_text())
    heads = json.loads((results / "heads.json").read_text())
    (results / "heads.json").write_text(json.dumps({**heads, "top1": heads["top1"] - 0.01}))  # re-measured
    monkeypatch.setattr(render_docs, "RESULTS", results)
    assert render_docs.stale([typed]) == [f"{typed}: heads"]


def test_every_table_is_shown_and_every_marker_known() -> None:
    used = {m["name"] for path in render_docs.DOCUMENTS for m in render_docs.MARKER.finditer(path.read_text())}
    assert used == set(render_docs.TABLES), f"rendered nowhere: {set(render_docs.TABLES) - used}"
    with pytest.raises(ValueError, match="unknown table 'nope'; valid tables: heads"):
        render_docs.render_text("<!-- table:nope -->\n<!-- /table -->")


def test_measurement_tables_name_their_machine() -> None:
    for name in ("heads", "runtime", "embed", "service", "page", "scale"):
        assert "measured on: " in render_docs.TABLES[name](), name
    assert render_docs.machine_text({"cores": 2, "cpu": {"model_name": "X", "family": 26, "model": 2,
                                                          "flags": ["amx_bf16"]}}) == \
        "2 cores, X (family 26, model 2; amx_bf16)"


def test_every_setting_has_a_description() -> None:
    fields = render_docs.settings_fields()
    assert "home" in fields and "max_file_mb" in fields
    undocumented = [name for name in fields if not render_docs.SETTINGS_HELP.get(name)]
    assert not undocumented, f"add these settings to SETTINGS_HELP in bench/render_docs.py: {undocumented}"


def test_readme_is_a_short_front_door_without_machine_verdicts() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    for link in re.findall(r"\]\((docs/[\w.-]+\.md)", readme):
        assert (ROOT / link).exists(), link
    for path in render_docs.DOCUMENTS:
        text = path.read_text()
        assert not re.search(r"cannot be (met|reached|done) on (this|the|any) machine", text), path.name


def test_finetune_report_reads_the_current_and_the_new_shape(tmp_path) -> None:
    current = json.loads((ROOT / "bench/results/finetune.json").read_text())
    table = finetune_report.comparison(current)
    assert len(table) >= 3 and table["test_top1"].notna().all() and table["heldout_macro_tag_f1"].notna().all()
    assert not finetune_report.curves(current, ROOT / "bench/results").empty
    (tmp_path / "finetune_curves_whole.json").write_text(json.dumps({"curves": [
        {"epoch": 1, "heldout_top1": 0.8, "heldout_tag_f1": {"floral": 0.7, "checker": 0.9}, "train_loss": 1.0},
        {"epoch": 2, "heldout_top1": 0.85, "heldout_tag_f1": 0.82}]}))
    new = {"default_encoder": "imagenet-frozen", "candidate": "whole", "adopted": True, "rule": "r",
           "variants": [
               {"variant": "imagenet-frozen", "heldout_top1": 0.8, "heldout_top2": 0.9, "heldout_tag_f1": 0.8,
                "test_top1": 0.8, "test_top2": 0.9, "test_tag_f1": {"polka dot": 0.7, "floral": 0.8, "checker": 0.9},
                "train_minutes": 0, "encode_ms": 6, "epochs": 0},
               {"variant": "whole", "heldout_top1": 0.85, "heldout_top2": 0.95, "heldout_tag_f1": 0.81,
                "test_top1": 0.86, "test_top2": 0.95, "test_tag_f1": 0.8, "train_minutes": 30, "encode_ms": 6,
                "epochs": 9, "curve_file": "bench/results/finetune_curves_whole.json"}]}
    table = finetune_report.comparison(new)
    assert table["label"].tolist() == ["ImageNet, frozen (logistic heads)", "fine-tuned `whole` (logistic heads)"]
    assert table["heldout_macro_tag_f1"].tolist() == [0.8, 0.81] and table["test_macro_tag_f1"].iloc[0] == pytest.approx(0.8)
    curve = finetune_report.curves(new, tmp_path)
    assert curve["heldout_macro_tag_f1"].tolist() == [pytest.approx(0.8), 0.82]
    assert "held-out top-1 +0.050" in finetune_report.decision(new) and "**adopted**" in finetune_report.decision(new)
