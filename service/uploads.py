"""Read the images of a predict request, enforcing size and count limits while the body streams in.

Nothing is buffered past a limit: a declared Content-Length over the limit is refused before reading, and
a body without one (chunked) is refused as soon as it crosses the limit. A file over the per-file limit in
a multi-file request is dropped as it streams (its bytes are counted, not kept) and becomes that file's
own error, so the other files still get answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from embed.images import DecodeLimits, check_cost, inspect_cost
from service.errors import ApiError
from service.settings import MB, Settings

FIELD = b"files"
RAW_TYPES = (b"image/", b"application/octet-stream")
USAGE = (
    "send multipart/form-data with the images in field 'files', or one image as the body with an image/* content type"
)


@dataclass
class Upload:
    filename: str | None
    data: bytes = b""
    error: ApiError | None = None  # a problem with this file alone, found while reading it


def decode_work(data: bytes, size: int, limits: DecodeLimits) -> int:
    """How heavy an upload is to decode (DecodeCost.work), from its header; ImageError when its header is
    unusable or it is over the service's decode limits."""
    cost = inspect_cost(data, draft_size=size)
    check_cost(cost, limits)
    return cost.work


def too_large(size_limit: int, what: str, code: str) -> ApiError:
    return ApiError(413, code, f"{what} is larger than the limit of {size_limit / MB:g} MB")


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ApiError(400, "bad_request", f"invalid Content-Length {value!r}")
    return int(value)


async def read_uploads(request: Request, settings: Settings) -> list[Upload]:
    media_type, options = parse_options_header(request.headers.get("content-type"))
    length = declared_length(request)
    if length == 0:
        raise ApiError(400, "empty_body", f"the request body is empty; {USAGE}")
    try:
        if media_type == b"multipart/form-data":
            if length is not None and length > settings.max_body_bytes:
                raise too_large(settings.max_body_bytes, "the request body", "request_too_large")
            return await read_multipart(request, options, settings)
        if media_type.startswith(RAW_TYPES):
            if length is not None and length > settings.max_file_bytes:
                raise too_large(settings.max_file_bytes, "the image", "file_too_large")
            return [Upload(None, await read_body(request, settings.max_file_bytes))]
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away before sending the whole body") from None
    shown = media_type.decode("latin-1") or "none"
    raise ApiError(415, "unsupported_media_type", f"content type {shown!r} is not supported; {USAGE}")


async def read_body(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit, "the image", "file_too_large")
    if not body:
        raise ApiError(400, "empty_body", f"the request body is empty; {USAGE}")
    return bytes(body)


async def read_multipart(request: Request, options: dict, settings: Settings) -> list[Upload]:
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "multipart/form-data without a boundary")
    parts = PartCollector(settings)
    received = 0
    try:
        parser = MultipartParser(boundary, parts.callbacks())
        async for chunk in request.stream():
            received += len(chunk)
            if received > settings.max_body_bytes:
                raise too_large(settings.max_body_bytes, "the request body", "request_too_large")
            parser.write(chunk)
        parser.finalize()
    except (FormParserError, ValueError) as error:
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {error}") from None
    if not parts.uploads:
        raise ApiError(400, "no_files", f"no file in the request; {USAGE}")
    return parts.uploads


class PartCollector:
    """python-multipart callbacks that keep the parts named ``files``, each up to the per-file limit."""

    def __init__(self, settings: Settings):
        self.max_files, self.max_bytes = settings.max_files, settings.max_file_bytes
        self.uploads: list[Upload] = []
        self._header_name = self._header_value = self._disposition = b""
        self._part: Upload | None = None  # None while inside a part we skip
        self._chunks: list[bytes] = []
        self._size = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._disposition, self._part, self._chunks, self._size = b"", None, [], 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if options.get(b"name") != FIELD:
            return  # other form fields are ignored (their size still counts toward the body limit)
        if len(self.uploads) >= self.max_files:
            raise ApiError(413, "too_many_files", f"more than {self.max_files} files in one request")
        filename = options.get(b"filename")
        self._part = Upload(filename.decode("utf-8", "replace") if filename is not None else None)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part is None or part.error is not None:
            return
        self._size += end - start
        if self._size > self.max_bytes:
            part.error = too_large(self.max_bytes, "the file", "file_too_large")
            self._chunks = []
            return
        self._chunks.append(data[start:end])

    def on_part_end(self) -> None:
        if self._part is not None:
            self._part.data = b"".join(self._chunks)
            self.uploads.append(self._part)
        self._part, self._chunks = None, []
