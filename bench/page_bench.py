"""Benchmark the seller page in a real browser: from choosing one photo to its card shown, 50 times.

    python bench/page_bench.py [--model artifacts/model] [--images ../shared/data/clothing/images.zip] [--runs 50]

Starts `python -m service` on a free 127.0.0.1 port (as bench/service_bench.py does), opens its page in
headless Chromium (Debian's package, through Playwright, as the browser tests do) and chooses one stand-in
photo at a time in the file input. The time is the page's own performance measure "vt:chosen->card": from
the input's change event to that photo's card filled in (the request to POST /v1/predict included). The
page is cleared between photos, outside the measured span. Without ../shared/data the photos are the
synthetic demo images instead (recorded in the result). Writes bench/results/page.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # page_driver: the browser helpers the page tests use
sys.path.insert(0, str(ROOT))  # devtools/ (never installed): the demo images

from page_driver import MEASURE, choose, launch, missing_browser, upload  # noqa: E402
from service_bench import DEFAULT_IMAGES, DEFAULT_MODEL, Server, percentile, sample_images  # noqa: E402
from report import machine, write_results  # noqa: E402  (bench/, this script's folder)

WARM_UP = 3  # choices before the timed ones: the browser's first layout and fetch, not the steady state
TARGET_MEDIAN_MS = 150


def demo_images(count: int) -> list[bytes]:
    from devtools.demo_data import make_rows, render_jpeg

    rows = make_rows(np.random.default_rng(0), count, set())
    return [render_jpeg(row, 0, i) for i, row in enumerate(rows)]


def time_choices(base_url: str, images: list[bytes], runs: int) -> tuple[list[float], list[float], str]:
    """(chosen -> card shown ms, request ms) for ``runs`` photos, and the browser's version."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(base_url + "/")
        for i in range(WARM_UP + runs):
            (card,) = choose(page, [upload(f"photo-{i}.jpg", images[i % len(images)])])
            if card.get_attribute("data-state") != "ok":
                raise RuntimeError(f"photo {i} was not analysed: {card.inner_text()}")
            page.click("#clear")
        shown = page.evaluate(f"performance.getEntriesByName('{MEASURE}').map(m => m.duration)")
        requests = page.evaluate(
            "performance.getEntriesByType('resource').filter(r => r.name.includes('/v1/predict')).map(r => r.duration)"
        )
        version = browser.version
        browser.close()
    return shown[WARM_UP:], requests[WARM_UP:], version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "page.json")
    args = parser.parse_args()
    reason = missing_browser()
    if reason:
        print(f"page_bench: {reason}", file=sys.stderr)
        return 1
    if not (args.model / "model.json").is_file():
        print(f"page_bench: no trained model in {args.model}; train one with `classify train`", file=sys.stderr)
        return 1
    if args.images.exists():
        images, source = sample_images(args.images, args.runs), f"{args.images.name}: {args.runs} stand-in photos"
    else:
        print(f"page_bench: {args.images} not found; timing synthetic demo images instead", file=sys.stderr)
        images, source = demo_images(args.runs), "synthetic demo images (../shared/data absent)"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as temp:
        server = Server(args.model, Path(temp))
        try:
            server.wait_ready()
            model_id = server.get_json("/readyz")["model_id"]
            started = time.perf_counter()
            shown, requests, browser = time_choices(f"http://127.0.0.1:{server.port}", images, args.runs)
            seconds = time.perf_counter() - started
        finally:
            server.stop()
    result = {
        "median_ms": percentile(shown, 50),
        "p95_ms": percentile(shown, 95),
        "target_median_ms": TARGET_MEDIAN_MS,
        "n": len(shown),
        "max_ms": round(max(shown), 2),
        "request_median_ms": percentile(requests, 50),
        "request_p95_ms": percentile(requests, 95),
        "measure": f"performance.measure('{MEASURE}'): file input change -> that photo's card filled in",
        "images": source,
        "model_id": model_id,
        "browser": f"Chromium {browser}, headless, Playwright",
        "seconds": round(seconds, 1),
        "load_avg": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in os.getloadavg()]},
        "machine": machine(),
    }
    write_results(args.out, result)
    print(f"| {'measure':<34} | {'value':>9} | {'target':>8} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 10}|")
    print(f"| {'chosen -> card shown, median (ms)':<34} | {result['median_ms']:>9} | {'<= 150':>8} |")
    print(f"| {'chosen -> card shown, p95 (ms)':<34} | {result['p95_ms']:>9} | {'':>8} |")
    print(f"| {'of which the request, median (ms)':<34} | {result['request_median_ms']:>9} | {'':>8} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
