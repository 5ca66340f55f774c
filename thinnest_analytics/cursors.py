"""Opaque keyset cursors: the sort key of a page's last row, base64-encoded JSON."""

import base64
import binascii
import json
from typing import Any

from .errors import ApiError


def cursor_encode(*values: Any) -> str:
    raw = json.dumps(list(values)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_decode(cursor: str) -> list:
    """The values ``cursor_encode`` packed; a 400 for anything this API did not hand out."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list):
            raise ValueError
        return values
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid_cursor() from None


def invalid_cursor() -> ApiError:
    return ApiError(400, "invalid_cursor", "cursor is not one this API returned; start without it")
