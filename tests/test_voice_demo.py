"""Demo voice traffic: the demo data's historical calls, and the simulator that
places calls against a running server through the public API."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from agents.models import Agent, Trace
from dashboard.selectors import agent_summary
from metrics.windows import parse_window
from voice.models import CallStatus, VoiceCall, VoiceTurn

from .conftest import _tenant


@pytest.mark.django_db
def test_seed_demo_gives_the_sales_caller_calls_and_voice_cost_once():
    call_command("seed_demo", "--days", "1", "--verbosity", "0", stdout=StringIO())
    sales = Agent.objects.get(public_id="agent_sales")
    calls = VoiceCall.objects.filter(agent=sales)
    assert calls.count() > 5 and VoiceTurn.objects.count() > calls.count()
    assert not calls.filter(ended_at__isnull=True).exists()
    assert calls.filter(status=CallStatus.COMPLETED).exists()
    # Each call is its conversation: it starts before the agent's first reply.
    call = calls.first()
    assert call.session.started_at == call.started_at < call.session.first_trace_at
    summary = agent_summary(organisation=sales.organisation, agent=sales, window=parse_window(period="2d"))
    assert summary["voice_minutes"] > 0 and summary["voice_cost_usd"] > 0

    def facts() -> dict:
        return {
            c.public_id: (c.started_at, c.ended_at, c.status, c.cost_usd, c.turns.count())
            for c in calls.filter(started_at__lt=timezone.now() - timedelta(hours=3))
        }

    before = facts()
    call_command("seed_demo", "--days", "1", "--verbosity", "0", stdout=StringIO())
    assert facts() == before  # a second run adds nothing to calls already there


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_simulator_places_calls_and_hangs_them_up(live_server):
    tenant = _tenant("demo")
    out = StringIO()
    call_command(
        "simulate_traffic",
        url=live_server.url,
        key=tenant.keys["ingest"],
        duration=4,
        rate=300,
        seed=7,
        stdout=out,
    )
    calls = VoiceCall.objects.filter(organisation=tenant.organisation)
    assert calls.count() > 3, out.getvalue()
    assert not calls.filter(ended_at__isnull=True).exists()  # hung up on the way out
    assert Trace.objects.filter(channel="chat").exists()
    assert "Placed" in out.getvalue()
