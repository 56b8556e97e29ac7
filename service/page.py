"""The seller page: GET / and its assets (service/static/, package data), and the same-origin-only content
policy that every HTML page the service sends carries (the page, /docs and /redoc).

The policy is what keeps the docs offline for real: ReDoc's bundle shows its logo from a CDN, and under
``img-src 'self'`` the browser never asks for it. Inline scripts and styles stay allowed because FastAPI's
docs pages use them; the seller page itself has none.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from embed.images import accept_attribute

STATIC_DIR = Path(__file__).parent / "static"
CONTENT_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",  # blob: the previews of the chosen photos
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
).encode()

router = APIRouter()


ACCEPT_MARK = "{{photo_types}}"  # in index.html: the file input's accept list, from embed.images.PHOTO_FORMATS


@router.get("/", include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(page_html())


@functools.cache
def page_html() -> str:
    """index.html with the file input accepting exactly the photo formats the service decodes."""
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace(ACCEPT_MARK, accept_attribute())


def add_page(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def with_content_policy(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A response's headers, plus CONTENT_POLICY when it is an HTML page (RequestContext calls this)."""
    if any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers):
        return [*headers, (b"content-security-policy", CONTENT_POLICY)]
    return headers
