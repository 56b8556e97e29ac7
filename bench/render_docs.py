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
from embed.encoders import ENCODERS  # noqa: E402


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
    """The line under a table: its results file, the command that writes it, the machine the file records (at the
    top level or under ``run``) and, where recorded, that machine's 1-minute load when the bench began."""
    data = data or {}
    record = {**data.get("run", {}), **data}
    machine = machine_text(record.get("machine") or ({"cores": record["cores"]} if "cores" in record else None))
    load = record.get("load_avg_1min_at_start")
    busy = f" (1-minute load {num(load, 2)} at the start)" if load is not None else ""
    return f"\n\n*From `bench/results/{file}` (`{command}`), measured on: {machine}{busy}.*"


def met(value: float, target: float, higher: bool = True) -> str:
    return "met" if (value >= target if higher else value <= target) else "**not met**"


# --------------------------------------------------------------------------------------------- tables


def heads_table() -> str:
    d = load("heads.json")
    ci = d["ci95"]
    document = json.loads((ROOT / "artifacts" / "model" / "model.json").read_text())
    model = document["training"]
    # An encoder fine-tuned on the training split has seen its labels: folds over those rows flatter it.
    tuned = document["encoder"]["sha256"] != ENCODERS["efficientnet-lite2"].sha256  # not ImageNet's weights
    seen = " (optimistic: the fine-tuned encoder was trained on these rows)" if tuned else ""
    interval = lambda pair: f"{num(pair[0])} - {num(pair[1])}"  # noqa: E731
    rows = [
        [f"category top-1 ({d['category_rows']:,} rows)", f"**{num(d['top1'])}**", interval(ci["category"]["top1"]),
         f">= 0.80: {met(d['top1'], 0.80)}"],
        ["category top-2", f"**{num(d['top2'])}** ({d['top2_correct']:,} / {d['category_rows']:,})",
         interval(ci["category"]["top2"]), f">= 0.92: {met(d['top2'], 0.92)}"],
        [f"category top-2, out of fold on the training split (`artifacts/model/model.json`){seen}",
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
    agreement = lambda v: num(v["agreement"], 4) + (  # noqa: E731  with the top-2 set's where recorded
        f" / {num(v['top2_set_agreement'], 4)}" if "top2_set_agreement" in v else "")
    rows = []
    for name, v in d["variants"].items():
        label = f"`{name}`" + (" (default)" if name == d["default"] else "")
        rows.append([label, num(v["images_per_s"], 1), num(v["batch1_ms"], 2),
                     f"{num(v['cosine_min'], 4)} / {num(v['cosine_mean'], 4)}", f"{num(v['top1'])} / {num(v['top2'])}",
                     " / ".join(num(v["tag_f1"][t]) for t in TAGS), agreement(v)])
    if "noise_floor" in d:
        floor = d["noise_floor"]
        rows.append(["`onnxruntime-fp32`, pixels +-1 of 255 (noise floor)", "", "",
                     f"mean {num(floor['cosine_mean'], 4)}", "", "", agreement(floor)])
    text = table(["variant", "img/s (batch 16)", "batch 1 ms", "cosine to ORT fp32: min / mean", "test top-1 / top-2",
                  "tag F1 (polka dot / floral / checker)", "fp32 heads' agreement / top-2 set"], rows)
    if "default_speedup" in d:
        text += (f"\n\nThe fastest variant interchangeable with ONNX Runtime fp32 in this run, `{d['default']}`, runs "
                 f"**{num(d['default_speedup'], 2)}x** its speed (target 2.5x: {met(d['default_speedup'], 2.5)}).")
    return text + source("runtime.json", "make bench-runtime", d)


def variant_pairs(d: dict) -> list[tuple[str, str, dict, dict, bool]]:
    """Each unordered pair of variants the runtime bench measured: both directions' figures and whether
    ``embed.variants`` (its own rule, on this file) takes them as interchangeable."""
    from embed.variants import agreement_data

    measured = agreement_data(d)
    names = list(d["variants"])
    return [(a, b, d["pairs"][f"{a}|{b}"], d["pairs"][f"{b}|{a}"], b in measured["interchangeable"].get(a, ()))
            for i, a in enumerate(names) for b in names[i + 1:]
            if f"{a}|{b}" in d["pairs"] and f"{b}|{a}" in d["pairs"]]


def runtime_pairs_table() -> str:
    d = load("runtime.json")
    if "pairs" not in d:
        return "(this `bench/results/runtime.json` has no pairs: re-run `make bench-runtime`)"
    floor = d["noise_floor"]
    lower = lambda there, back, key: num(min(there[key], back[key]), 4)  # noqa: E731
    rows = [[f"`{a}` ~ `{b}`", lower(there, back, "agreement"), lower(there, back, "top2_set_agreement"),
             "yes" if same else "**no**"] for a, b, there, back, same in variant_pairs(d)]
    rows.append(["noise floor: `onnxruntime-fp32`, pixels +-1 of 255", num(floor["agreement"], 4),
                 num(floor["top2_set_agreement"], 4), ""])
    return table(["pair of variants", "decision agreement (lower direction)", "top-2 set agreement (lower direction)",
                  "interchangeable (agreement >= noise floor)"], rows) + source("runtime.json", "make bench-runtime", d)


def runtime_summary() -> str:
    d = load("runtime.json")
    if "pairs" not in d:
        return "(no measured pairs in `bench/results/runtime.json`: re-run `make bench-runtime`)"
    pairs = variant_pairs(d)
    a, b, there, back, _ = min(pairs, key=lambda p: min(p[2]["agreement"], p[3]["agreement"]))
    text = (f"{sum(p[4] for p in pairs)} of {len(pairs)} measured pairs of variants are interchangeable: the lowest "
            f"decision agreement, `{a}` ~ `{b}`, is {num(min(there['agreement'], back['agreement']), 4)} against a "
            f"noise floor of {num(d['noise_floor']['agreement'], 4)}")
    if "default_speedup" in d:
        text += f"; `{d['default']}` ran {num(d['default_speedup'], 2)}x ONNX Runtime fp32's speed"
    return text + "." + source("runtime.json", "make bench-runtime", d).replace("\n\n", " ")


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


def service_rows() -> dict[str, list[str]]:
    """The service's figures against issue 24's targets (the ``targets`` service.json records), by key: ratios to
    the encoder measured around the phases, the two millisecond targets also in units of that encoder, absolute
    bounds for errors and memory."""
    d = load("service.json")
    c8, t, encoder = d["c8"], d["targets"], d["encoder_alone"]
    c32_5xx = d["c32_503"] + d["c32_5xx_other"]
    rows = {
        "c1": ["one image, concurrency 1: p50 / p99", f"{num(d['p50_ms'], 1)} / {num(d['p99_ms'], 1)} ms", ""],
        "c8": ["concurrency 8: throughput", f"{num(d['c8_images_per_s'], 1)} images/s", ""],
        "c8_p99": ["concurrency 8: p50 / p99", f"{num(c8['p50_ms'], 1)} / {num(d['c8_p99_ms'], 1)} ms",
                   f"p99 <= {t['c8_p99_ms']:g} ms: {met(d['c8_p99_ms'], t['c8_p99_ms'], False)}"],
        "encoder": ["the encoder alone (same run, before concurrency 1 and after concurrency 8, mean): batch-1 ms / "
                    "batch-16 images/s", f"{num(d['encoder_batch1_ms'], 2)} ms / {num(d['encoder_batch_images_per_s'], 1)}",
                    ""],
        "overhead": ["one image: p50 minus the encoder's batch-1 time, of which decoding the upload (median)",
                     f"{num(d['p50_over_encoder_batch1_ms'], 2)} ms, {num(d['decode_ms'], 2)} ms",
                     f"<= {t['p50_over_encoder_batch1_ms']:g} ms: "
                     f"{met(d['p50_over_encoder_batch1_ms'], t['p50_over_encoder_batch1_ms'], False)}"],
        "c8_over_encoder": ["concurrency 8 over the encoder's batch-16 rate", num(d["c8_over_encoder"], 2),
                            f">= {t['c8_over_encoder']:g}: {met(d['c8_over_encoder'], t['c8_over_encoder'])}"],
        "share": [f"one image: that overhead over the encoder's batch-1 time ({t['p50_over_encoder_batch1_ms']:g} ms "
                  f"over the {num(t['issue_encoder_batch1_ms'], 2)} ms where issue 24 was measured)",
                  num(d["p50_overhead_share"], 2),
                  f"<= {num(t['p50_overhead_share'], 2)}: {met(d['p50_overhead_share'], t['p50_overhead_share'], False)}"],
        "after_idle": [f"one image: the encoder's batch-1 time after the machine idled {encoder['idle_gap_ms']:g} ms, "
                       "as a lone request finds it; p50 minus that (what the service itself adds)",
                       f"{num(d['encoder_batch1_after_idle_ms'], 2)} ms; "
                       f"{num(d['p50_over_encoder_batch1_after_idle_ms'], 2)} ms", ""],
        "p99_images": [f"concurrency 8: p99 times the encoder's batch-16 rate, in images ({t['c8_p99_ms']:g} ms x "
                       f"{num(t['issue_encoder_images_per_s'], 0)} images/s there)", num(d["c8_p99_encoder_images"], 1),
                       f"<= {num(t['c8_p99_encoder_images'], 1)}: "
                       f"{met(d['c8_p99_encoder_images'], t['c8_p99_encoder_images'], False)}"],
        "drift": ["the encoder's batch-16 rate before concurrency 1 / after concurrency 8: drift",
                  f"{num(encoder['before']['images_per_s'], 1)} / {num(encoder['after']['images_per_s'], 1)}: "
                  f"{num(d['host_speed_drift'], 2)}",
                  f"<= {num(t['host_speed_drift'], 2)}: {met(d['host_speed_drift'], t['host_speed_drift'], False)}"],
        "batch": ["concurrency 8: mean images per encoder call", num(c8["mean_batch"], 1), ""],
        "c32": ["concurrency 32: images/s / p99 / 503 / other 5xx",
                f"{num(d['c32_images_per_s'], 1)} / {num(d['c32_p99_ms'], 1)} ms / {d['c32_503']} / "
                f"{d['c32_5xx_other']}", f"no 5xx: {met(-c32_5xx, 0)}"],
    }
    if "metrics_scrapes" in c8:
        scrapes = c8["metrics_scrapes"]
        rows["scrapes"] = ["`GET /metrics` every second during concurrency 8: scrapes / failed / p50 / max",
                           f"{scrapes['scrapes']} / {scrapes['failures']} / {num(scrapes['p50_ms'], 2)} / "
                           f"{num(scrapes['max_ms'], 2)} ms", ""]
    rows["soak"] = ["60 s mixed soak (valid, corrupt, oversize, non-image): requests / 5xx / lost",
                    f"{d['soak']['requests']:,} / {d['soak_5xx']} / {d['soak_lost']}",
                    f"0 / 0: {met(-(d['soak_5xx'] + d['soak_lost']), 0)}"]
    rows["rss"] = ["soak RSS growth", f"{num(d['soak_rss_growth_mb'], 1)} MB",
                   f"< {t['soak_rss_growth_mb']:g} MB: {met(d['soak_rss_growth_mb'], t['soak_rss_growth_mb'], False)}"]
    rows["attack"] = ["ordinary requests' p99 while other clients send decode-heavy and oversize files",
                      f"{num(d['attack_normal_p99_ms'], 1)} ms",
                      f"<= {t['attack_normal_p99_ms']:g} ms: "
                      f"{met(d['attack_normal_p99_ms'], t['attack_normal_p99_ms'], False)}"]
    return rows


SERVICE_SUMMARY = ("c1", "c8", "c8_p99", "overhead", "c8_over_encoder", "c32", "soak", "rss", "attack")


def service_table(keys: tuple[str, ...] | None = None) -> str:
    """Every row of service_rows (docs/results.md), or those ``keys`` (the README's summary)."""
    rows = service_rows()
    chosen = [rows[key] for key in keys] if keys else list(rows.values())
    return (table(["measure", "value", "target"], chosen)
            + source("service.json", "make bench-service", load("service.json")))


def service_speed_text() -> str:
    """Why the two millisecond targets move with the host (docs/service.md), in the committed run's figures."""
    d = load("service.json")
    rate, c8 = d["encoder_batch_images_per_s"], d["c8_images_per_s"]
    return (f"In the committed run the encoder alone ran {num(rate, 1)} images/s at batch 16. Even a service "
            f"delivering all of it would average 8 / {num(rate, 1)} s = {num(8000 / rate, 1)} ms at concurrency 8; "
            f"at the {num(c8, 1)} images/s delivered the mean is {num(8000 / c8, 1)} ms (p99 {num(d['c8_p99_ms'], 1)} "
            f"ms, target {d['targets']['c8_p99_ms']:g}). The one image's {num(d['p50_over_encoder_batch1_ms'], 2)} ms over the encoder holds "
            f"decoding the upload, {num(d['decode_ms'], 2)} ms (the same preprocessing as training), and the "
            f"encoder's slower start after the machine idled between requests: "
            f"{num(d['encoder_batch1_after_idle_ms'], 2)} ms at batch 1 after {d['encoder_alone']['idle_gap_ms']:g} "
            "ms idle against "
            f"{num(d['encoder_batch1_ms'], 2)} ms in a tight loop." + source("service.json", "make bench-service", d))


def service_baseline_table() -> str:
    """This service beside the commit issue 24 measured, on one host in one run, and the issue's own figures for
    that commit projected through the ratios (docs/service.md): at the median pair ratio, with the range the
    lowest and highest pair give, and the verdict at the median (saying so when the range crosses the target)."""
    d = load("service_baseline.json")
    issue, there, spread, t = (d[k] for k in ("issue_baseline", "projected_on_issue_machine", "projected_range",
                                              "targets"))

    def ratio(key: str) -> str:
        pairs = d["pair_ratios"][key]
        return f"{num(d['median_ratio'][key], 3)} ({num(min(pairs), 3)} - {num(max(pairs), 3)})"

    def projected(key: str, decimals: int, unit: str = "") -> str:
        low, high = spread[key]
        return f"{num(there[key], decimals)}{unit} ({num(low, decimals)} - {num(high, decimals)})"

    def verdict(key: str, target: str, higher: bool = False) -> str:
        bound, (low, high) = t[target], spread[key]
        crosses = " (the range crosses it)" if low <= bound <= high else ""
        return f"{'>=' if higher else '<='} {bound:g}: {met(there[key], bound, higher)}{crosses}"

    batch1 = [r["batch1_ms"] for r in d["rounds"]]
    rows = [
        ["one image, concurrency 1: p50", ratio("p50_ms"),
         f"{num(issue['p50_ms'], 2)} ms x ratio, minus the encoder's {num(issue['encoder_batch1_ms'], 2)}: "
         + projected("p50_scaled_over_encoder_batch1_ms", 2, " ms"),
         verdict("p50_scaled_over_encoder_batch1_ms", "p50_over_encoder_batch1_ms")],
        [f"one image: p50 minus the encoder's batch-1 time (probed around each pair: {num(min(batch1), 2)} - "
         f"{num(max(batch1), 2)} ms here)", ratio("p50_over_encoder_batch1_ms"),
         f"{num(issue['p50_ms'] - issue['encoder_batch1_ms'], 2)} ms x ratio: "
         + projected("p50_over_encoder_batch1_ms", 2, " ms"),
         verdict("p50_over_encoder_batch1_ms", "p50_over_encoder_batch1_ms")],
        ["concurrency 8: images/s", ratio("c8_images_per_s"),
         f"{num(issue['c8_images_per_s'], 0)} x ratio, over the encoder's "
         f"{num(issue['encoder_batch_images_per_s'], 0)}: " + projected("c8_over_encoder", 2),
         verdict("c8_over_encoder", "c8_over_encoder", higher=True)],
        ["concurrency 8: p99", ratio("c8_p99_ms"),
         f"{num(issue['c8_p99_ms'], 0)} ms x ratio: " + projected("c8_p99_ms", 1, " ms"),
         verdict("c8_p99_ms", "c8_p99_ms")],
    ]
    pairs = len(d["rounds"]) // 2
    header = ["measure", f"this tree / baseline `{d['baseline_commit'][:7]}`: median of {pairs} pairs of rounds "
              "(range)", "projected onto issue 24's machine: the issue's figure for the baseline x ratio (range)",
              "target (at the median)"]
    return table(header, rows) + source("service_baseline.json", "make bench-service-baseline", d)


def page_table() -> str:
    d = load("page.json")
    rows = [["photo chosen -> its card shown: median / p95", f"{num(d['median_ms'], 1)} / {num(d['p95_ms'], 1)} ms",
             f"median <= {d['target_median_ms']} ms: {met(d['median_ms'], d['target_median_ms'], False)}"],
            ["of which the request to `/v1/predict`: median", f"{num(d['request_median_ms'], 1)} ms", ""],
            ["the page's own work: median difference", f"{num(d['median_ms'] - d['request_median_ms'], 1)} ms", ""]]
    return table(["measure", "value", "target"], rows) + source("page.json", "make bench-page", d)


def scale_table() -> str:
    d = load("scale.json")
    cores = d["machine"].get("cores") or d["machine"].get("cpus", 2)  # `cpus` in files written before the run record
    rows = [
        [f"local engine (median of {d['engine_rounds']} runs)", f"{num(d['local_images_per_s'], 1)} img/s", ""],
        [f"Ray engine, a local {cores}-CPU cluster (median of {d['engine_rounds']} runs)",
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
    per_core = d["ray_images_per_s"] / cores
    sizing = [[f"{n:,} million", num(n * 1e6 / 86400, 0), str(-(-int(n * 1e6 / 86400) // int(per_core)))]
              for n in (10, 100)]
    text += (f"\n\nSizing from the Ray engine's rate, {num(per_core, 1)} img/s per core (driver overhead included):\n\n"
             + table(["images in 24 hours", "img/s needed", "cores"], sizing))
    return text + source("scale.json", "make bench-scale", d)


def formats_table() -> str:
    d = load("formats.json")
    kinds = {"WEBP-lossy-q90": "WebP q90", "HEIF": "HEIC/HEIF",
             "HEIF-rotated-exif6": "HEIC stored turned (EXIF orientation 6) vs the upright JPEG",
             "PNG-display-p3": "Display P3 PNG vs the sRGB JPEG"}
    rows = [[kinds.get(name, name) + (" (lossless)" if v["lossless"] else ""), num(v["min_cosine"], 4),
             num(v["mean_cosine"], 4), f">= {v['target']}: {met(v['min_cosine'], v['target'])}"]
            for name, v in d["cosine_to_jpeg"].items()]
    t = d["timings"]
    costs = [[f"recognising a file by its first bytes (`embed.images.sniff`): {name}", f"{num(us, 2)} us",
              f"< 100 us: {met(us, 100, False)}"] for name, us in t["sniff_us_per_file"].items()]
    costs += [
        ["listing a folder of 500 suffix-less files (each one's first bytes read), per file",
         f"{num(t['listing_us_per_suffixless_file'], 1)} us", ""],
        ["converting an embedded colour profile to sRGB (the 260 px crop)",
         f"{num(t['icc_to_srgb_ms_per_image_260px'], 2)} ms", ""],
        ["for scale: decoding and resizing a 1600 px JPEG (`load_pixels`)",
         f"{num(t['jpeg_1600px_load_pixels_ms'], 2)} ms", ""],
    ]
    header = [f"format (the same {d['photos']} photos)", "cosine to the JPEG's embedding: min", "mean", "target"]
    return (table(header, rows)
            + "\n\n" + table(["cost", "value", "target"], costs)
            + source("formats.json", f"make bench-formats; this run: python bench/formats_bench.py --photos {d['photos']}",
                     d))


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
    "encoder_workers": "encoder calls running at once (0: auto, one lane per encoder stream; N: N sessions)",
    "encoder_threads": "runtime threads per encoder session (0: all cores)",
    "max_pending": "images queued or decoding at once; beyond: 503 with Retry-After",
    "decode_threads": "image decode pool (0: all cores)",
    "runtime": "encoder runtime (`auto`: the fastest measured here among the variants interchangeable with the model's)",
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
    "heads": heads_table, "runtime": runtime_table, "runtime-pairs": runtime_pairs_table,
    "runtime-summary": runtime_summary, "formats": formats_table, "embed": embed_table, "service": service_table,
    "service-summary": lambda: service_table(SERVICE_SUMMARY),
    "service-speed": service_speed_text, "service-baseline": service_baseline_table,
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
