"""One error shape everywhere: ``{"error": {"code": ..., "message": ...}}`` with a fitting 4xx/5xx status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from embed.images import ImageError

# Status codes Starlette raises by itself (unknown route, wrong method) -> our codes.
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}

# ImageError.code (embed/images.py) -> HTTP status: an empty body is a bad request, the rest unprocessable.
IMAGE_STATUS = {"empty_file": 400, "decompression_bomb": 422, "not_an_image": 422, "corrupt_image": 422}


class ApiError(Exception):
    """An error answer: raise it anywhere in a request and the handler turns it into JSON."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def image_error(error: ImageError) -> ApiError:
    return ApiError(IMAGE_STATUS.get(error.code, 422), error.code, str(error))


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


async def on_api_error(request: Request, error: ApiError) -> JSONResponse:
    return error_response(error.status, error.code, error.message, error.headers)


async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(error.status_code, f"http_{error.status_code}")
    message = error.detail if isinstance(error.detail, str) else str(error.detail)
    if error.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs"
    return error_response(error.status_code, code, message, getattr(error, "headers", None))


async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in error.errors()]
    return error_response(422, "invalid_request", "; ".join(problems) or "invalid request")


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
