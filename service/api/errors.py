"""Every error is JSON of one shape (ErrorBody); nothing a client sends becomes a 500."""

from __future__ import annotations

import logging
import math
from enum import StrEnum

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.errors import (ClientBusy, ClientDisconnected, InvalidInput, ModelNotReady, Music21Timeout,
                            Music21Unavailable, QueueFull, RequestTimeout, ShuttingDown, TooMuchWork)
from service.request_log import note



class ErrorCode(StrEnum):
    """Every `error` code an answer can carry, in one place (docs/api.md#errors): ErrorBody's
    enum in the OpenAPI document, and the statuses and meanings below document each route."""

    bad_request = "bad_request"
    cors_refused = "cors_refused"
    unauthorized = "unauthorized"
    not_found = "not_found"
    method_not_allowed = "method_not_allowed"
    request_timeout = "request_timeout"
    payload_too_large = "payload_too_large"
    validation_error = "validation_error"
    too_much_work = "too_much_work"
    too_complex = "too_complex"
    client_busy = "client_busy"
    rate_limited = "rate_limited"
    headers_too_large = "headers_too_large"
    client_closed_request = "client_closed_request"
    inference_failed = "inference_failed"
    internal_error = "internal_error"
    overloaded = "overloaded"
    timeout = "timeout"
    shutting_down = "shutting_down"
    not_ready = "not_ready"


# code -> (status, when): what docs/api.md#errors says, for the OpenAPI document
ERRORS: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.bad_request: (400, "the server cannot parse the HTTP request itself"),
    ErrorCode.cors_refused: (400, "a CORS preflight from an origin not in CORS_ORIGINS"),
    ErrorCode.unauthorized: (401, "API keys are configured and the request has none or a wrong one"),
    ErrorCode.not_found: (404, "no such endpoint"),
    ErrorCode.method_not_allowed: (405, "the endpoint exists, the method does not"),
    ErrorCode.request_timeout: (408, "no body bytes for BODY_TIMEOUT_S while the body is incomplete"),
    ErrorCode.payload_too_large: (413, "the body is over the endpoint's limit"),
    ErrorCode.validation_error: (422, "the body breaks the schema (`fields` says where), or is not JSON or UTF-8"),
    ErrorCode.too_much_work: (422, "the request alone needs longer than REQUEST_TIMEOUT_S, however idle the model"),
    ErrorCode.too_complex: (422, "a music21 call took longer than MUSIC21_TIMEOUT_S"),
    ErrorCode.client_busy: (429, "this client already holds CLIENT_MAX_QUEUE_SIZE items of this model (Retry-After)"),
    ErrorCode.rate_limited: (429, "over RATE_LIMIT_PER_MINUTE for this key or address (Retry-After)"),
    ErrorCode.headers_too_large: (431, "request line and headers over MAX_HEADER_BYTES"),
    ErrorCode.client_closed_request: (499, "the client left before its answer (logged only; nobody reads it)"),
    ErrorCode.inference_failed: (500, "the model failed to run on this request's batch"),
    ErrorCode.internal_error: (500, "a bug: the server failed to process the request"),
    ErrorCode.overloaded: (503, "the queue is full, or the work ahead would not finish before the deadline (Retry-After)"),
    ErrorCode.timeout: (503, "no answer within REQUEST_TIMEOUT_S (Retry-After)"),
    ErrorCode.shutting_down: (503, "the server is stopping and this request could not finish in time (Retry-After)"),
    ErrorCode.not_ready: (503, "the model (or the music21 workers) is not loaded yet (Retry-After)"),
}

MAX_FIELDS = 5  # validation errors listed in one answer
MAX_MESSAGE_CHARS = 300  # of each; nothing a client sent is echoed beyond this

log = logging.getLogger(__name__)


def error_response(status: int, code: ErrorCode | str, message: str, headers: dict[str, str] | None = None,
                   fields: list[dict] | None = None) -> JSONResponse:
    code = ErrorCode(code).value  # a code outside the enum is a bug, caught by the tests
    note(error=code)  # the access line and the request counters say which error it was
    body = {"error": code, "message": message}
    if fields is not None:
        body["fields"] = fields
    return JSONResponse(body, status_code=status, headers=headers)


def _clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _where(loc) -> str:
    return ".".join(str(part) for part in loc)


# The service's own errors (service/errors.py) and the code each answers with; its status is the
# code's (ERRORS). The typed endpoints answer in ErrorBody's shape, the v2 protocol in its own.
SERVICE_ERRORS: dict[type[Exception], ErrorCode] = {
    InvalidInput: ErrorCode.validation_error, TooMuchWork: ErrorCode.too_much_work,
    Music21Timeout: ErrorCode.too_complex, ClientBusy: ErrorCode.client_busy, QueueFull: ErrorCode.overloaded,
    Music21Unavailable: ErrorCode.not_ready, ModelNotReady: ErrorCode.not_ready, RequestTimeout: ErrorCode.timeout,
    ShuttingDown: ErrorCode.shutting_down, ClientDisconnected: ErrorCode.client_closed_request,
}


def service_error(exc: Exception, retry_after_s: int) -> tuple[int, ErrorCode, str, dict[str, str] | None]:
    """(status, code, message, headers) of one of the service's errors. Retry-After goes with
    429 and 503: the configured one, or longer when admission estimated the work ahead."""
    code = next(c for kind, c in SERVICE_ERRORS.items() if isinstance(exc, kind))  # ClientBusy before QueueFull
    status = ERRORS[code][0]
    message = f"this tune is too complex to process: {exc}" if code is ErrorCode.too_complex else str(exc)
    headers = None
    if status in (429, 503):
        headers = {"Retry-After": str(max(retry_after_s, math.ceil(getattr(exc, "retry_after_s", None) or 0)))}
    return status, code, message, headers


def answer(exc: Exception, retry_after_s: int) -> JSONResponse:
    status, code, message, headers = service_error(exc, retry_after_s)
    if isinstance(exc, InvalidInput):
        fields = [{"loc": ["body", exc.field], "message": _clip(message)}]
        return error_response(status, code, f"body.{exc.field}: {fields[0]['message']}", fields=fields)
    return error_response(status, code, message, headers=headers)


def install(app: FastAPI, retry_after_s: int) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        fields = [{"loc": [_clip(str(part), 64) if isinstance(part, str) else part for part in e["loc"]],
                   "message": _clip(e["msg"])} for e in errors[:MAX_FIELDS]]
        message = "; ".join(f"{_where(f['loc'])}: {f['message']}" for f in fields)
        if len(errors) > MAX_FIELDS:
            message += f" (and {len(errors) - MAX_FIELDS} more errors)"
        return error_response(422, "validation_error", message, fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ClientDisconnect):  # the body never came (the client left, or the body timeout)
            return await client_left(request, exc.__cause__)
        if exc.status_code == 400:  # a body FastAPI could not even parse (e.g. not UTF-8): still a body error
            message = f"body: {exc.detail}"
            return error_response(422, "validation_error", message, fields=[{"loc": ["body"], "message": str(exc.detail)}])
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def client_left(_: Request, exc: ClientDisconnect) -> JSONResponse:
        # Raised by request.body() in the guarded routes (api/middleware.py's GuardedJSONRoute,
        # the v2 infer route), inside the exception middleware: the client left, or the body
        # timeout closed the connection (which already answered 408). Nobody reads this answer;
        # without this handler each one was logged as an unhandled error with its traceback.
        return error_response(499, "client_closed_request", "the client closed the connection before its body ended")

    async def service(_: Request, exc: Exception) -> JSONResponse:
        return answer(exc, retry_after_s)

    for kind in SERVICE_ERRORS:
        app.add_exception_handler(kind, service)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if type(exc).__module__.startswith("onnxruntime"):
            # A failed graph run fails the requests of its batch; the batcher lives on.
            log.error("inference failed on %s: %s", request.url.path, exc)
            return error_response(500, "inference_failed", "the model failed to run on this request's batch")
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server failed to process this request")
