"""On PostgreSQL a batch costs a fixed handful of round trips, whatever its
size: the head (pipelined), one statement for traces, steps and scores, one
pipeline that writes the conversations' totals and reads what the new rows add
to the rollups, and one statement that upserts the rollups."""

from contextlib import contextmanager

import psycopg
import pytest

from .conftest import postgres_only, trace

pytestmark = [postgres_only()]


@pytest.fixture
def round_trips(monkeypatch):
    """The statements sent, grouped by round trip: a pipeline's statements travel together."""
    trips: list[list[str]] = []
    pipelined: list[list[str]] = []
    execute = psycopg.Cursor.execute
    pipeline = psycopg.Connection.pipeline

    def counted(self, query, *args, **kwargs):
        if pipelined:
            pipelined[-1].append(str(query))
        else:
            trips.append([str(query)])
        return execute(self, query, *args, **kwargs)

    @contextmanager
    def counted_pipeline(self):
        pipelined.append([])
        try:
            with pipeline(self) as p:
                yield p
        finally:
            trips.append(pipelined.pop())

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    monkeypatch.setattr(psycopg.Connection, "pipeline", counted_pipeline)
    return trips


def _batch(prefix: str, **fields) -> list[dict]:
    return [
        trace(id=f"{prefix}{n}", session_id=f"s{n // 4}", agent_id=f"agent_{n // 4 % 3}", **fields)
        for n in range(500)
    ]


def test_a_batch_of_500_takes_four_round_trips(ingest, round_trips):
    assert ingest.post("/api/traces", {"traces": _batch("t", evaluation_score=0.5)}).status_code == 200
    round_trips.clear()  # the first batch also registers agents and audits them
    assert ingest.post("/api/traces", {"traces": _batch("u", evaluation_score=0.5)}).status_code == 200
    ingest_trips = [trip for trip in round_trips if any("agents_" in q or "rollup" in q for q in trip)]
    assert len(ingest_trips) == 4, ingest_trips
