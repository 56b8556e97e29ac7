"""The README's results tables say what bench/results (and notebook/results) hold, number for number.

Each README table is found by the text of its header's first cell. Per row (its first cell, as written) the
mapping lists the JSON keys of the numbers in the row's value cells, in reading order; ``None`` skips a
number that is derived rather than stored. A README number must equal the JSON value rounded (half up) to
the README's decimals. A row with numbers and no mapping fails too, so a new row cannot go unchecked.
Adding a table is one ``Table(...)`` entry; adding a row is one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@dataclass(frozen=True)
class Table:
    source: str  # JSON file, relative to the repository root
    header: str  # the first cell of the table's header row
    rows: dict[str, list[str | None]]  # row's first cell -> JSON key paths ("a.b.0.c") of its numbers
    cells: tuple[int, ...] = (1,)  # which cells of a row hold the figures (0 is the row's label)
    required: bool = True  # False: the table may be absent (a helper's table not merged yet)
    extra: dict = field(default_factory=dict)


TP, TR, TF = "tag_precision", "tag_recall", "tag_f1"
TABLES = [
    Table("bench/results/heads.json", "metric (stand-in test split)", {
        "category top-1 (824 rows, 17 classes)": ["top1", "ci95.category.top1.0", "ci95.category.top1.1"],
        "category top-2": ["top2", "top2_correct", "category_rows", "ci95.category.top2.0", "ci95.category.top2.1"],
        "polka dot precision / recall / F1 (907 rows)": [f"{TP}.polka dot", f"{TR}.polka dot", f"{TF}.polka dot",
                                                         "ci95.tags.polka dot.f1.0", "ci95.tags.polka dot.f1.1"],
        "floral precision / recall / F1": [f"{TP}.floral", f"{TR}.floral", f"{TF}.floral",
                                           "ci95.tags.floral.f1.0", "ci95.tags.floral.f1.1"],
        "checker precision / recall / F1": [f"{TP}.checker", f"{TR}.checker", f"{TF}.checker",
                                            "ci95.tags.checker.f1.0", "ci95.tags.checker.f1.1"],
        "macro tag F1": ["macro_tag_f1", "ci95.tags_macro.f1.0", "ci95.tags_macro.f1.1"],
        "tag thresholds (out-of-fold F1 maximum): polka dot / floral / checker": [
            "thresholds.polka dot", "thresholds.floral", "thresholds.checker"],
        "training all heads (5-fold group-aware CV + refit)": ["train_s"],
        "heads, ms per image (batch of 1,731)": ["predict_ms_per_image"],
        "`artifacts/model` size": ["artifact_mb", "encoder_mb"],
    }, cells=(1, 2)),
    Table("bench/results/embed.json", "measure", {
        "images encoded (no failure)": ["images"],
        "end to end, `openvino-bf16` + Pillow (CLI start to finish)": ["images_per_s", "seconds"],
        "eager PyTorch, same pipeline, first 512 images": ["eager_images_per_s"],
        "ratio to eager (reported, not a target)": ["speedup"],
        "decode + resize, ms per image: simplejpeg / Pillow (same pixels within 0.12 mean abs)": [
            "decoders.simplejpeg_ms", "decoders.pillow_ms"],
        "re-run on the finished cache": ["rerun_s"],
        "peak RSS of the `embed` process": ["peak_rss_mb"],
    }, extra={"marker": "images encoded (no failure)"}),
    Table("bench/results/runtime.json", "variant", {
        **{f"`{name}`{mark}": [f"variants.{name}.{key}" for key in (
            "images_per_s", "batch1_ms", "cosine_min", "cosine_mean", "top1", "top2", "tag_f1.polka dot",
            "tag_f1.floral", "tag_f1.checker", "agreement")]
           for name, mark in [("onnxruntime-fp32", ""), ("onnxruntime-int8", ""), ("openvino-bf16", " (default)"),
                              ("openvino-fp32", ""), ("openvino-int8", "")]},
        "`onnxruntime-fp32`, pixels +-1 of 255 (noise floor)": ["noise_floor.cosine_mean", "noise_floor.agreement"],
    }, cells=(1, 2, 3, 4, 5, 6, 7), extra={"marker": "`openvino-bf16` (default)"}),
    Table("bench/results/service.json", "measure", {
        "one image, concurrency 1: p50 / p99": ["p50_ms", "p99_ms"],
        "concurrency 8: throughput": ["c8_images_per_s"],
        "concurrency 8: p50 / p99": ["c8.p50_ms", "c8_p99_ms"],
        "60 s mixed soak (valid, corrupt, oversize, non-image): requests / 5xx / lost": [
            "soak.requests", "soak_5xx", "soak_lost"],
        "soak RSS growth": ["soak_rss_growth_mb"],
        "attack: ordinary requests' p99 while other clients send decode-heavy and oversize files": [
            "attack_normal_p99_ms"],
    }, extra={"marker": "one image, concurrency 1: p50 / p99"}),
    Table("bench/results/page.json", "measure", {
        "chosen -> card shown: median / p95": ["median_ms", "p95_ms"],
        "of which the request to `/v1/predict`: median": ["request_median_ms"],
    }, extra={"marker": "chosen -> card shown: median / p95"}),
    Table("bench/results/embedding_variants.json", "category head, out of fold", {
        f"{label}": [f"category.{i}.columns", f"category.{i}.logloss", f"category.{i}.top1", f"category.{i}.top2"]
        for i, label in enumerate([
            "head + texture statistics (the previous layout)", "block 5: 2x2 grid instead of its mean",
            "**block 5: 3x3 grid instead of its mean (committed)**", "committed, L-BFGS capped at 30 instead of 20",
            "committed + block 6: 3x3 grid", "committed + block 4: 2x2 grid instead of its mean",
            "committed without the head"])
    }, cells=(1, 2, 3, 4)),
    Table("notebook/results/summary.json", "notebook finding (stand-in)", {
        "near-duplicate pairs (cosine >= 0.95) across the train/test split": ["near_duplicates.cross_split"],
        "near-duplicate pairs with conflicting labels": ["near_duplicates.label_conflict"],
        "1-NN category accuracy, random folds / uploader folds": ["knn_leak.random", "knn_leak.group"],
        "tags predicted on the 824 flat-lay test photos (no tag labels): polka dot / floral / checker": [
            "flat_lay_tags.polka dot", "flat_lay_tags.floral", "flat_lay_tags.checker"],
        "learning curve, test top-1 at 25 / 50 / 100 % of the training groups": [
            "learning_curve.test_top1.25", "learning_curve.test_top1.50", "learning_curve.test_top1.100"],
        "learning curve, test macro tag F1 at 25 / 50 / 100 %": [
            "learning_curve.test_macro_f1.25", "learning_curve.test_macro_f1.50", "learning_curve.test_macro_f1.100"],
    }),
]

NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])\d+(?:\.\d+)?")


def numbers(cell: str) -> list[str]:
    """The numbers of a table cell as written ("8,860" -> "8860"), ignoring inline code and words like p99."""
    text = re.sub(r"`[^`]*`", "", cell)
    return [n.replace(",", "") for n in NUMBER.findall(text)]


def readme_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of the text as rows of cells (the separator row dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        line = line.strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def find_table(tables, spec: Table) -> list[list[str]] | None:
    marker = spec.extra.get("marker")
    for table in tables:
        if table[0][0] == spec.header and (marker is None or any(row[0] == marker for row in table[1:])):
            return table
    return None


def lookup(data, path: str):
    for key in path.split("."):
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


def rounded(value, decimals: int) -> Decimal:
    return Decimal(str(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def check_table(spec: Table, tables) -> list[str]:
    table = find_table(tables, spec)
    if table is None:
        return [] if not spec.required else [f"README has no table headed {spec.header!r} ({spec.source})"]
    data = json.loads((ROOT / spec.source).read_text())
    problems, seen = [], set()
    for row in table[1:]:
        label = row[0]
        found = [n for i in spec.cells if i < len(row) for n in numbers(row[i])]
        if label not in spec.rows:
            if found:
                problems.append(f"{spec.source}: README row {label!r} has numbers {found} but no JSON key in TABLES")
            continue
        seen.add(label)
        keys = spec.rows[label]
        if len(found) != len(keys):
            problems.append(f"{spec.source}: row {label!r} shows {len(found)} numbers {found}, mapped {len(keys)}")
            continue
        for written, key in zip(found, keys):
            if key is None:
                continue
            decimals = len(written.split(".")[1]) if "." in written else 0
            try:
                stored = lookup(data, key)
            except (KeyError, IndexError, TypeError):
                problems.append(f"{spec.source}: no key {key!r} (README row {label!r})")
                continue
            if stored is None or rounded(stored, decimals) != Decimal(written):
                problems.append(f"{spec.source}: row {label!r}: README {written}, JSON {key} = {stored}")
    problems += [f"{spec.source}: mapped row {label!r} is not in the README table" for label in spec.rows
                 if label not in seen]
    return problems


@pytest.mark.parametrize("spec", TABLES, ids=[t.source for t in TABLES])
def test_readme_table_equals_its_json(spec: Table) -> None:
    problems = check_table(spec, readme_tables(README.read_text()))
    assert not problems, "\n".join(problems)


def test_checker_catches_a_wrong_number(tmp_path: Path) -> None:
    spec = Table("bench/results/embed.json", "measure", {"speedup": ["speedup"]})
    stored = json.loads((ROOT / spec.source).read_text())["speedup"]
    good = f"| measure | value |\n|---|---|\n| speedup | {stored}x |\n"
    bad = f"| measure | value |\n|---|---|\n| speedup | {stored + 1}x |\n| new row | 3 s |\n"
    assert check_table(spec, readme_tables(good)) == []
    problems = check_table(spec, readme_tables(bad))
    assert any("README" in p and "speedup" in p for p in problems)
    assert any("new row" in p for p in problems)
    assert numbers("**1,074 MB** (p99 `x 12`) 2.4x") == ["1074", "2.4"]
