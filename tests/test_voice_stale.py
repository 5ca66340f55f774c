"""Calls nobody hears from are closed as dropped: priced, rolled up, failing
their conversation, audited, and never closed twice."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from agents.models import Session
from audit.models import AuditLog
from metrics.rebuild import rollups_rebuild
from thinnest_analytics.celery import app
from voice.models import CallStatus, VoiceCall
from voice.services import voice_calls_close_stale
from voice.tasks import voice_calls_close_stale_task

from . import voice
from .conftest import _tenant, postgres_only, rollup_snapshot


def _call(ingest, call_id: str, *, started_ago: timedelta, last_turn_ago: timedelta | None = None):
    now = timezone.now()
    events = [voice.started(call_id=call_id, at=(now - started_ago).isoformat())]
    if last_turn_ago is not None:
        events.append(voice.turn(call_id=call_id, at=(now - last_turn_ago).isoformat()))
    assert ingest.post("/api/voice/events", {"events": events}).status_code == 200


def _heard(call_id: str, ago: timedelta) -> None:
    """As if the server last heard of the call ``ago``."""
    VoiceCall.objects.filter(public_id=call_id).update(last_received_at=timezone.now() - ago)


def test_a_silent_call_is_closed_as_dropped_at_its_last_event(ingest, tenant, settings):
    settings.DEFAULT_VOICE_PRICE_PER_MINUTE = "0.06"
    _call(ingest, "quiet", started_ago=timedelta(minutes=50), last_turn_ago=timedelta(minutes=40))
    _call(ingest, "talking", started_ago=timedelta(minutes=50), last_turn_ago=timedelta(minutes=1))
    _heard("quiet", timedelta(minutes=31))
    _heard("talking", timedelta(minutes=29))

    assert voice_calls_close_stale() == 1

    quiet = VoiceCall.objects.get(public_id="quiet")
    assert quiet.status == CallStatus.DROPPED
    assert quiet.ended_at == quiet.last_event_at  # the last thing the caller reported
    assert quiet.duration_s == Decimal("600.000")
    assert quiet.cost_usd == Decimal("0.6")
    assert Session.objects.get(public_id="quiet").status == "failed"
    assert VoiceCall.objects.get(public_id="talking").status == CallStatus.ACTIVE
    entry = AuditLog.objects.get(action="voice_call.drop")
    assert (entry.resource_type, entry.resource_id, entry.user_id) == (
        "voice_call",
        "quiet",
        "system:stale_calls",
    )
    assert entry.details["reason"] == "stale"

    # Priced and rolled up like any ended call: a rebuild agrees.
    before = rollup_snapshot(tenant.organisation)
    assert sum(row["voice_calls_ended"] for row in before.values()) == 2  # hourly and daily
    rollups_rebuild(start=timezone.now() - timedelta(days=1), end=timezone.now() + timedelta(hours=1))
    assert rollup_snapshot(tenant.organisation) == before

    assert voice_calls_close_stale() == 0  # nothing left to close


def test_the_silence_allowed_is_a_setting(ingest, settings):
    settings.VOICE_STALE_CALL_MINUTES = 5
    _call(ingest, "c", started_ago=timedelta(minutes=6))
    _heard("c", timedelta(minutes=6))
    assert voice_calls_close_stale() == 1


def test_an_event_after_the_sweep_read_the_call_keeps_it_open(ingest, monkeypatch):
    """The claim is conditional: a call heard from after it was found stale stays open."""
    from voice import services as voice_services

    _call(ingest, "c", started_ago=timedelta(hours=1))
    _heard("c", timedelta(hours=1))
    real = voice_services._call_close_stale

    def late_turn_first(pk, cutoff, stale_after):
        _heard("c", timedelta(0))
        return real(pk, cutoff, stale_after)

    monkeypatch.setattr(voice_services, "_call_close_stale", late_turn_first)
    assert voice_calls_close_stale() == 0
    assert VoiceCall.objects.get().status == CallStatus.ACTIVE


def test_the_task_runs_the_sweep_and_beat_schedules_it(ingest):
    _call(ingest, "c", started_ago=timedelta(hours=1))
    _heard("c", timedelta(hours=1))
    assert voice_calls_close_stale_task.apply().get() == 1
    schedule = app.conf.beat_schedule["voice-close-stale-calls"]
    assert schedule["task"] == voice_calls_close_stale_task.name
    assert schedule["schedule"] <= 60


@postgres_only()
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_close_each_call_once():
    tenant = _tenant("race")
    ingest = tenant.api("ingest")
    for n in range(6):
        _call(ingest, f"c{n}", started_ago=timedelta(hours=1))
        _heard(f"c{n}", timedelta(hours=1))
    barrier = threading.Barrier(3)
    closed = []

    def sweep():
        barrier.wait()
        try:
            closed.append(voice_calls_close_stale())
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(closed) == 6
    assert AuditLog.objects.filter(action="voice_call.drop").count() == 6
    assert Session.objects.filter(error_count=1).count() == 6
    rollups = rollup_snapshot(tenant.organisation)
    assert sum(row["voice_calls_ended"] for row in rollups.values()) == 12  # hourly and daily
