import json

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _sqlite_sketch_merge(a: str | None, b: str | None) -> str:
    from .sketch import merge_into

    merged = merge_into(merge_into({}, json.loads(a) if a else None), json.loads(b) if b else None)
    return json.dumps({k: v for k, v in merged.items() if v})


def _sqlite_latency_bucket(x: float | None) -> str | None:
    from .sketch import bucket_of

    return None if x is None else bucket_of(x)


def _register_sqlite_functions(sender, connection, **kwargs) -> None:
    """SQLite twins of the PostgreSQL functions (``sketch.POSTGRES_FUNCTIONS``)."""
    if connection.vendor == "sqlite":
        raw = connection.connection
        raw.create_function("ta_sketch_merge", 2, _sqlite_sketch_merge, deterministic=True)
        raw.create_function("ta_latency_bucket", 1, _sqlite_latency_bucket, deterministic=True)


class MetricsConfig(AppConfig):
    name = "metrics"

    def ready(self) -> None:
        connection_created.connect(_register_sqlite_functions)
