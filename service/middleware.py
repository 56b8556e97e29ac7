"""Per-request plumbing as one plain ASGI middleware: request id, access log line, request metrics
(service/metrics.py), last-resort 500, and the content policy on HTML pages (service/page.py).

Plain ASGI (not BaseHTTPMiddleware) keeps the per-request cost to a few microseconds and never buffers
bodies. Any exception that reaches it becomes a logged 500 JSON answer, so no request can take the
process down or leave a client without a response.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from service.errors import error_body
from service.metrics import route_of
from service.page import with_content_policy

REQUEST_ID_HEADER = "x-request-id"
# Echo a caller's id only when it is short and plain, so log lines cannot be forged or bloated.
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_log = logging.getLogger("service.access")
log = logging.getLogger("service")


def request_id_from(scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if SAFE_REQUEST_ID.match(text):
                return text
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app, metrics=None):
        self.app, self.metrics = app, metrics  # service.metrics.Metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        response = {"status": None}

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                headers = with_content_policy([*headers, (b"x-request-id", request_id.encode())])
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in request %s %s %s", request_id, scope["method"], scope["path"])
            if response["status"] is None:
                response["status"] = 500
                try:
                    await send_internal_error(send_with_id)
                except Exception:  # the client is gone; nothing left to tell it
                    pass
        finally:
            elapsed = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.request(route_of(scope), scope["method"], response["status"] or 0, elapsed)
            access_log.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": response["status"],
                        "images": state.get("images", 0),
                        "ms": round(elapsed * 1000, 2),
                    }
                )
            )


async def send_internal_error(send) -> None:
    body = json.dumps(error_body("internal_error", "internal server error; it was logged")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})
