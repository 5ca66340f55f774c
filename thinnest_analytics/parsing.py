"""Reading request bodies: one strict JSON parser for every API handler (the
typed endpoints through the API's parser, ingestion and OTLP JSON directly).

Strict means what PostgreSQL and the API's numbers can hold: UTF-8 only, no
``NaN`` or ``Infinity`` (JSON has no such numbers), and each failure a 400 that
says what is wrong with the body. NUL characters are the caller's to check:
JSON carries them only escaped, so one search of the raw body decides."""

import json
from typing import Any

from .errors import ApiError


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def json_body(body: bytes, *, code: str = "malformed_json") -> Any:
    """``body`` as JSON, or an ``ApiError`` 400 with ``code`` naming the problem
    (with its line and column for a syntax error)."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, code, "the body is not UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            code,
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except RecursionError:
        raise ApiError(400, code, "the body is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, code, f"the body is not valid JSON: {exc}") from None
