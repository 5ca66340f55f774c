"""Each rollup counter has one definition over raw rows (``metrics.rollups``):
ingestion counts the rows it has just written with it, the rebuild counts a
day's rows with it and a window's partial hours are read with it. A changed
definition therefore shows in all three at once."""

import pytest
from django.core.management import call_command
from django.db.models import Count, Q

from metrics.models import COUNTERS, HourlyRollup
from metrics.rollups import (
    CONVERSATION_FACTS,
    SCORE_FACTS,
    TRACE_FACTS,
    USAGE_FACTS,
    VOICE_CALL_FACTS,
    conversation_facts,
    trace_facts,
)

from .conftest import trace

ALL_FACTS = (TRACE_FACTS, CONVERSATION_FACTS, SCORE_FACTS, VOICE_CALL_FACTS, USAGE_FACTS)
QUESTION = trace(input="When do you open?", output="", created_at="2026-03-06T14:30:00Z")
EDGES = {"from": "2026-03-06T14:15:00Z", "to": "2026-03-06T14:45:00Z"}  # within one hour: raw rows


def _replies_only() -> dict:
    """Another definition of ``messages``: replies only, not questions."""
    return trace_facts() | {"messages": Count("id", filter=~Q(output=""))}


def _failed_only() -> dict:
    """Another definition of ``conversations``: failed ones only."""
    return conversation_facts() | {"conversations": Count("id", filter=Q(error_count__gt=0))}


@pytest.fixture
def redefined(monkeypatch):
    """Change the definitions of two counters where they are defined, and only there."""

    def change() -> None:
        monkeypatch.setattr(TRACE_FACTS, "counters", _replies_only)
        monkeypatch.setattr(CONVERSATION_FACTS, "counters", _failed_only)

    return change


def _hour(tenant) -> HourlyRollup:
    return HourlyRollup.objects.get(organisation=tenant.organisation)


def test_every_counter_is_defined_once_over_raw_rows():
    names = [name for facts in ALL_FACTS for name in facts.counters()]
    assert len(names) == len(set(names))
    assert set(names) == set(COUNTERS)


def test_ingestion_counts_with_the_definitions(tenant, ingest, redefined):
    redefined()
    assert ingest.post("/api/traces", QUESTION).status_code == 200
    assert (_hour(tenant).messages, _hour(tenant).conversations) == (0, 0)


def test_the_rebuild_counts_with_the_definitions(tenant, ingest, redefined):
    assert ingest.post("/api/traces", QUESTION).status_code == 200
    assert (_hour(tenant).messages, _hour(tenant).conversations) == (1, 1)
    redefined()
    call_command("rebuild_rollups", "--from", "2026-03-06T00:00:00Z", "--to", "2026-03-07T00:00:00Z")
    assert (_hour(tenant).messages, _hour(tenant).conversations) == (0, 0)


def test_a_window_edge_is_read_with_the_definitions(tenant, ingest, reader, redefined):
    assert ingest.post("/api/traces", QUESTION).status_code == 200
    redefined()
    summary = reader.get("/api/agents/agent_abc123/summary", EDGES).json()
    assert (summary["total_messages"], summary["total_sessions"]) == (0, 0)
