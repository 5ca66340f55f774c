"""A window's statements are compiled once per shape and bound to each read's
organisation, agent and instants (PostgreSQL): a read of the same shape for
another organisation, agent or time counts only its own rows."""

from datetime import UTC, datetime, timedelta

import pytest

from .conftest import postgres_only, trace

pytestmark = [postgres_only(), pytest.mark.django_db]

HOUR = datetime(2026, 3, 6, 14, tzinfo=UTC)


def _send(client, times: list[datetime], agent: str = "agent_abc123") -> None:
    items = [
        trace(
            id=f"{agent}-{at.isoformat()}",
            agent_id=agent,
            session_id=f"s-{agent}-{i}",
            created_at=at.isoformat(),
        )
        for i, at in enumerate(times)
    ]
    assert client.post("/api/traces", {"traces": items}).status_code == 200


def _traces(client, start: datetime, end: datetime, agent: str = "agent_abc123") -> int:
    answer = client.get(f"/api/agents/{agent}/summary", {"from": start.isoformat(), "to": end.isoformat()})
    assert answer.status_code == 200, answer.content
    return answer.json()["total_traces"]


# Partial first hour, two whole hours, partial last hour: raw rows and hourly rollups.
START, END = HOUR + timedelta(minutes=30), HOUR + timedelta(hours=3, minutes=20)
INSIDE = [
    HOUR + timedelta(minutes=45),
    HOUR + timedelta(hours=1, minutes=5),
    HOUR + timedelta(hours=3, minutes=10),
]
OUTSIDE = [HOUR + timedelta(minutes=10), HOUR + timedelta(hours=3, minutes=40)]


def test_the_same_window_of_another_organisation_counts_only_its_traces(tenant, outsider):
    _send(tenant.api("ingest"), INSIDE + OUTSIDE)
    _send(outsider.api("ingest"), INSIDE[:1])
    assert _traces(tenant.api("read"), START, END) == 3
    assert _traces(outsider.api("read"), START, END) == 1


def test_the_same_window_of_another_agent_counts_only_its_traces(tenant, ingest, reader):
    _send(ingest, INSIDE + OUTSIDE)
    _send(ingest, INSIDE[1:], agent="agent_other")
    assert _traces(reader, START, END) == 3
    assert _traces(reader, START, END, agent="agent_other") == 2


def test_a_window_of_the_same_shape_at_another_time_counts_its_own_traces(ingest, reader):
    _send(ingest, INSIDE + OUTSIDE)
    assert _traces(reader, START, END) == 3
    later = timedelta(hours=1)
    assert _traces(reader, START + later, END + later) == 2  # 17:10 and 17:40; 15:05 is out
    earlier = timedelta(minutes=25)
    assert _traces(reader, START - earlier, END - earlier) == 3  # 14:10, 14:45 and 15:05
