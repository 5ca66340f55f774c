"""Benchmarks (not tests): ingestion throughput, analytics latency at 100k and
10M traces, and percentile accuracy. Prints a table and writes bench/results.json.

    python -m bench                 # 100k data set
    python -m bench --size 100k,10m # both sizes (the 10M load takes several minutes once)
    python -m bench --otlp-only     # OTLP span ingestion against JSON ingestion only
    python -m bench --bytes-only    # bytes per OTLP trace, before and after span compaction
    python -m bench --size 1m --days 3 --api-only
                                    # 10M's raw rows per hour (13,900) in a few minutes' load:
                                    # the analytics endpoints alone
    python -m bench --retention-only --size 10m
                                    # retention of one day: its partitions dropped against
                                    # a day deleted in batches, with dashboard reads meanwhile

Needs PostgreSQL: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/thinnest_bench),
created and migrated if missing. The bytes figure loads a database of its own, dropped and
created anew each run: BENCH_BYTES_DATABASE_URL (default: BENCH_DATABASE_URL's name + "_bytes").
The retention figure deletes days of its data set, so it loads one in a database of its own,
again on each run: BENCH_RETENTION_DATABASE_URL (default: BENCH_DATABASE_URL's name +
"_retention"). Every number is measured in this run; ratios compare with baselines measured in
the same run.
"""

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from .posting import post_all

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/thinnest_bench"
SIZES = {"100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}
DAYS = 30  # days a data set spans unless --days says otherwise (bench.datasets.DAYS)


def _ensure_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, check=True, env=os.environ
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Daphne on loopback, as `make run` serves the app."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        # Loopback without TLS; capacity is measured, so the per-key request limit is off.
        env = dict(
            os.environ, LOG_LEVEL="ERROR", ALLOW_HTTP="true", INGEST_REQUESTS_PER_MINUTE="0", **(env or {})
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "thinnest_analytics.server",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-v",
                "0",
                "thinnest_analytics.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.3)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def get(self, path: str, key: str | None = None, conn=None) -> tuple[int, bytes]:
        conn = conn or self.connection()
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        response = conn.getresponse()
        return response.status, response.read()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]  # noqa: E731
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(pick(0.95), 2),
        "calls": len(ordered),
    }


# --- ingestion ------------------------------------------------------------------


def bench_ingestion(server: Server, *, clients: int, batches: int, size: int) -> dict:
    from django.db import connection

    from accounts.services import api_key_create, organisation_get_or_create
    from audit.services import Actor

    from .datasets import ingest_batches

    org = organisation_get_or_create(slug="bench-ingest")
    key = api_key_create(
        organisation=org, name="bench", scopes=["ingest"], actor=Actor.system("bench")
    ).raw_key
    seed = int(time.time())
    bodies = ingest_batches(clients=clients, batches=batches, size=size, seed=seed)
    # Warm up the server (imports, pool) with one small batch.
    warm = server.connection()
    warm.request(
        "POST",
        "/api/traces",
        body=json.dumps({"traces": [{"agent_id": "agent_0", "input": "warm"}]}),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    warm.getresponse().read()

    http_seconds, server_cpu = post_all(server, key, "/api/traces", "application/json", bodies)
    total = clients * batches * size

    # Baseline: psycopg COPY of the same rows into a bare table, no indexes.
    items = [t for mine in bodies for body in mine for t in json.loads(body)["traces"]]
    rows = [
        (
            org.pk,
            t["id"],
            t["session_id"],
            t["agent_id"],
            t["channel"],
            t["input"],
            t["reasoning"],
            t["output"],
            json.dumps(t["tool_calls"]),
            json.dumps(t["steps"]),
            t["model"],
            t["input_tokens"],
            t["output_tokens"],
            t["latency_ms"],
            t["status"],
            t["error"],
            t["created_at"],
        )
        for t in items
    ]
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_copy_traces")
        cursor.execute(
            """CREATE TABLE bench_copy_traces (organisation_id bigint, public_id text, session_id text, agent_id text,
               channel text, input text, reasoning text, output text, tool_calls jsonb, steps jsonb, model text,
               input_tokens bigint, output_tokens bigint, latency_ms integer, status text, error text, created_at timestamptz)"""
        )
    raw = connection.connection  # the psycopg connection under Django's
    started = time.perf_counter()
    with raw.cursor() as cursor, cursor.copy("COPY bench_copy_traces FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    raw.commit()
    copy_seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_copy_traces")

    # The physical limit: a COPY of the same traces (new ids, no steps, no
    # rollups) into the real traces table with all its indexes, rolled back.
    copy_real_seconds = _copy_into_traces(org, items)
    http_rate = total / http_seconds
    copy_rate = total / copy_seconds
    copy_real_rate = total / copy_real_seconds
    return {
        "traces": total,
        "clients": clients,
        "batch_size": size,
        "http_traces_per_s": round(http_rate),
        "copy_traces_per_s": round(copy_rate),
        "copy_real_table_traces_per_s": round(copy_real_rate),
        "http_to_copy_ratio": round(http_rate / copy_rate, 3),
        "http_to_copy_real_table_ratio": round(http_rate / copy_real_rate, 3),
        "server_cpu_us_per_trace": round(server_cpu / total * 1e6),
    }


def _copy_into_traces(org, items: list[dict]) -> float:
    """Seconds for a COPY of ``items`` into ``agents_trace`` (every index kept
    current), under fresh ids in the conversations ingestion created; rolled back."""
    from django.db import connection

    from agents.models import Agent, Session

    agents = dict(Agent.objects.filter(organisation=org).values_list("public_id", "pk"))
    sessions = dict(
        Session.objects.filter(organisation=org, public_id__in={t["session_id"] for t in items}).values_list(
            "public_id", "pk"
        )
    )
    now = datetime.now(UTC)
    rows = [
        (
            org.pk,
            agents[t["agent_id"]],
            sessions[t["session_id"]],
            f"{t['id']}-copy",
            t["channel"],
            "",
            t["input"],
            t["reasoning"],
            t["output"],
            json.dumps(t["tool_calls"]),
            len(t["tool_calls"]),
            t["model"],
            t["input_tokens"],
            t["output_tokens"],
            t["latency_ms"],
            None,
            "unpriced",
            t["status"],
            t["error"],
            "{}",
            t["created_at"],
            now,
        )
        for t in items
    ]
    columns = (
        "organisation_id, agent_id, session_id, public_id, channel, deployment_version, input, reasoning, output, "
        "tool_calls, tool_call_count, model, input_tokens, output_tokens, latency_ms, cost_usd, cost_source, "
        "status, error, metadata, created_at, received_at"
    )
    connection.ensure_connection()
    raw = connection.connection
    started = time.perf_counter()
    with raw.cursor() as cursor, cursor.copy(f"COPY agents_trace ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    seconds = time.perf_counter() - started
    raw.rollback()
    return seconds


# --- query latency ----------------------------------------------------------------

PLAIN_SUMMARY = """
SELECT count(*), count(*) FILTER (WHERE input <> '') + count(*) FILTER (WHERE output <> ''),
       sum(cost_usd), avg(latency_ms),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms), percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms),
       sum(input_tokens), sum(output_tokens), count(*) FILTER (WHERE tool_call_count > 0)
FROM agents_trace WHERE agent_id = %(agent)s AND created_at >= %(start)s AND created_at < %(end)s;
SELECT count(*), count(*) FILTER (WHERE error_count > 0) FROM agents_session
WHERE agent_id = %(agent)s AND started_at >= %(start)s AND started_at < %(end)s;
"""
PLAIN_OVERVIEW = """
SELECT count(*) FILTER (WHERE input <> '') + count(*) FILTER (WHERE output <> ''), sum(cost_usd), avg(latency_ms),
       count(DISTINCT agent_id)
FROM agents_trace WHERE organisation_id = %(org)s AND created_at >= %(start)s AND created_at < %(end)s;
SELECT count(*), count(*) FILTER (WHERE error_count > 0) FROM agents_session
WHERE organisation_id = %(org)s AND started_at >= %(start)s AND started_at < %(end)s;
"""
PLAIN_CHANNELS = """
SELECT channel, count(*) FILTER (WHERE input <> '') + count(*) FILTER (WHERE output <> ''), avg(latency_ms)
FROM agents_trace WHERE organisation_id = %(org)s AND created_at >= %(start)s AND created_at < %(end)s GROUP BY channel;
SELECT channel, count(*), count(*) FILTER (WHERE error_count > 0) FROM agents_session
WHERE organisation_id = %(org)s AND started_at >= %(start)s AND started_at < %(end)s GROUP BY channel;
"""
PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


def _timed_plain(sql: str, params: dict, calls: int) -> list[float]:
    from django.db import connection

    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for statement in filter(str.strip, sql.split(";")):
                cursor.execute(statement, params)
                cursor.fetchall()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def bench_queries(
    server: Server, *, size_label: str, traces: int, calls: int, plain_calls: int, days: int = DAYS
) -> dict:
    from accounts.services import api_key_create
    from audit.services import Actor

    from .datasets import load

    org, agents = load(slug=f"bench-{size_label}", traces=traces, days=days)
    key = api_key_create(organisation=org, name="bench", scopes=["read"], actor=Actor.system("bench")).raw_key
    agent = agents[0]
    conn = server.connection()
    results = {}
    for period, length in PERIODS.items():
        endpoints = {
            "summary": (f"/api/agents/{agent.public_id}/summary?period={period}", PLAIN_SUMMARY),
            "overview": (f"/api/analytics/overview?period={period}", PLAIN_OVERVIEW),
            "channels": (f"/api/analytics/channels?period={period}", PLAIN_CHANNELS),
        }
        for name, (path, plain_sql) in endpoints.items():
            server.get(path, key, conn)  # warm
            samples = []
            for _ in range(calls):
                started = time.perf_counter()
                status, body = server.get(path, key, conn)
                samples.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    raise RuntimeError(f"{path}: {status} {body[:200]!r}")
            now = datetime.now(UTC)
            params = {"agent": agent.pk, "org": org.pk, "start": now - length, "end": now}
            plain = _timed_plain(plain_sql, params, plain_calls)
            results[f"{name} {period}"] = {"api": _percentiles(samples), "plain_sql": _percentiles(plain)}
    return results


PAGES = [
    "/?period=24h",
    "/?period=7d",
    "/?period=30d",
    "/agents/{agent}/performance/?period=24h",
    "/agents/{agent}/performance/?period=30d",
    "/conversations/?period=30d",
    "/traces/?period=30d",
    # Lists as a click on a number opens them (an exact window, drill-down filters).
    "/conversations/?{day}&agent={agent}",
    "/conversations/?{day}&agent={agent}&status=failed",
    "/conversations/?{hour}",
    "/conversations/?{month}&sort=-cost",
    "/traces/?{day}&agent={agent}&sort=-latency",
    "/traces/?{week}&channel=voice&status=error",
    "/traces/?{month}&sort=-cost",
    "/traces/?{hour}&sort=-latency",
    # Filters the rollups do not know: counted from the rows (up to 10,000).
    "/traces/?period=30d&model=gpt-4o-mini&latency_min=1500",
    "/traces/?period=30d&q=order+%2342424",
    "/traces/?period=30d&q=order",
    "/conversations/?period=30d&q=order+%2342424",
    "/conversations/{conversation}/",
    "/traces/{trace}/",
    "/billing/",
]


def _range(start: datetime, end: datetime) -> str:
    from urllib.parse import urlencode

    from dashboard.filters import range_params

    return urlencode(range_params(start, end))


def bench_pages(server: Server, *, size_label: str, traces: int, calls: int, days: int = DAYS) -> dict:
    """Server time of each dashboard page, signed in as a viewer, through HTTP."""
    from django.test import Client

    from accounts.models import Role
    from accounts.services import user_create_or_update
    from agents.models import Session, Trace

    from .datasets import load

    org, agents = load(slug=f"bench-{size_label}", traces=traces, days=days, progress=False)
    user, _ = user_create_or_update(
        organisation=org, username=f"bench-{size_label}-viewer", password=None, role=Role.VIEWER
    )
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    latest = Trace.objects.filter(organisation=org).order_by("-created_at").first()
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    names = {
        "agent": agents[0].public_id,
        "trace": latest.public_id,
        "conversation": Session.objects.get(pk=latest.session_id).public_id,
        "hour": _range(hour, hour + timedelta(hours=1)),
        "day": _range(now - timedelta(days=1), now),
        "week": _range(now - timedelta(days=7), now),
        "month": _range(now - timedelta(days=30), now),
    }
    conn = server.connection()
    results = {}
    for template in PAGES:
        path = template.format(**names)
        samples = []
        for i in range(calls + 1):
            started = time.perf_counter()
            conn.request("GET", path, headers={"Cookie": cookie})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status}")
            if i:  # the first call warms caches
                samples.append((time.perf_counter() - started) * 1000)
        label = template
        for name in names:
            label = label.replace(f"{{{name}}}", f"<{name}>")
        results[label] = _percentiles(samples)
    return results


def bench_percentiles(*, size_label: str, traces: int, windows: int, days: int = DAYS) -> dict:
    from django.db import connection

    from dashboard import selectors
    from metrics.windows import Window

    from .datasets import load

    org, agents = load(slug=f"bench-{size_label}", traces=traces, days=days, progress=False)
    rng = random.Random(7)
    now = datetime.now(UTC)
    worst = {"p50": 0.0, "p95": 0.0}
    for _ in range(windows):
        agent = rng.choice(agents)
        length = timedelta(minutes=rng.randint(60, days * 24 * 60))
        start = (
            now
            - timedelta(days=days)
            + timedelta(seconds=rng.randint(0, int((timedelta(days=days) - length).total_seconds())))
        )
        window = Window(start, start + length)
        got = selectors.agent_summary(organisation=org, agent=agent, window=window)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms), percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms) "
                "FROM agents_trace WHERE agent_id = %s AND created_at >= %s AND created_at < %s AND latency_ms IS NOT NULL",
                [agent.pk, window.start, window.end],
            )
            exact50, exact95 = cursor.fetchone()
        for q, exact, estimate in (
            ("p50", exact50, got["p50_latency_ms"]),
            ("p95", exact95, got["p95_latency_ms"]),
        ):
            if exact:
                worst[q] = max(worst[q], abs(estimate - exact) / exact)
    return {
        "windows": windows,
        "worst_relative_error_p50": round(worst["p50"], 5),
        "worst_relative_error_p95": round(worst["p95"], 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="100k", help="comma-separated: 100k, 1m, 10m")
    parser.add_argument("--calls", type=int, default=50, help="API calls per endpoint and period")
    parser.add_argument(
        "--plain-calls",
        type=int,
        default=None,
        help="calls of the plain-SQL baseline (default: 50 at 100k, 5 above)",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=DAYS,
        help="days the traces are spread over, ending now (default 30); 1m over 3 days has the raw rows "
        "per hour of 10m over 30 days, so a window's partial hours cost what they cost at 10m",
    )
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument(
        "--api-only",
        action="store_true",
        help="only the analytics endpoints (no ingestion, percentiles or pages)",
    )
    parser.add_argument("--ingest-batches", type=int, default=40, help="batches of 500 per client")
    parser.add_argument("--windows", type=int, default=200, help="random windows for the percentile check")
    parser.add_argument("--page-calls", type=int, default=20, help="requests per dashboard page")
    parser.add_argument("--ingest-only", action="store_true", help="only the ingestion benchmark")
    parser.add_argument(
        "--otlp-requests", type=int, default=20, help="OTLP requests of 100 traces per client"
    )
    parser.add_argument(
        "--otlp-only",
        action="store_true",
        help="only OTLP ingestion (and JSON ingestion of the same traces, to compare)",
    )
    parser.add_argument(
        "--bytes-only",
        action="store_true",
        help="only bytes per OTLP trace, per table, before and after span compaction",
    )
    parser.add_argument(
        "--bytes-traces", type=int, default=20_000, help="OTLP traces loaded for the bytes figure"
    )
    parser.add_argument(
        "--pages-only",
        action="store_true",
        help="only the dashboard pages (no ingestion, API or percentiles)",
    )
    parser.add_argument(
        "--retention-only",
        action="store_true",
        help="only retention of one day, partitions dropped against a batched DELETE, with reads meanwhile",
    )
    args = parser.parse_args()

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    if args.retention_only:
        parsed = urlparse(url)
        url = os.environ.get(
            "BENCH_RETENTION_DATABASE_URL", parsed._replace(path=f"{parsed.path}_retention").geturl()
        )
    os.environ["DATABASE_URL"] = url
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinnest_analytics.settings")
    sys.path.insert(0, str(ROOT))
    _ensure_database(url)
    import django

    django.setup()

    results: dict = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores",
    }
    if args.bytes_only:
        results["storage"] = _bench_storage(url, args.bytes_traces)
        _write(results)
        return
    server = Server()
    if args.retention_only:
        try:
            results["retention"] = _bench_retention(server, args)
        finally:
            server.stop()
        _write(results)
        return
    try:
        if args.api_only:
            args.skip_ingest = True
        if not (args.skip_ingest or args.pages_only):
            from .otlp import bench_otlp, print_otlp

            results["otlp_ingestion"] = bench_otlp(server, clients=2, requests=args.otlp_requests)
            print_otlp(results["otlp_ingestion"])
        if args.otlp_only:
            args.size = ""
        if not (args.skip_ingest or args.pages_only or args.otlp_only):
            results["ingestion"] = bench_ingestion(server, clients=2, batches=args.ingest_batches, size=500)
            _print_ingestion(results["ingestion"])
        if args.ingest_only:
            args.size = ""
        results["queries"] = {}
        results["percentiles"] = {}
        results["pages"] = {}
        for label in [s.strip().lower() for s in args.size.split(",") if s.strip()]:
            traces = SIZES[label]
            days = args.days
            if days != DAYS:
                label = f"{label}-{days}d"  # a data set of its own
            plain_calls = args.plain_calls or (50 if traces <= 100_000 else 5)
            if not args.pages_only:
                results["queries"][label] = bench_queries(
                    server,
                    size_label=label,
                    traces=traces,
                    calls=args.calls,
                    plain_calls=plain_calls,
                    days=days,
                )
                if args.api_only:
                    _print_queries(label, results["queries"][label], None)
                    continue
                results["percentiles"][label] = bench_percentiles(
                    size_label=label, traces=traces, windows=args.windows, days=days
                )
                _print_queries(label, results["queries"][label], results["percentiles"][label])
            results["pages"][label] = bench_pages(
                server, size_label=label, traces=traces, calls=args.page_calls, days=days
            )
            _print_pages(label, results["pages"][label])
    finally:
        server.stop()
    if not (args.skip_ingest or args.pages_only or args.otlp_only or args.ingest_only):
        results["storage"] = _bench_storage(url, args.bytes_traces)
    _write(results)


def _bench_retention(server: Server, args) -> dict:
    from .retention import bench_retention, print_retention

    results = {}
    for label in [s.strip().lower() for s in args.size.split(",") if s.strip()]:
        key = label if args.days == DAYS else f"{label}-{args.days}d"
        results[key] = bench_retention(
            server,
            size_label=key,
            traces=SIZES[label],
            days=args.days,
            idle_calls=300,
            percentiles=_percentiles,
        )
        print_retention(key, results[key])
    return results


def _bench_storage(url: str, traces: int) -> dict:
    from .storage import bench_bytes, print_bytes

    parsed = urlparse(url)
    default = parsed._replace(path=f"{parsed.path}_bytes").geturl()
    result = bench_bytes(
        Server, url=os.environ.get("BENCH_BYTES_DATABASE_URL", default), root=ROOT, traces=traces
    )
    print_bytes(result)
    return result


def _write(results: dict) -> None:
    out = ROOT / "bench" / "results.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous.update(
        {k: v for k, v in results.items() if k not in ("queries", "percentiles", "pages", "retention")}
    )
    for section in ("queries", "percentiles", "pages", "retention"):
        previous.setdefault(section, {}).update(results.get(section, {}))
    out.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


def _print_ingestion(r: dict) -> None:
    print(f"\ningestion: {r['traces']:,} traces, {r['clients']} clients, batches of {r['batch_size']}")
    print(f"  HTTP API (rollups included) {r['http_traces_per_s']:>10,} traces/s")
    print(f"  psycopg COPY, bare table    {r['copy_traces_per_s']:>10,} traces/s")
    print(f"  psycopg COPY, traces table  {r['copy_real_table_traces_per_s']:>10,} traces/s")
    print(f"  ratio HTTP / COPY bare      {r['http_to_copy_ratio']:>10}")
    print(f"  ratio HTTP / COPY traces    {r['http_to_copy_real_table_ratio']:>10}")
    print(f"  server CPU per trace        {r['server_cpu_us_per_trace']:>10,} µs")


def _print_pages(label: str, pages: dict) -> None:
    print(f"\ndashboard pages at {label} traces, server time through HTTP (ms)")
    print(f"  {'page':<64}{'p50':>10}{'p95':>10}")
    for path, r in pages.items():
        print(f"  {path:<64}{r['p50_ms']:>10}{r['p95_ms']:>10}")


def _print_queries(label: str, queries: dict, percentiles: dict | None) -> None:
    print(f"\nqueries at {label} traces (ms)")
    print(
        f"  {'endpoint':<16}{'API p50':>10}{'API p95':>10}{'plain p50':>12}{'plain p95':>12}{'speed-up':>10}"
    )
    for name, r in queries.items():
        speedup = r["plain_sql"]["p50_ms"] / r["api"]["p50_ms"] if r["api"]["p50_ms"] else 0
        print(
            f"  {name:<16}{r['api']['p50_ms']:>10}{r['api']['p95_ms']:>10}{r['plain_sql']['p50_ms']:>12}{r['plain_sql']['p95_ms']:>12}{speedup:>9.1f}x"
        )
    if percentiles is None:
        return
    print(
        f"  worst percentile error over {percentiles['windows']} windows: p50 {percentiles['worst_relative_error_p50']:.3%}, "
        f"p95 {percentiles['worst_relative_error_p95']:.3%}"
    )


if __name__ == "__main__":
    main()
