"""Bytes per trace: 3-span OTLP traces (``bench.otlp``'s, ~300-character
prompt and completion) loaded through ``POST /api/otel/v1/traces`` into a
fresh database, measured per table (heap, TOAST, indexes) before and after
``manage.py compact_spans --older-than 0``.

Every table is counted, the rollups included: the figures are what the
database grew by from its freshly migrated state, divided by the traces
loaded. Sizes are taken after ``VACUUM FULL`` and ``ANALYZE``, so they are
the live rows' bytes (what a table tends to once autovacuum lets new rows
reuse the space old ones left)."""

import os
import random
import resource
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime
from urllib.parse import urlparse

import psycopg

from .otlp import otlp_request, trace_spec
from .posting import post_all

# A table's daily partitions are counted under the table's name.
SIZES_SQL = """
SELECT coalesce(parent.relname, c.relname),
       sum(pg_relation_size(c.oid))::bigint,
       sum(coalesce(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0))::bigint,
       sum(pg_indexes_size(c.oid))::bigint,
       sum(pg_total_relation_size(c.oid))::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
LEFT JOIN pg_class parent ON parent.oid = i.inhparent
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'm')
GROUP BY 1
"""


def fresh_database(url: str, root) -> None:
    """Drop and create the database of ``url``, then migrate it."""
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    _manage(url, root, "migrate", "--no-input", "-v0")


def _manage(url: str, root, *args: str) -> str:
    env = dict(os.environ, DATABASE_URL=url)
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=root, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def _settled(conn, wait_seconds: float) -> bool:
    """Wait until every transaction older than now has ended, in any database of
    the server (their snapshots keep deleted and updated rows from being
    vacuumed away); False if one is still running after ``wait_seconds``."""
    mine = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    deadline = time.monotonic() + wait_seconds
    while True:
        oldest = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()[0]
        if oldest >= mine:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1)


def table_sizes(url: str, *, full: bool = True, wait_seconds: float = 300) -> dict[str, dict[str, int]]:
    """Bytes of every table of the database: heap, TOAST, indexes and all-in,
    after VACUUM (FULL when ``full``) and ANALYZE, once the rows deleted or
    updated before can be vacuumed away."""
    with psycopg.connect(url, autocommit=True) as conn:
        if not _settled(conn, wait_seconds):
            print("  (a long transaction elsewhere kept some dead rows: sizes may be high)")
        conn.execute("VACUUM (FULL, ANALYZE)" if full else "VACUUM (ANALYZE)")
        return {
            name: {"heap": heap, "toast": toast, "indexes": indexes, "total": total}
            for name, heap, toast, indexes, total in conn.execute(SIZES_SQL).fetchall()
        }


def _grown(after: dict, before: dict, traces: int) -> dict[str, dict[str, float]]:
    """Bytes per trace each table grew by, largest first; tables that did not grow are left out."""
    grown = {}
    for name, sizes in after.items():
        base = before.get(name, {})
        per = {k: (v - base.get(k, 0)) / traces for k, v in sizes.items()}
        if per["total"] > 0:
            grown[name] = {k: round(v) for k, v in per.items()}
    return dict(sorted(grown.items(), key=lambda item: -item[1]["total"]))


def bench_bytes(server_factory, *, url: str, root, traces: int = 20_000, per_request: int = 100) -> dict:
    """Load ``traces`` OTLP traces into a fresh database through HTTP; bytes
    per trace per table before and after compacting their received spans."""
    fresh_database(url, root)
    empty = table_sizes(url)
    key = _manage(url, root, "create_api_key", "bench-bytes", "--name", "bench", "--scopes", "ingest").strip()
    rng = random.Random(11)
    now = datetime.now(UTC)
    specs = [trace_spec(n, rng=rng, now=now, prefix="bytes") for n in range(traces)]
    bodies = [otlp_request(specs[i : i + per_request]) for i in range(0, traces, per_request)]
    server = server_factory({"DATABASE_URL": url})
    try:
        started = time.perf_counter()
        post_all(
            server, key, "/api/otel/v1/traces", "application/x-protobuf", [bodies[c::2] for c in range(2)]
        )
        load_seconds = time.perf_counter() - started
    finally:
        server.stop()
    as_loaded = table_sizes(url, full=False)
    loaded = table_sizes(url)
    cpu_before = _children_cpu()
    started = time.perf_counter()
    out = _compact(url, root)
    compact_seconds = time.perf_counter() - started
    compact_cpu = _children_cpu() - cpu_before
    compacted = table_sizes(url)
    before, after = _grown(loaded, empty, traces), _grown(compacted, empty, traces)
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "traces": traces,
        "spans_per_trace": 3,
        "load_seconds": round(load_seconds, 1),
        "compact_seconds": round(compact_seconds, 2),
        # CPU of the command's process (Django's start included), not PostgreSQL's.
        "compact_cpu_us_per_trace": round(compact_cpu / traces * 1e6),
        "compact_output": out.strip().splitlines()[-1:] if out else [],
        # After a plain VACUUM: what the files hold as loaded (rows updated while
        # ingesting leave their old versions' space behind, for new rows to reuse).
        "bytes_per_trace_as_loaded": sum(t["total"] for t in _grown(as_loaded, empty, traces).values()),
        "bytes_per_trace_before": sum(t["total"] for t in before.values()),
        "bytes_per_trace_after": sum(t["total"] for t in after.values()),
        "before": before,
        "after": after,
        "packing": bench_packing(specs[:2000]),
    }


def bench_packing(specs: list[dict]) -> dict:
    """Bytes and CPU per trace of the ways received spans could be kept, on the
    spans of ``specs`` and the trace and steps derived from them (in memory)."""
    import msgspec

    from otel import compaction
    from otel.mapping import trace_draft
    from otel.otlp import PROTOBUF, request_decode

    class NoPrices:
        def cost(self, *args):
            return None

    now = datetime.now(UTC)
    _, decoded = request_decode(body=otlp_request(specs), content_type=PROTOBUF, content_encoding="")
    by_trace: dict[str, list] = {}
    for span in decoded.spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    stored = msgspec.json.Decoder().decode  # the texts as the database gives them back
    encode = msgspec.json.Encoder().encode
    traces = []
    for spans in by_trace.values():
        draft = trace_draft(spans, NoPrices())
        steps = {
            step["span_id"]: {k: stored(encode(step[k])) for k in ("input", "output", "attributes")}
            for step in draft.steps
        }
        texts = compaction.Texts({"input": draft.input, "output": draft.output, "error": draft.error}, steps)
        rows = [
            {**{c: getattr(s, c) for c in compaction.SPAN_COLUMNS[:-1]}, "received_at": now} for s in spans
        ]
        traces.append((rows, texts))
    nothing = compaction.Texts({}, {})

    def document(rows, texts) -> bytes:
        packed = compaction.spans_pack(rows, texts)
        unpacker = zlib.decompressobj(-15, zdict=compaction.ZDICT)
        return unpacker.decompress(packed[1:]) + unpacker.flush()

    def deflated(doc: bytes, zdict: bool) -> bytes:
        packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, **({"zdict": compaction.ZDICT} if zdict else {}))
        return packer.compress(doc) + packer.flush()

    def per_trace(fn) -> tuple[float, float]:
        """(bytes, CPU µs) per trace, the CPU the median of three runs."""
        runs, size = [], 0
        for _ in range(3):
            started = time.process_time()
            size = sum(len(fn(rows, texts)) for rows, texts in traces)
            runs.append(time.process_time() - started)
        return size / len(traces), sorted(runs)[1] / len(traces) * 1e6

    forms = {
        "rows (attributes, resource, events as JSON)": lambda rows, texts: b"".join(
            encode([r["attributes"], r["resource"], r["events"]]) for r in rows
        ),
        "packed, every text kept": lambda rows, texts: document(rows, nothing),
        "packed, every text kept, deflate": lambda rows, texts: deflated(document(rows, nothing), False),
        "packed, every text kept, deflate + dictionary": lambda rows, texts: deflated(
            document(rows, nothing), True
        ),
        "packed, texts referenced": lambda rows, texts: document(rows, texts),
        "packed, texts referenced, deflate": lambda rows, texts: deflated(document(rows, texts), False),
        "packed, texts referenced, deflate + dictionary (kept)": compaction.spans_pack,
    }
    out = {}
    for name, fn in forms.items():
        size, _ = per_trace(fn)
        out[name] = {"bytes": round(size)}
    _, pack_us = per_trace(compaction.spans_pack)
    packed = [compaction.spans_pack(rows, texts) for rows, texts in traces]
    runs = []
    for _ in range(3):
        started = time.process_time()
        for (_rows, texts), p in zip(traces, packed, strict=True):
            compaction.spans_unpack(p, texts)
        runs.append(time.process_time() - started)
    kept = out["packed, texts referenced, deflate + dictionary (kept)"]
    kept["pack_cpu_us"] = round(pack_us)
    kept["read_cpu_us"] = round(sorted(runs)[1] / len(traces) * 1e6)
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _compact(url: str, root) -> str:
    try:
        return _manage(url, root, "compact_spans", "--older-than", "0")
    except subprocess.CalledProcessError as exc:
        if "Unknown command" in (exc.stderr or ""):
            return ""
        raise


def print_bytes(r: dict) -> None:
    print(
        f"\nbytes per trace: {r['traces']:,} OTLP traces of {r['spans_per_trace']} spans, every table "
        "(rollups included), after VACUUM FULL, ANALYZE"
    )
    for label, tables in (("before compaction", r["before"]), ("after compaction", r["after"])):
        print(f"  {label:<34}{'heap':>8}{'TOAST':>8}{'indexes':>9}{'total':>8}")
        for name, t in tables.items():
            if t["total"] >= 1:
                print(f"    {name:<32}{t['heap']:>8,}{t['toast']:>8,}{t['indexes']:>9,}{t['total']:>8,}")
        print(f"    {'all tables':<32}{'':>25}{sum(t['total'] for t in tables.values()):>8,}")
    print(
        f"  as loaded (plain VACUUM, before compaction): {r['bytes_per_trace_as_loaded']:,} bytes per trace"
    )
    print("  ways to keep the received spans, per trace (in memory, 2,000 traces):")
    for name, p in r["packing"].items():
        cpu = f"  pack {p['pack_cpu_us']} µs, read {p['read_cpu_us']} µs of CPU" if "pack_cpu_us" in p else ""
        print(f"    {name:<56}{p['bytes']:>6,} bytes{cpu}")
    print(
        f"  compact_spans --older-than 0: {r['compact_seconds']} s, "
        f"{r['compact_cpu_us_per_trace']} µs of its CPU per trace; {' '.join(r['compact_output'])}"
    )
