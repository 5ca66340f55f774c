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


class _SqliteLatencySketch:
    """SQLite's ``ta_latency_sketch`` aggregate (``rollups.LatencySketch``)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []

    def step(self, x: float | None) -> None:
        if x is not None:
            self.latencies.append(x)

    def finalize(self) -> str:
        from .sketch import sketch_of

        return json.dumps(sketch_of(self.latencies))


def _register_sqlite_functions(sender, connection, **kwargs) -> None:
    """SQLite twins of the PostgreSQL functions (``sketch.POSTGRES_FUNCTIONS``)."""
    if connection.vendor == "sqlite":
        raw = connection.connection
        raw.create_function("ta_sketch_merge", 2, _sqlite_sketch_merge, deterministic=True)
        raw.create_function("ta_latency_bucket", 1, _sqlite_latency_bucket, deterministic=True)
        raw.create_aggregate("ta_latency_sketch", 1, _SqliteLatencySketch)


class MetricsConfig(AppConfig):
    name = "metrics"

    def ready(self) -> None:
        connection_created.connect(_register_sqlite_functions)
