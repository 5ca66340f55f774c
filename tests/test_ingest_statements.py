"""On PostgreSQL a batch costs a fixed handful of statements, whatever its size:
the head (pipelined), one statement for traces, steps and scores, one for
conversations and rollups."""

import psycopg
import pytest

from .conftest import postgres_only, trace

pytestmark = [postgres_only()]


@pytest.fixture
def statements(monkeypatch):
    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(self, query, *args, **kwargs):
        sent.append(str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    return sent


def test_a_batch_of_500_takes_six_statements(ingest, statements):
    items = [
        trace(id=f"t{n}", session_id=f"s{n // 4}", agent_id=f"agent_{n // 4 % 3}", evaluation_score=0.5)
        for n in range(500)
    ]
    assert ingest.post("/api/traces", {"traces": items}).status_code == 200
    statements.clear()  # the first batch also registers agents and audits them
    items = [trace(id=f"u{n}", session_id=f"s{n // 4}", agent_id=f"agent_{n // 4 % 3}") for n in range(500)]
    assert ingest.post("/api/traces", {"traces": items}).status_code == 200
    ingest_statements = [q for q in statements if "agents_" in q or "rollup" in q]
    assert len(ingest_statements) == 6, ingest_statements
