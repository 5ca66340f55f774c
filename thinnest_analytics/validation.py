"""Checks shared by the schemas that accept free-form JSON from callers."""

import json
from typing import Any


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
