"""Retention of one day, both ways, on a loaded data set: dropping the day's
partitions (what retention does on PostgreSQL for a day wholly before the
horizon) against deleting the next day, of the same size, in batches of 5,000
traces (the path before partitions, still the one for the day the horizon
falls in). Meanwhile another thread reads the summary and overview endpoints
through HTTP; their latency is compared with the same reads while nothing else
runs.

The data set loses those days: the next run loads it again."""

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .datasets import load

PERIODS = ("24h", "7d", "30d")


def _paths(agent_id: str) -> list[str]:
    return [
        path
        for period in PERIODS
        for path in (
            f"/api/agents/{agent_id}/summary?period={period}",
            f"/api/analytics/overview?period={period}",
        )
    ]


def _read(server, key: str, conn, path: str) -> float:
    started = time.perf_counter()
    status, body = server.get(path, key, conn)
    if status != 200:
        raise RuntimeError(f"{path}: {status} {body[:200]!r}")
    return (time.perf_counter() - started) * 1000


def _while_reading(
    server, key: str, paths: list[str], work: Callable[[], Any]
) -> tuple[float, list[float], Any]:
    """Run ``work`` while another thread reads ``paths`` in turn, from the
    moment it starts until it ends; returns its seconds, the reads' ms and its
    result."""
    samples: list[float] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        conn = server.connection()
        n = 0
        try:
            while not stop.is_set():
                samples.append(_read(server, key, conn, paths[n % len(paths)]))
                n += 1
        except BaseException as e:  # reported by the caller
            failures.append(e)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        started = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        thread.join()
    if failures:
        raise failures[0]
    return seconds, samples, result


def _traces_of(organisation, start: datetime, end: datetime) -> int:
    from agents.models import Trace

    return Trace.objects.filter(organisation=organisation, created_at__gte=start, created_at__lt=end).count()


def bench_retention(server, *, size_label: str, traces: int, days: int, idle_calls: int, percentiles) -> dict:
    from accounts.services import api_key_create
    from agents.models import Trace
    from agents.partitions import DAY, day_of, day_start, partitioned
    from agents.retention import BATCH_SIZE, retention_apply, traces_delete_in_batches
    from audit.services import Actor

    if not partitioned():
        raise RuntimeError("the raw tables are not partitioned: run the migrations")
    org, agents = load(slug=f"bench-{size_label}", traces=traces, days=days)
    key = api_key_create(organisation=org, name="bench", scopes=["read"], actor=Actor.system("bench")).raw_key
    paths = _paths(agents[0].public_id)
    first = (
        Trace.objects.filter(organisation=org).order_by("created_at").values_list("created_at", flat=True)[0]
    )
    dropped = day_of(first) + DAY  # the first whole day
    deleted = dropped + DAY  # the next, of the same size
    # The partial day before them goes first, untimed: a pass then has one day to drop.
    retention_apply(days=1, now=day_start(dropped) + DAY)

    conn = server.connection()
    for path in paths:
        _read(server, key, conn, path)  # warm
    idle = [_read(server, key, conn, paths[n % len(paths)]) for n in range(idle_calls)]

    dropped_traces = _traces_of(org, day_start(dropped), day_start(dropped + DAY))
    marks: list[float] = []
    started = time.perf_counter()
    drop_seconds, drop_reads, done = _while_reading(
        server,
        key,
        paths,
        lambda: retention_apply(
            days=1, now=day_start(deleted) + DAY, progress=lambda n: marks.append(time.perf_counter())
        ),
    )
    assert done.days_dropped == 1 and done.traces == dropped_traces, done

    deleted_traces = _traces_of(org, day_start(deleted), day_start(deleted + DAY))

    delete_seconds, delete_reads, (expired, _) = _while_reading(
        server,
        key,
        paths,
        lambda: traces_delete_in_batches(
            organisation=org, before=day_start(deleted + DAY), batch_size=BATCH_SIZE
        ),
    )
    assert expired.traces == deleted_traces, (expired, deleted_traces)
    return {
        "day_dropped": {
            "traces": dropped_traces,
            "seconds": round(drop_seconds, 2),
            "partitions_dropped_after_seconds": round(marks[0] - started, 2),
            "reads": percentiles(drop_reads),
        },
        "day_deleted_in_batches": {
            "traces": deleted_traces,
            "seconds": round(delete_seconds, 2),
            "reads": percentiles(delete_reads),
        },
        "reads_idle": percentiles(idle),
    }


def print_retention(label: str, r: dict) -> None:
    drop, batches, idle = r["day_dropped"], r["day_deleted_in_batches"], r["reads_idle"]
    print(f"\nretention of one day at {label} traces; summary and overview reads meanwhile (ms)")
    print(f"  {'':<36}{'traces':>10}{'seconds':>10}{'reads p50':>11}{'reads p95':>11}{'reads':>7}")
    print(f"  {'idle':<36}{'':>10}{'':>10}{idle['p50_ms']:>11}{idle['p95_ms']:>11}{idle['calls']:>7}")
    for name, x in (("partitions dropped", drop), ("batched DELETE, 5,000 per batch", batches)):
        print(
            f"  {name:<36}{x['traces']:>10,}{x['seconds']:>10}{x['reads']['p50_ms']:>11}"
            f"{x['reads']['p95_ms']:>11}{x['reads']['calls']:>7}"
        )
    print(
        f"  (the partitions were gone after {drop['partitions_dropped_after_seconds']} s; the rest is the "
        "traces' keys and the conversations left empty)"
    )
