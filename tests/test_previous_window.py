"""Cards compare with the previous window only when it can carry a change: it
is covered by data, and it has enough conversations (docs/metrics.md)."""

import html
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from .conftest import trace

pytestmark = pytest.mark.django_db
NOW = timezone.now()


def _conversations(ingest, prefix: str, count: int, start, end, agent_id: str = "agent_abc123") -> None:
    step = (end - start) / count
    batch = [
        trace(
            id=f"{prefix}{n}",
            session_id=f"{prefix}{n}",
            agent_id=agent_id,
            created_at=(start + step * n).isoformat(),
        )
        for n in range(count)
    ]
    assert ingest.post("/api/traces", {"traces": batch}).status_code == 200


def _change(body: str, metric: str) -> tuple[str, str]:
    """A card's change text and its hover title."""
    match = re.search(
        rf'data-metric="{metric}">.*?<div class="metric-change [a-z]+" title="([^"]*)">([^<]*)<', body, re.S
    )
    return match.group(2), html.unescape(match.group(1))


def test_a_covered_previous_window_with_enough_conversations_gives_real_changes(members, ingest):
    _conversations(ingest, "old", 1, NOW - timedelta(days=10), NOW - timedelta(days=9))
    _conversations(ingest, "prev", 40, NOW - timedelta(hours=47), NOW - timedelta(hours=25))
    _conversations(ingest, "now", 60, NOW - timedelta(hours=23), NOW - timedelta(hours=1))
    body = members["viewer"].get("/?period=24h").content.decode()
    assert _change(body, "total_conversations")[0] == "+50.0%"


def test_a_previous_window_with_few_conversations_shows_n_a_and_why(members, ingest):
    _conversations(ingest, "old", 1, NOW - timedelta(days=10), NOW - timedelta(days=9))
    _conversations(ingest, "prev", 5, NOW - timedelta(hours=47), NOW - timedelta(hours=25))
    _conversations(ingest, "now", 60, NOW - timedelta(hours=23), NOW - timedelta(hours=1))
    body = members["viewer"].get("/?period=24h").content.decode()
    text, title = _change(body, "total_conversations")
    assert text == "n/a"
    assert title.startswith("Only 5 conversations in the previous window")


def test_a_previous_window_from_before_the_data_began_shows_n_a_and_why(members, ingest):
    _conversations(ingest, "prev", 40, NOW - timedelta(hours=30), NOW - timedelta(hours=25))
    _conversations(ingest, "now", 60, NOW - timedelta(hours=23), NOW - timedelta(hours=1))
    body = members["viewer"].get("/?period=24h").content.decode()
    for metric in ("total_conversations", "total_cost_usd", "success_rate", "active_agents"):
        text, title = _change(body, metric)
        assert text == "n/a" and title.startswith("The data starts"), metric


def test_an_agents_page_counts_coverage_from_the_agents_own_first_data(members, ingest):
    _conversations(ingest, "old", 40, NOW - timedelta(days=10), NOW - timedelta(days=9))
    _conversations(
        ingest, "new", 40, NOW - timedelta(hours=30), NOW - timedelta(hours=1), agent_id="agent_new"
    )
    body = members["viewer"].get("/agents/agent_new/performance/?period=24h").content.decode()
    text, title = _change(body, "total_cost_usd")
    assert text == "n/a" and title.startswith("The data starts")
