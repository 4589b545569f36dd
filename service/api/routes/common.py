"""What every router shares: the errors each route can answer, as OpenAPI `responses`."""

from __future__ import annotations

from collections import defaultdict

from service.api import schemas
from service.api.errors import ERRORS, ErrorCode as E

# Every error each route can give, per status, with the one error schema (docs/api.md#errors).
KEYS = (E.unauthorized, E.rate_limited)  # with API_KEYS / RATE_LIMIT_PER_MINUTE configured
BODY = (E.request_timeout, E.payload_too_large, E.validation_error)
MODEL = (E.too_much_work, E.client_busy, E.overloaded, E.timeout, E.shutting_down, E.not_ready,
         E.inference_failed, E.internal_error)
HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}},
}


def errors(*codes: E) -> dict[int | str, dict]:
    """The `responses` of a route that can answer with these error codes: per status, ErrorBody,
    which codes and when, an example of each, and the Retry-After or WWW-Authenticate header."""
    by_status: dict[int, list[E]] = defaultdict(list)
    for code in codes:
        by_status[ERRORS[code][0]].append(code)
    return {status: {
        "model": schemas.ErrorBody,
        "description": "; ".join(f"`{code}`: {ERRORS[code][1]}" for code in found),
        "content": {"application/json": {"examples": {
            code.value: {"summary": ERRORS[code][1], "value": {"error": code.value, "message": ERRORS[code][1]}}
            for code in found}}},
        **({"headers": HEADERS[status]} if status in HEADERS else {}),
    } for status, found in sorted(by_status.items())}
