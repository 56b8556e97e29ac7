"""Driving the seller page in a real browser: the system's Chromium through Playwright, and the service on a
loopback port. Used by tests/test_page.py and bench/page_bench.py (so both measure the same page the same way).

Chromium is Debian's package (`apt-get install chromium`); Playwright is pointed at its executable and never
downloads a browser of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = os.environ.get("VINTED_TAGGER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CARD_DONE = ".card:not([aria-busy])"
MEASURE = "vt:chosen->card"  # the page's performance measure: photos chosen -> that photo's card shown


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install 'vinted-tagger[dev]')"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does this)"
    return None


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


@contextlib.contextmanager
def serve(model_dir: Path, settings=None, timeout_s: float = 120.0) -> Iterator[str]:
    """The real service (uvicorn, lifespan and all) on a free 127.0.0.1 port in a thread; yields its base URL."""
    import uvicorn

    from service.app import create_app

    config = uvicorn.Config(create_app(model_dir, settings), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="page-test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:  # set once the model is loaded and the socket listens
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start (see the log above)")
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def upload(name: str, data: bytes, mime: str = "image/jpeg") -> dict:
    """A file for Playwright's set_input_files, from bytes in memory."""
    return {"name": name, "mimeType": mime, "buffer": data}


def choose(page, files: list[dict], timeout_ms: float = 60_000) -> list:
    """Choose ``files`` in the page's file input and wait until each has its finished card; returns those
    cards (the newest are on top, in the order chosen)."""
    before = page.locator(CARD_DONE).count()
    page.set_input_files("#files", files)
    page.wait_for_function(
        "n => document.querySelectorAll('.card:not([aria-busy])').length >= n", arg=before + len(files),
        timeout=timeout_ms,
    )
    cards = page.locator(".card")
    return [cards.nth(i) for i in range(len(files))]


class RequestLog:
    """Every request a page makes from now on (documents, scripts, styles, images, fetches), and those its
    content policy stopped in the browser before they reached the network (Playwright reports them as
    requests that failed with "csp")."""

    def __init__(self, page):
        self.urls: list[str] = []
        self.blocked: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("requestfailed", lambda request: request.failure == "csp" and self.blocked.append(request.url))

    def left_service(self, base_url: str) -> list[str]:
        """The requests sent anywhere but the service's own host and port (blob:/data: stay in the page)."""
        own = urlsplit(base_url).netloc
        return [
            url
            for url in self.urls
            if urlsplit(url).scheme not in ("blob", "data") and urlsplit(url).netloc != own and url not in self.blocked
        ]


def save_small_png(page, path: Path, colours: int = 128) -> Path:
    """A full-page screenshot as a palette PNG: a fraction of the RGB file's size, still sharp text."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    small = image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, optimize=True)
    return path
