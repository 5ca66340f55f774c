"""Load test (not a test of the suite): sustained ingestion from several clients
— batches through ``POST /api/traces`` and OpenTelemetry exports through
``POST /api/otel/v1/traces`` — while a signed-in operator reads dashboard pages
and an API caller reads the summary, overview, channels and traces endpoints.
Loopback only, bounded in time. Reports requests, errors (must be 0) and p50/p95
latency per kind of request, and traces sent versus traces stored (must be
equal); prints a table and writes bench/load_results.json.

    python -m bench.load --duration 300 --clients 4

Needs PostgreSQL: LOAD_DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/thinnest_load), a throwaway database that is
dropped and created afresh, migrated, and dropped again at the end.
"""

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/thinnest_load"
BATCH = 100  # traces per ingestion request
OTLP_EVERY = 4  # an ingestion client sends an OpenTelemetry export after every 4th batch
API_READS = [
    ("api summary", "/api/agents/agent_0/summary?period=24h"),
    ("api overview", "/api/analytics/overview?period=24h"),
    ("api channels", "/api/analytics/channels?period=7d"),
    ("api traces", "/api/agents/agent_1/traces?limit=20"),
]
PAGES = [
    ("page overview", "/?period=24h"),
    ("page performance", "/agents/agent_0/performance/?period=24h"),
    ("page traces", "/traces/?period=24h"),
    ("page conversations", "/conversations/?period=24h"),
]


def _recreate_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    with psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    with psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}" WITH (FORCE)')


class Recorder:
    """Latencies and failures per kind of request, from every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)

    def call(
        self, conn: http.client.HTTPConnection, kind: str, method: str, path: str, body=None, headers=None
    ):
        """One request on a kept-alive connection; a failure is recorded, not raised."""
        started = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            payload = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            status, payload = None, repr(exc).encode()
        elapsed = (time.perf_counter() - started) * 1000
        with self.lock:
            self.samples[kind].append(elapsed)
            if status != 200:
                self.errors[kind].append(f"{status} {payload[:200]!r}")
        return status


def _otlp_export(trace_id: str, agent: str) -> bytes:
    """One agent turn as OTLP JSON: the agent span, an LLM call and a tool call."""
    end = time.time_ns()
    start = end - 1_400_000_000

    def attrs(**values):
        return [
            {
                "key": k.replace("__", "."),
                "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v},
            }
            for k, v in values.items()
        ]

    root = trace_id[:16]
    spans = [
        {
            "traceId": trace_id,
            "spanId": root,
            "name": "invoke_agent Support",
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(end),
            "attributes": attrs(gen_ai__operation__name="invoke_agent", gen_ai__agent__id=agent),
        },
        {
            "traceId": trace_id,
            "spanId": trace_id[16:],
            "parentSpanId": root,
            "name": "chat gpt-4o-mini",
            "startTimeUnixNano": str(start + 10_000_000),
            "endTimeUnixNano": str(start + 900_000_000),
            "attributes": attrs(
                gen_ai__operation__name="chat",
                gen_ai__request__model="gpt-4o-mini",
                gen_ai__usage__input_tokens=420,
                gen_ai__usage__output_tokens=55,
            ),
        },
        {
            "traceId": trace_id,
            "spanId": trace_id[8:24],
            "parentSpanId": root,
            "name": "execute_tool lookup_order",
            "startTimeUnixNano": str(start + 900_000_000),
            "endTimeUnixNano": str(start + 1_300_000_000),
            "attributes": attrs(gen_ai__operation__name="execute_tool", gen_ai__tool__name="lookup_order"),
        },
    ]
    return json.dumps(
        {
            "resourceSpans": [
                {"resource": {"attributes": attrs(service__name=agent)}, "scopeSpans": [{"spans": spans}]}
            ]
        }
    ).encode()


def run_load(*, server, duration: float, clients: int, keys: dict[str, str], cookie: str, run: str) -> dict:
    from .datasets import traffic_item

    recorder = Recorder()
    sent: list[set[str]] = [set() for _ in range(clients)]
    stop = threading.Event()

    def ingest_client(number: int) -> None:
        conn = server.connection()
        rng = random.Random(number)
        headers = {"Authorization": f"Bearer {keys['ingest']}", "Content-Type": "application/json"}
        n = 0
        while time.monotonic() < deadline and not stop.is_set():
            now = datetime.now(UTC)
            items = [traffic_item(n + i, prefix=f"{run}-c{number}", rng=rng, now=now) for i in range(BATCH)]
            n += BATCH
            if (
                recorder.call(
                    conn, "ingest batch", "POST", "/api/traces", json.dumps({"traces": items}), headers
                )
                == 200
            ):
                sent[number].update(item["id"] for item in items)
            if n // BATCH % OTLP_EVERY == 0:
                trace_id = f"{rng.getrandbits(128):032x}"
                body = _otlp_export(trace_id, f"agent_{rng.randrange(10)}")
                status = recorder.call(conn, "otlp export", "POST", "/api/otel/v1/traces", body, headers)
                if status == 200:
                    sent[number].add(f"otel-{trace_id}")

    def reader(paths: list[tuple[str, str]], headers: dict) -> None:
        conn = server.connection()
        i = 0
        while time.monotonic() < deadline and not stop.is_set():
            kind, path = paths[i % len(paths)]
            recorder.call(conn, kind, "GET", path, headers=headers)
            i += 1

    # One batch first registers every agent the readers ask about.
    warm = [
        traffic_item(n, prefix=f"{run}-warm", rng=random.Random(0), now=datetime.now(UTC))
        for n in range(BATCH)
    ]
    headers = {"Authorization": f"Bearer {keys['ingest']}", "Content-Type": "application/json"}
    if (
        recorder.call(
            server.connection(), "ingest batch", "POST", "/api/traces", json.dumps({"traces": warm}), headers
        )
        == 200
    ):
        sent[0].update(item["id"] for item in warm)
    deadline = time.monotonic() + duration

    threads = [threading.Thread(target=ingest_client, args=(c,)) for c in range(clients)]
    threads.append(
        threading.Thread(target=reader, args=(API_READS, {"Authorization": f"Bearer {keys['read']}"}))
    )
    threads.append(threading.Thread(target=reader, args=(PAGES, {"Cookie": cookie})))
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
    return {
        "seconds": round(time.monotonic() - started, 1),
        "recorder": recorder,
        "sent": set().union(*sent),
    }


def _percentile(ordered: list[float], q: float) -> float:
    return round(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))], 1)


def report(recorder: Recorder, seconds: float) -> dict:
    kinds = {}
    for kind in sorted(recorder.samples):
        ordered = sorted(recorder.samples[kind])
        kinds[kind] = {
            "requests": len(ordered),
            "per_second": round(len(ordered) / seconds, 1),
            "errors": len(recorder.errors[kind]),
            "p50_ms": _percentile(ordered, 0.5),
            "p95_ms": _percentile(ordered, 0.95),
        }
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    parser.add_argument("--clients", type=int, default=4, help="ingestion clients (default 4)")
    parser.add_argument(
        "--output", default=str(ROOT / "bench" / "load_results.json"), help="where to write the results"
    )
    args = parser.parse_args()

    url = os.environ.get("LOAD_DATABASE_URL", DEFAULT_URL)
    os.environ["DATABASE_URL"] = url
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinnest_analytics.settings")
    sys.path.insert(0, str(ROOT))
    _recreate_database(url)
    from .__main__ import Server, _ensure_database

    _ensure_database(url)  # migrates
    import django

    django.setup()
    from django.db import connection, connections
    from django.test import Client

    from accounts.models import Role
    from accounts.services import api_key_create, organisation_get_or_create, user_create_or_update
    from audit.services import Actor

    org = organisation_get_or_create(slug="load")
    keys = {
        scope: api_key_create(
            organisation=org, name=scope, scopes=[scope], actor=Actor.system("load")
        ).raw_key
        for scope in ("ingest", "read")
    }
    user, _ = user_create_or_update(organisation=org, username="load-viewer", password=None, role=Role.VIEWER)
    browser = Client()
    browser.force_login(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"

    server = Server()
    try:
        print(
            f"load: {args.clients} ingestion clients + 1 API reader + 1 dashboard reader for {args.duration:.0f} s"
        )
        outcome = run_load(
            server=server,
            duration=args.duration,
            clients=args.clients,
            keys=keys,
            cookie=cookie,
            run=f"r{int(time.time())}",
        )
    finally:
        server.stop()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT public_id) FROM agents_trace WHERE organisation_id = %s",
            [org.pk],
        )
        stored, distinct = cursor.fetchone()
        cursor.execute(
            "SELECT coalesce(sum(traces), 0) FROM dashboard_hourlyrollup WHERE organisation_id = %s", [org.pk]
        )
        rolled_up = int(cursor.fetchone()[0])
    kinds = report(outcome["recorder"], outcome["seconds"])
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, shared with other work while measured",
        "seconds": outcome["seconds"],
        "ingestion_clients": args.clients,
        "batch_size": BATCH,
        "kinds": kinds,
        "requests": sum(k["requests"] for k in kinds.values()),
        "errors": sum(k["errors"] for k in kinds.values()),
        "traces_sent": len(outcome["sent"]),
        "traces_stored": stored,
        "traces_stored_distinct": distinct,
        "traces_in_rollups": rolled_up,
    }
    connections.close_all()
    _drop_database(url)
    _print(results, outcome["recorder"])
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    ok = results["errors"] == 0 and results["traces_sent"] == stored == distinct == rolled_up
    sys.exit(0 if ok else 1)


def _print(results: dict, recorder: Recorder) -> None:
    print(f"\n{'kind':<22}{'requests':>10}{'per s':>8}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}")
    for kind, r in results["kinds"].items():
        print(
            f"{kind:<22}{r['requests']:>10}{r['per_second']:>8}{r['errors']:>8}{r['p50_ms']:>9}{r['p95_ms']:>9}"
        )
    print(f"{'all':<22}{results['requests']:>10}{'':>8}{results['errors']:>8}")
    print(
        f"\ntraces sent {results['traces_sent']:,}, stored {results['traces_stored']:,} "
        f"({results['traces_stored_distinct']:,} distinct), in rollups {results['traces_in_rollups']:,}"
    )
    for kind, errors in recorder.errors.items():
        for error in errors[:3]:
            print(f"  {kind}: {error}")


if __name__ == "__main__":
    main()
