"""Every figure an installation shows, written as JSON, so two releases can be
compared on the same database (tests/test_partition_upgrade.py).

Run as a script, with one release's tree as the working directory and on
``PYTHONPATH`` and the product's settings::

    python -P tests/figures.py PLAN.json OUT.json
    python -P tests/figures.py send PLAN.json REQUESTS.json

``PLAN.json`` holds an API key with the ``read``, ``admin`` and ``ingest``
scopes, the fixed windows to read and, optionally, the sections to dump (all by
default). ``send`` posts each of ``REQUESTS.json``'s ``{"path", "body"}`` (OTLP
JSON) and stops at the first answer that is no success. The script uses only
what every release has: the public HTTP API (through Django's test client, so
no server is needed) and raw SQL over the tables the ORM names. It never asks
for a ``period`` (its window moves with the clock between two runs), and it
leaves out what is no figure: surrogate ids of rollup rows and the opaque
pagination cursors.
"""

import json
import sys
from pathlib import Path

# The sections of a dump, each compared on its own.
SECTIONS = (
    "counts",
    "row_checksums",
    "hourly_rollups",
    "daily_rollups",
    "agents",
    "summaries",
    "overviews",
    "channels",
    "timeseries",
    "voice",
    "version_comparisons",
    "trace_lists",
    "trace_details",
    "otel_counts",
    "otel_spans",
    "otel_trace_details",
)
# The raw tables whose rows are checksummed, by (app label, model name).
RAW_MODELS = {"traces": ("agents", "Trace"), "steps": ("agents", "TraceStep"), "scores": ("agents", "Score")}
ROLLUP_KEY = "organisation_id, agent_id, channel, deployment_version, bucket_start"
ORGANISATION = "(organisation)"


def _table(label: str, model: str) -> str:
    from django.apps import apps

    return apps.get_model(label, model)._meta.db_table


def _sql(statement: str, params: tuple = ()) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


def _exact_json(text: str):
    """JSON text from PostgreSQL with its numbers kept as written: a float
    would hide a change of scale or a last digit."""
    return json.loads(text, parse_float=str)


def _columns(table: str) -> list[str]:
    return [
        name
        for (name,) in _sql(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY column_name",
            (table,),
        )
    ]


def counts() -> dict:
    tables = {name: _table(*model) for name, model in RAW_MODELS.items()}
    tables["conversations"] = _table("agents", "Session")
    return {name: _sql(f'SELECT count(*) FROM "{table}"')[0][0] for name, table in tables.items()}


def row_checksums() -> dict:
    """Per raw table and column, an md5 over the column's text in id order: a
    difference names the column. A layout may add columns; the comparison is
    over the columns of the older one."""
    out = {}
    for name, model in RAW_MODELS.items():
        table = _table(*model)
        columns = _columns(table)
        digests = ", ".join(
            f"md5(coalesce(string_agg(coalesce(\"{c}\"::text, '\\N'), E'\\x1f' ORDER BY id), ''))"
            for c in columns
        )
        row = _sql(f'SELECT {digests} FROM "{table}"')[0]
        out[name] = dict(zip(columns, row, strict=True))
    return out


def rollups(model: str) -> dict:
    """Every row, all columns but the surrogate id, by its key (a difference names the bucket)."""
    table = _table("metrics", model)
    rows = [
        _exact_json(text)
        for (text,) in _sql(f"SELECT (to_jsonb(r) - 'id')::text FROM \"{table}\" r ORDER BY {ROLLUP_KEY}")
    ]
    return {"/".join(str(row[k]) for k in ROLLUP_KEY.split(", ")): row for row in rows}


def otel_trace_ids() -> list[str]:
    return [t for (t,) in _sql(f'SELECT trace_id FROM "{_table("otel", "ReceivedTrace")}" ORDER BY trace_id')]


def otel_counts(spans: dict[str, dict]) -> dict:
    """Received traces, their spans and log records as the API returns them,
    the spans still rows and the traces whose spans are packed (on the
    received trace before packed spans had a table of their own)."""
    received = _table("otel", "ReceivedTrace")
    if "compacted_spans" in _columns(received):
        packed = f'SELECT count(*) FROM "{received}" WHERE compacted_spans IS NOT NULL'
    else:
        packed = f'SELECT count(*) FROM "{_table("otel", "CompactedSpans")}"'
    return {
        "received_traces": len(spans),
        "spans": sum(len(s["spans"]) for s in spans.values()),
        "log_records": sum(len(s["log_records"]) for s in spans.values()),
        "span_rows": _sql(f'SELECT count(*) FROM "{_table("otel", "ReceivedSpan")}"')[0][0],
        "packed_traces": _sql(packed)[0][0],
    }


class Api:
    def __init__(self, key: str) -> None:
        from django.test import Client

        self.client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    def get(self, path: str, *, not_found: bool = False, **params) -> dict:
        """The JSON answer; with ``not_found``, a 404 is ``{"status": 404}``."""
        answer = self.client.get(path, {k: v for k, v in params.items() if v is not None})
        if not_found and answer.status_code == 404:
            return {"status": 404}
        if answer.status_code != 200:
            raise SystemExit(f"GET {path} {params}: {answer.status_code} {answer.content[:500]!r}")
        return _exact_json(answer.content.decode())

    def post(self, path: str, body: dict) -> None:
        answer = self.client.post(path, json.dumps(body), content_type="application/json")
        if answer.status_code != 200 or b"rejected" in answer.content:
            raise SystemExit(f"POST {path}: {answer.status_code} {answer.content[:500]!r}")


def send(plan_path: str, requests_path: str) -> None:
    import django

    django.setup()
    api = Api(json.loads(Path(plan_path).read_text())["key"])
    for request in json.loads(Path(requests_path).read_text()):
        api.post(request["path"], request["body"])


def main(plan_path: str, out_path: str) -> None:
    import django

    django.setup()
    plan = json.loads(Path(plan_path).read_text())
    api = Api(plan["key"])
    windows: dict[str, list[str]] = plan["windows"]

    agents = sorted(api.get("/api/agents")["agents"], key=lambda a: a["id"])
    agent_ids = [a["id"] for a in agents]

    def per_window(path: str, **params) -> dict:
        return {
            name: api.get(path, **params, **{"from": start, "to": end})
            for name, (start, end) in windows.items()
        }

    def trace_lists() -> dict:
        lists = {}
        start, end = plan["list_window"]
        for agent_id in agent_ids:
            items, pages, cursor = [], 0, None
            while True:
                page = api.get(
                    f"/api/agents/{agent_id}/traces", limit=100, cursor=cursor, **{"from": start, "to": end}
                )
                items += page["traces"]
                pages += 1
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            lists[agent_id] = {"pages": pages, "traces": items}
        return lists

    def trace_details() -> dict:
        public_ids = [
            p for (p,) in _sql(f'SELECT public_id FROM "{_table("agents", "Trace")}" ORDER BY public_id')
        ]
        return {p: api.get(f"/api/traces/{p}") for p in public_ids[:: plan["sample_every"]]}

    otel_ids = [f"otel-{t}" for t in otel_trace_ids()]
    spans: dict[str, dict] = {}

    def otel_spans() -> dict:
        if not spans:
            spans.update({p: api.get(f"/api/traces/{p}/spans") for p in otel_ids})
        return spans

    sections = {
        "counts": counts,
        "row_checksums": row_checksums,
        "hourly_rollups": lambda: rollups("HourlyRollup"),
        "daily_rollups": lambda: rollups("DailyRollup"),
        "agents": lambda: agents,
        "summaries": lambda: {a: per_window(f"/api/agents/{a}/summary") for a in agent_ids},
        "overviews": lambda: per_window("/api/analytics/overview"),
        "channels": lambda: {
            ORGANISATION: per_window("/api/analytics/channels"),
            **{a: per_window("/api/analytics/channels", agent_id=a) for a in agent_ids},
        },
        "timeseries": lambda: {
            ORGANISATION: per_window("/api/analytics/timeseries"),
            **{a: per_window("/api/analytics/timeseries", agent_id=a) for a in agent_ids},
        },
        "voice": lambda: {a: per_window(f"/api/agents/{a}/voice") for a in agent_ids},
        # The demo deploys v3 a few days in: windows before it compare v2 with an empty v3.
        "version_comparisons": lambda: {
            a: per_window(f"/api/agents/{a}/versions/compare", a="v2", b="v3") for a in agent_ids
        },
        "trace_lists": trace_lists,
        "trace_details": trace_details,
        "otel_counts": lambda: otel_counts(otel_spans()),
        "otel_spans": otel_spans,
        # A trace whose local root never arrived was never derived: 404.
        "otel_trace_details": lambda: {p: api.get(f"/api/traces/{p}", not_found=True) for p in otel_ids},
    }
    assert tuple(sections) == SECTIONS
    dump = {name: sections[name]() for name in plan.get("sections", SECTIONS)}
    Path(out_path).write_text(json.dumps(dump, indent=1, sort_keys=True))


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(*sys.argv[2:])
    else:
        main(*sys.argv[1:])
