"""The result tables of README.md and docs/*.md, rendered from bench/results (and the committed model, the
notebook's findings, the product's own settings and encoder table), so that no figure is typed by hand.

    python bench/render_docs.py           # rewrite every table between its markers (`make bench` runs it)
    python bench/render_docs.py --check   # exit 1 naming each table that differs (tests/test_render_docs.py)

A table sits between ``<!-- table:NAME -->`` and ``<!-- /table -->``; NAME is a key of ``TABLES``. Every table
of measurements ends with a line naming its results file, the command that writes it and the machine that file
records. Adding a table is one function and one ``TABLES`` entry.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from the checkout, like the other benches

RESULTS = ROOT / "bench" / "results"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
from classifiers.labels import DEFAULT_TAGS as TAGS  # noqa: E402


# ------------------------------------------------------------------------------------------- helpers


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def num(value: float, decimals: int = 3) -> str:
    """A figure as written in the docs: fixed decimals (rounded half up, as written in the file), thousands
    separated."""
    if value != value:  # NaN: not recorded
        return "n/a"
    rounded = Decimal(str(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return f"{rounded:,.{decimals}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def machine_text(record: dict | None) -> str:
    """The machine a results file records, in words: cores and, where recorded, the CPU and its family/model."""
    if not record:
        return "machine not recorded in the file"
    cores = record.get("cores") or record.get("cpus")
    text = f"{cores} cores"
    cpu = record.get("cpu")
    if cpu:
        text += (f", {cpu.get('model_name') or cpu.get('vendor')} (family {cpu.get('family')}, model "
                 f"{cpu.get('model')}; {', '.join(cpu.get('flags') or []) or 'no AVX-512'})")
    return text


def source(file: str, command: str, data: dict | None = None) -> str:
    data = data or {}
    machine = machine_text(data.get("machine") or ({"cores": data["cores"]} if "cores" in data else None))
    return f"\n\n*From `bench/results/{file}` (`{command}`), measured on: {machine}.*"


def met(value: float, target: float, higher: bool = True) -> str:
    return "met" if (value >= target if higher else value <= target) else "**not met**"


# --------------------------------------------------------------------------------------------- tables


def heads_table() -> str:
    d = load("heads.json")
    ci = d["ci95"]
    model = json.loads((ROOT / "artifacts" / "model" / "model.json").read_text())["training"]
    interval = lambda pair: f"{num(pair[0])} - {num(pair[1])}"  # noqa: E731
    rows = [
        [f"category top-1 ({d['category_rows']:,} rows)", f"**{num(d['top1'])}**", interval(ci["category"]["top1"]),
         f">= 0.80: {met(d['top1'], 0.80)}"],
        ["category top-2", f"**{num(d['top2'])}** ({d['top2_correct']:,} / {d['category_rows']:,})",
         interval(ci["category"]["top2"]), f">= 0.92: {met(d['top2'], 0.92)}"],
        ["category top-2, out of fold on the training split (`artifacts/model/model.json`)",
         num(model["category"]["cv"]["top2"]), "", ""],
    ]
    for tag in TAGS:
        rows.append([f"{tag} precision / recall / F1 ({d['tag_rows'][tag]:,} rows)",
                     f"{num(d['tag_precision'][tag])} / {num(d['tag_recall'][tag])} / **{num(d['tag_f1'][tag])}**",
                     f"F1 {interval(ci['tags'][tag]['f1'])}", f"F1 >= 0.70: {met(d['tag_f1'][tag], 0.70)}"])
    rows += [
        ["macro tag F1", num(d["macro_tag_f1"]), interval(ci["tags_macro"]["f1"]), ""],
        ["tag thresholds (out-of-fold F1 maximum)", " / ".join(num(d["thresholds"][t], 2) for t in TAGS), "", ""],
        [f"training all heads ({d['cores']} cores)", f"{num(d['train_s'], 1)} s", "", f"< 10 s: {met(d['train_s'], 10, False)}"],
        ["heads, ms per image", num(d["predict_ms_per_image"]), "", ""],
        ["model size (heads; + the encoder's ONNX file)", f"{num(d['artifact_mb'], 2)} MB (+ {num(d['encoder_mb'], 1)} MB)",
         "", f"< 5 MB: {met(d['artifact_mb'], 5, False)}"],
    ]
    return table(["metric (stand-in test split)", "value", "95% interval", "target"], rows) + source(
        "heads.json", "make bench-heads", d)


def runtime_table() -> str:
    d = load("runtime.json")
    rows = []
    for name, v in d["variants"].items():
        label = f"`{name}`" + (" (default)" if name == d["default"] else "")
        rows.append([label, num(v["images_per_s"], 1), num(v["batch1_ms"], 2),
                     f"{num(v['cosine_min'], 4)} / {num(v['cosine_mean'], 4)}", f"{num(v['top1'])} / {num(v['top2'])}",
                     " / ".join(num(v["tag_f1"][t]) for t in TAGS), num(v["agreement"])])
    if "noise_floor" in d:
        floor = d["noise_floor"]
        rows.append(["`onnxruntime-fp32`, pixels +-1 of 255 (noise floor)", "", "",
                     f"mean {num(floor['cosine_mean'], 4)}", "", "", num(floor["agreement"])])
    text = table(["variant", "img/s (batch 16)", "batch 1 ms", "cosine to ORT fp32: min / mean", "test top-1 / top-2",
                  "tag F1 (polka dot / floral / checker)", "agreement"], rows)
    if "default_speedup" in d:
        text += (f"\n\nThe fastest variant interchangeable with ONNX Runtime fp32 in this run, `{d['default']}`, runs "
                 f"**{num(d['default_speedup'], 2)}x** its speed (target 2.5x: {met(d['default_speedup'], 2.5)}).")
    return text + source("runtime.json", "make bench-runtime", d)


def embed_table() -> str:
    d = load("embed.json")
    rows = [
        ["images encoded", f"{d['images']:,}", ""],
        [f"end to end, `{d['runtime']}` + {d['decoder']} (CLI start to finish)",
         f"{num(d['images_per_s'], 1)} img/s ({num(d['seconds'], 1)} s)", f">= 220 img/s: {met(d['images_per_s'], 220)}"],
        [f"eager PyTorch, same pipeline, first {d['eager_images']} images", f"{num(d['eager_images_per_s'], 2)} img/s", ""],
        ["decode + resize, ms per image: simplejpeg / Pillow",
         f"{num(d['decoders']['simplejpeg_ms'], 2)} / {num(d['decoders']['pillow_ms'], 2)}", ""],
        ["re-run on the finished cache", f"{num(d['rerun_s'], 2)} s", f"< 5 s: {met(d['rerun_s'], 5, False)}"],
        ["peak RSS of the `embed` process", f"{num(d['peak_rss_mb'], 0)} MB", f"< 2 GB: {met(d['peak_rss_mb'], 2048, False)}"],
    ]
    return table(["measure", "value", "target"], rows) + source("embed.json", "make bench-embed", d)


def service_table() -> str:
    d = load("service.json")
    rows = [
        ["one image, concurrency 1: p50 / p99", f"{num(d['p50_ms'], 1)} / {num(d['p99_ms'], 1)} ms",
         f"<= 20 / <= 50 ms: {met(max(d['p50_ms'] / 20, d['p99_ms'] / 50), 1, False)}"],
        ["concurrency 8: throughput", f"{num(d['c8_images_per_s'], 1)} images/s", f">= 70: {met(d['c8_images_per_s'], 70)}"],
        ["concurrency 8: p50 / p99", f"{num(d['c8']['p50_ms'], 1)} / {num(d['c8_p99_ms'], 1)} ms",
         f"p99 < 300 ms: {met(d['c8_p99_ms'], 300, False)}"],
        ["60 s mixed soak (valid, corrupt, oversize, non-image): requests / 5xx / lost",
         f"{d['soak']['requests']:,} / {d['soak_5xx']} / {d['soak_lost']}", "0 / 0"],
        ["soak RSS growth", f"{num(d['soak_rss_growth_mb'], 1)} MB", f"< 50 MB: {met(d['soak_rss_growth_mb'], 50, False)}"],
        ["ordinary requests' p99 while other clients send decode-heavy and oversize files",
         f"{num(d['attack_normal_p99_ms'], 1)} ms", f"<= 100 ms: {met(d['attack_normal_p99_ms'], 100, False)}"],
    ]
    if "encoder_batch_images_per_s" in d:  # the encoder alone, same run and process: what the service is held to
        rows += [
            ["encoder alone (same run): batch-1 ms / batch-16 images/s",
             f"{num(d['encoder_batch1_ms'], 1)} ms / {num(d['encoder_batch_images_per_s'], 1)}", ""],
            ["concurrency 8 over the encoder's batch rate", num(d["c8_over_encoder"], 2),
             f">= 0.6: {met(d['c8_over_encoder'], 0.6)}"],
            ["one image: p50 minus the encoder's batch-1 time", f"{num(d['p50_over_encoder_batch1_ms'], 1)} ms",
             f"<= 2.5 ms: {met(d['p50_over_encoder_batch1_ms'], 2.5, False)}"],
            ["concurrency 32: images/s / p99 / 503 / other 5xx",
             f"{num(d['c32_images_per_s'], 1)} / {num(d['c32_p99_ms'], 1)} ms / {d['c32_503']} / {d['c32_5xx_other']}",
             f"other 5xx 0: {met(-d['c32_5xx_other'], 0)}"],
        ]
    return table(["measure", "value", "target"], rows) + source("service.json", "make bench-service", d)


def page_table() -> str:
    d = load("page.json")
    rows = [["photo chosen -> its card shown: median / p95", f"{num(d['median_ms'], 1)} / {num(d['p95_ms'], 1)} ms",
             f"median <= {d['target_median_ms']} ms: {met(d['median_ms'], d['target_median_ms'], False)}"],
            ["of which the request to `/v1/predict`: median", f"{num(d['request_median_ms'], 1)} ms", ""],
            ["the page's own work: median difference", f"{num(d['median_ms'] - d['request_median_ms'], 1)} ms", ""]]
    return table(["measure", "value", "target"], rows) + source("page.json", "make bench-page", d)


def scale_table() -> str:
    d = load("scale.json")
    rows = [
        [f"local engine (median of {d['engine_rounds']} runs)", f"{num(d['local_images_per_s'], 1)} img/s", ""],
        [f"Ray engine, a local {d['machine'].get('cpus', '')}-CPU cluster (median of {d['engine_rounds']} runs)",
         f"{num(d['ray_images_per_s'], 1)} img/s", ""],
        ["Ray over local", f"**{num(d['ray_over_local'])}**", f">= 0.85: {met(d['ray_over_local'], 0.85)}"],
        [f"append 10,000 rows to a {d['synthetic_rows']:,}-row cache / to an empty cache",
         f"{num(d['append_10k_s'])} s / {num(d['append_10k_empty_s'])} s (x{num(d['append_ratio'])})",
         f"<= 1.2x: {met(d['append_ratio'], 1.2, False)}"],
        ["`classify predict --cache` over the whole cache: peak RSS", f"{d['predict_peak_rss_mb']:,} MB",
         f"< 1,500 MB: {met(d['predict_peak_rss_mb'], 1500, False)}"],
        ["the same: rows per second (start-up included)", f"**{d['predict_rows_per_s']:,}**",
         f">= 50,000: {met(d['predict_rows_per_s'], 50000)}"],
    ]
    text = table(["measure", "value", "target"], rows)
    per_core = d["ray_images_per_s"] / d["machine"].get("cpus", 2)
    sizing = [[f"{n:,} million", num(n * 1e6 / 86400, 0), str(-(-int(n * 1e6 / 86400) // int(per_core)))]
              for n in (10, 100)]
    text += (f"\n\nSizing from the Ray engine's rate, {num(per_core, 1)} img/s per core (driver overhead included):\n\n"
             + table(["images in 24 hours", "img/s needed", "cores"], sizing))
    return text + source("scale.json", "make bench-scale", d)


def variants_table() -> str:
    d = load("embedding_variants.json")
    rows = [[e["variant"], f"{e['columns']:,}", num(e["logloss"]), num(e["top1"]), num(e["top2"])] for e in d["category"]]
    tags = [[e["variant"], f"{e['columns']:,}", " / ".join(num(e["f1"][t]) for t in TAGS)] for e in d["tags"]]
    return (table(["category head, out of fold", "columns", "log-loss", "top-1", "top-2"], rows) + "\n\n"
            + table(["tag heads, out of fold", "columns", "F1 polka dot / floral / checker"], tags)
            + source("embedding_variants.json", "make bench-variants", d))


def finetune_table() -> str:
    from devtools.finetune_report import comparison, decision

    d = load("finetune.json")
    rows = [[r["label"], f"{num(r['heldout_top1'])} / {num(r['heldout_top2'])} / {num(r['heldout_macro_tag_f1'])}",
             f"{num(r['test_top1'])} / {num(r['test_top2'])}",
             " / ".join(num(r[f"test_f1 {t}"]) for t in TAGS) + f" ({num(r['test_macro_tag_f1'])})",
             num(r["train_minutes"], 1), num(r["encode_ms"], 2)] for _, r in comparison(d).iterrows()]
    worn = comparison(d)["heldout_worn_macro_tag_f1"]
    worn_header = ["held-out macro tag F1, worn photos"] if worn.notna().any() else []  # where recorded
    if worn_header:
        for row, value in zip(rows, worn):
            row.insert(2, num(value))
    return (table(["encoder (heads)", "held-out top-1 / top-2 / macro tag F1", *worn_header, "test top-1 / top-2",
                   "test F1 polka dot / floral / checker (macro)", "training min", "encode ms / image"], rows)
            + "\n\n" + decision(d) + source("finetune.json", "make finetune", d))


def finetune_curves_table() -> str:
    from devtools.finetune_report import curves

    frame = curves(load("finetune.json"), RESULTS)
    if frame.empty:
        return "(no curves recorded)"
    rows = [[f"`{variant}`", " · ".join(f"{int(r.epoch)}: {num(r.heldout_top1)} / {num(r.heldout_macro_tag_f1)}"
                                         for r in part.itertuples())]
            for variant, part in frame.groupby("variant", sort=False)]
    return table(["variant", "epoch: held-out top-1 / macro tag F1"], rows) + (
        "\n\n*From the variants' curves files beside `bench/results/finetune.json` (`make finetune`).*")


def notebook_table() -> str:
    d = json.loads((ROOT / "notebook" / "results" / "summary.json").read_text())
    curve = d["learning_curve"]
    rows = [
        ["near-duplicate pairs (cosine >= 0.95) across the train/test split", str(d["near_duplicates"]["cross_split"])],
        ["near-duplicate pairs with conflicting labels", str(d["near_duplicates"]["label_conflict"])],
        ["1-NN category accuracy, random folds / uploader folds",
         f"{num(d['knn_leak']['random'])} / {num(d['knn_leak']['group'])}"],
        ["tags predicted on the flat-lay test photos (no tag labels): polka dot / floral / checker",
         " / ".join(str(d["flat_lay_tags"][t]) for t in TAGS)],
        ["learning curve, test top-1 at 25 / 50 / 100 % of the training groups",
         " / ".join(num(curve["test_top1"][k]) for k in ("25", "50", "100"))],
        ["learning curve, test macro tag F1 at 25 / 50 / 100 %",
         " / ".join(num(curve["test_macro_f1"][k]) for k in ("25", "50", "100"))],
    ]
    return table(["notebook finding (stand-in)", "value"], rows) + (
        "\n\n*From `notebook/results/summary.json` (`make notebook`).*")


def encoders_table() -> str:
    from embed.encoders import table_text

    return "`embed --list-encoders` prints:\n\n```text\n" + table_text() + "\n```"


# What each setting does, by field name; a setting without an entry fails tests/test_render_docs.py.
SETTINGS_HELP = {
    "home": "where exported encoders (ONNX files, their int8 copies) live",
    "model": "the model folder `classify predict` and the service use when none is named (default: the packaged one)",
    "max_file_mb": "the largest upload of one image (MB); larger: 413",
    "max_files": "images in one request; more: 413",
    "max_request_mb": "a whole request body (MB): bounds the memory one request holds",
    "batch_window_ms": "how long a batch waits for images still being decoded (< 0: auto, the encoder's one-image time)",
    "max_batch": "images in one encoder call (0: auto, measured at start-up)",
    "encoder_workers": "encoder calls running at once, each on its own session",
    "encoder_threads": "threads per encoder call (0: all cores)",
    "max_pending": "images queued or decoding at once; beyond: 503 with Retry-After",
    "decode_threads": "image decode pool (0: all cores)",
    "runtime": "encoder runtime (`auto`: the fastest that keeps the model's decisions)",
    "precision": "encoder precision (`auto`, fp32, bf16, int8)",
    "decode_max_megapixels": "pixels one upload may decode to (after JPEG draft reduction); more: 422",
    "decode_max_mb": "decode memory one upload may need (MB); more: 422",
    "decode_max_frames": "frames of an animated image",
    "heavy_decode_mb": "uploads needing more decode memory than this (MB) take the slow lane",
    "heavy_decodes": "slow-lane decodes at once",
    "max_heavy_pending": "slow-lane images admitted at once; beyond: 503",
    "shutdown_timeout_s": "on SIGTERM, requests still open after this (s) are cut off",
}


def settings_fields() -> dict[str, object]:
    """Every ``VINTED_TAGGER_*`` setting of the product (vinted_tagger.settings) with its default."""
    from service.settings import Settings
    from vinted_tagger.settings import Paths

    return {name: field.default for cls in (Paths, Settings) for name, field in cls.model_fields.items()}


def settings_table() -> str:
    from vinted_tagger.settings import ENV_PREFIX

    rows = [[f"`{ENV_PREFIX}{name.upper()}`", f"`{default}`" if default is not None else "(unset)",
             SETTINGS_HELP.get(name, "")] for name, default in settings_fields().items()]
    return table(["variable", "default", "what it sets"], rows)


TABLES: dict[str, Callable[[], str]] = {
    "heads": heads_table, "runtime": runtime_table, "embed": embed_table, "service": service_table,
    "page": page_table, "scale": scale_table, "variants": variants_table, "finetune": finetune_table,
    "finetune-curves": finetune_curves_table,
    "notebook": notebook_table, "encoders": encoders_table, "settings": settings_table,
}


# ---------------------------------------------------------------------------------------------- files


def render_text(text: str, rendered: dict[str, str] | None = None) -> str:
    """``text`` with every marked table replaced by its rendering; an unknown name is a ValueError."""
    rendered = {} if rendered is None else rendered

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; valid tables: {', '.join(TABLES)}")
        if name not in rendered:
            rendered[name] = TABLES[name]()
        return f"{match[1]}{rendered[name]}\n{match[4]}"

    return MARKER.sub(replace, text)


def stale(documents: list[Path] = DOCUMENTS) -> list[str]:
    """The documents whose tables differ from their rendering, with the tables' names."""
    rendered: dict[str, str] = {}
    problems = []
    for path in documents:
        text = path.read_text()
        new = render_text(text, rendered)
        if new != text:
            old_tables = {m["name"]: m["body"] for m in MARKER.finditer(text)}
            names = [m["name"] for m in MARKER.finditer(new) if old_tables.get(m["name"]) != m["body"]]
            problems.append(f"{_shown(path)}: {', '.join(sorted(set(names)))}")
    return problems


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say which tables differ (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for problem in problems:
            print(f"render_docs: stale tables in {problem}; run `python bench/render_docs.py`", file=sys.stderr)
        return 1 if problems else 0
    rendered: dict[str, str] = {}
    for path in DOCUMENTS:
        text = path.read_text()
        new = render_text(text, rendered)
        if new != text:
            path.write_text(new)
            print(f"render_docs: rewrote the tables of {_shown(path)}")
    print(f"render_docs: {len(rendered)} tables rendered into {len(DOCUMENTS)} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
