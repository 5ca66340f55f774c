"""Checks and field types shared by the API's schemas."""

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator


def json_value_check(value: Any, *, max_depth: int, max_bytes: int) -> Any:
    """``value`` if the database can store it and it is reasonably sized: nested at
    most ``max_depth`` levels, no NUL characters, at most ``max_bytes`` as JSON."""

    def walk(item: Any, depth: int) -> None:
        if depth > max_depth:
            raise ValueError(f"is nested deeper than {max_depth} levels")
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("contains a NUL character, which cannot be stored")
        elif isinstance(item, dict):
            for k, v in item.items():
                walk(k, depth + 1)
                walk(v, depth + 1)
        elif isinstance(item, list):
            for v in item:
                walk(v, depth + 1)

    walk(value, 0)
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > max_bytes:
        raise ValueError(f"is {size:,} bytes as JSON; the limit is {max_bytes:,}")
    return value


def _utc(value: datetime) -> datetime:
    """Naive means UTC; any offset is converted, and only years the database can
    hold sensibly (1970–2200) are accepted."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not 1970 <= value.year <= 2200:
        raise ValueError("must be between 1970 and 2200")
    return value


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]
