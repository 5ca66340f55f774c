"""Live voice metrics over WebSocket, driven with Channels' WebsocketCommunicator
against the real ASGI application: who may subscribe, the snapshot, frames
after events, heartbeats, and coalescing."""

import asyncio
import json
import math
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from accounts.services import user_create_or_update
from agents.models import Agent
from audit.services import Actor
from thinnest_analytics.asgi import application
from voice.consumers import LiveFrames
from voice.live import voice_group
from voice.services import voice_events_ingest

from . import voice
from .conftest import _tenant

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/api/voice/metrics/agent_abc123/ws"


@pytest.fixture(autouse=True)
def _fast_live_settings(settings):
    # The in-memory layer keeps these tests inside one process and one event loop;
    # the Redis layer is proven across two servers in test_voice_e2e.py.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.VOICE_LIVE_HEARTBEAT_MS = 400
    settings.VOICE_LIVE_MIN_INTERVAL_MS = 100


@pytest.fixture
def acme():
    tenant = _tenant("acme")
    _ingest(tenant, [voice.started(call_id="seed", at=_ago(minutes=1))])
    return tenant


def _ago(**delta) -> str:
    return (timezone.now() - timedelta(**delta)).isoformat()


def _ingest(tenant, events: list[dict]):
    result = voice_events_ingest(organisation=tenant.organisation, items=events, actor=Actor.system("test"))
    assert not result.rejected, result.rejected
    return result


def _session_cookie(username: str, organisation, role: str = Role.VIEWER) -> bytes:
    user, _ = user_create_or_update(organisation=organisation, username=username, password=None, role=role)
    client = Client()
    client.force_login(user)
    return f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}".encode()


def _communicator(
    path: str = PATH, headers: list[tuple[bytes, bytes]] | None = None
) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[(b"host", b"testserver"), *(headers or [])])


async def _refusal(communicator: WebsocketCommunicator) -> int:
    """The close code of a refused subscriber, proving no frame came first."""
    connected, _ = await communicator.connect()
    assert connected
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close", output
    await communicator.disconnect()
    return output["code"]


async def _frame(communicator: WebsocketCommunicator, timeout: float = 2) -> dict:
    return json.loads(await communicator.receive_from(timeout=timeout))


async def _subscribe(headers) -> tuple[WebsocketCommunicator, dict]:
    communicator = _communicator(headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator, await _frame(communicator)


def _bearer(tenant, *scopes: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {tenant.keys[','.join(sorted(scopes))]}".encode())


# --- who may subscribe ----------------------------------------------------------


def test_an_anonymous_client_is_refused_before_any_frame(acme):
    assert async_to_sync(_refusal)(_communicator()) == 4401


def test_an_unknown_key_is_refused(acme):
    headers = [(b"authorization", b"Bearer ta_nope_nope")]
    assert async_to_sync(_refusal)(_communicator(headers=headers)) == 4401


def test_a_key_without_the_read_scope_is_refused(acme):
    assert async_to_sync(_refusal)(_communicator(headers=[_bearer(acme, "ingest")])) == 4403


def test_another_organisations_key_does_not_find_the_agent(acme):
    outsider = _tenant("other-corp")
    assert async_to_sync(_refusal)(_communicator(headers=[_bearer(outsider, "read")])) == 4404


def test_a_member_of_another_organisation_does_not_find_the_agent(acme):
    outsider = _tenant("other-corp")
    cookie = _session_cookie("stranger", outsider.organisation, Role.OWNER)
    assert async_to_sync(_refusal)(_communicator(headers=[(b"cookie", cookie)])) == 4404


def test_a_page_from_another_site_is_refused_even_with_a_members_cookie(acme):
    cookie = _session_cookie("viewer", acme.organisation)
    headers = [(b"cookie", cookie), (b"origin", b"https://evil.example")]
    assert async_to_sync(_refusal)(_communicator(headers=headers)) == 4403


def test_a_member_on_this_site_gets_a_snapshot(acme):
    cookie = _session_cookie("viewer", acme.organisation)
    headers = [(b"cookie", cookie), (b"origin", b"http://testserver")]

    async def scenario():
        communicator, frame = await _subscribe(headers)
        await communicator.disconnect()
        return frame

    frame = async_to_sync(scenario)()
    assert frame["type"] == "snapshot"
    assert frame["agent_id"] == "agent_abc123"
    assert frame["active_calls"] == 1


def test_a_read_key_works_in_the_header_or_as_a_token(acme):
    key = acme.keys["read"]

    async def scenario():
        frames = []
        for communicator in (
            _communicator(headers=[_bearer(acme, "read")]),
            _communicator(path=f"{PATH}?token={key}"),
        ):
            connected, _ = await communicator.connect()
            assert connected
            frames.append(await _frame(communicator))
            await communicator.disconnect()
        return frames

    assert [f["type"] for f in async_to_sync(scenario)()] == ["snapshot", "snapshot"]


# --- frames -------------------------------------------------------------------------


def test_the_snapshot_carries_every_live_field(acme):
    now = timezone.now()
    _ingest(
        acme,
        [
            voice.started(call_id="done", at=(now - timedelta(minutes=7)).isoformat()),
            # Older than five minutes: not in the live turn metrics.
            voice.turn(call_id="done", at=(now - timedelta(minutes=6)).isoformat(), voice_latency_ms=9000),
            voice.turn(call_id="done", at=(now - timedelta(minutes=2)).isoformat(), voice_latency_ms=600),
            voice.turn(
                call_id="done",
                at=(now - timedelta(minutes=1)).isoformat(),
                voice_latency_ms=1000,
                interrupted=True,
                transcription_confidence=0.7,
            ),
            voice.ended(call_id="done", at=now.isoformat(), duration_s=90),
        ],
    )

    async def scenario():
        communicator, frame = await _subscribe([_bearer(acme, "read")])
        await communicator.disconnect()
        return frame

    frame = async_to_sync(scenario)()
    assert frame["active_calls"] == 1
    assert frame["calls_today"] >= 1
    assert frame["avg_latency_ms"] == 800
    assert frame["interruption_rate"] == 0.5
    assert frame["transcription_accuracy"] == pytest.approx(0.8)
    assert frame["avg_call_duration_s"] == 90
    history = frame["latency_history"]
    assert len(history) == 10 and sum(m["turns"] for m in history) == 3
    assert frame["at"].endswith("Z")


def test_a_frame_follows_every_change_within_a_second(acme):
    async def scenario():
        communicator, snapshot = await _subscribe([_bearer(acme, "read")])
        frames = []
        for events in (
            [voice.started(call_id="c2", at=_ago(seconds=5))],
            [voice.turn(call_id="c2", at=_ago(seconds=1), voice_latency_ms=700)],
            [voice.ended(call_id="c2", at=_ago(seconds=0))],
        ):
            await database_sync_to_async(_ingest)(acme, events)
            frames.append(await _frame(communicator, timeout=1))
        await communicator.disconnect()
        return snapshot, frames

    snapshot, frames = async_to_sync(scenario)()
    assert snapshot["active_calls"] == 1
    assert [f["type"] for f in frames] == ["update", "update", "update"]
    assert [f["active_calls"] for f in frames] == [2, 2, 1]
    assert frames[1]["avg_latency_ms"] == 700


def test_a_quiet_subscriber_gets_heartbeats(acme):
    async def scenario():
        communicator, _ = await _subscribe([_bearer(acme, "read")])
        loop = asyncio.get_running_loop()
        started = loop.time()
        beats = [await _frame(communicator, timeout=2) for _ in range(2)]
        elapsed = loop.time() - started
        await communicator.disconnect()
        return beats, elapsed

    beats, elapsed = async_to_sync(scenario)()
    assert [b["type"] for b in beats] == ["heartbeat", "heartbeat"]
    assert beats[0]["active_calls"] == 1
    assert 0.6 <= elapsed < 1.6  # every 400 ms in these tests


def test_a_burst_of_changes_is_coalesced(acme, monkeypatch, settings):
    """Two hundred change notices in a burst give each subscriber at most one
    frame per VOICE_LIVE_MIN_INTERVAL_MS of the burst, and the process computes
    each frame once for both subscribers.

    The bound follows from what happened, not from how long the burst should
    have taken: the burst is timed on the event loop's clock, from its first
    notice to the last frame received, so a loaded machine that stretches it
    allows proportionally more frames, and a coalescing bug (a frame per notice)
    still exceeds it by far."""
    from voice import selectors as voice_selectors

    settings.VOICE_LIVE_HEARTBEAT_MS = 60_000  # only update frames in this test
    interval = settings.VOICE_LIVE_MIN_INTERVAL_MS / 1000
    computed = []
    real = voice_selectors.voice_live
    monkeypatch.setattr(voice_selectors, "voice_live", lambda **kw: computed.append(1) or real(**kw))
    agent = Agent.objects.get(public_id="agent_abc123")
    group = voice_group(agent.pk)

    async def scenario():
        layer = get_channel_layer()
        loop = asyncio.get_running_loop()
        subscribers = [(await _subscribe([_bearer(acme, "read")]))[0] for _ in range(2)]
        computed.clear()
        started = loop.time()
        for n in range(200):
            await layer.group_send(group, {"type": "voice.changed", "change": f"burst-{n}"})
            await asyncio.sleep(0.0025)
        await database_sync_to_async(_ingest)(acme, [voice.started(call_id="last", at=_ago(seconds=1))])
        received = [[], []]
        for frames, communicator in zip(received, subscribers, strict=True):
            while True:
                frame = await _frame(communicator, timeout=10)
                assert frame["type"] == "update", frame["type"]
                frames.append(frame)
                if frame["active_calls"] == 2:
                    break
        # A flush may still be running (a later notice of the same ingestion):
        # wait for it, then take what it delivered, so that the frames and the
        # computations counted below cover the same span, however slow the machine.
        live = LiveFrames.of(agent.pk)
        await asyncio.wait_for(live.idle(), timeout=10)
        counted = len(computed)
        for frames, communicator in zip(received, subscribers, strict=True):
            while not await communicator.receive_nothing(timeout=0.05):
                frames.append(await _frame(communicator))
        elapsed = loop.time() - started
        for communicator in subscribers:
            await communicator.disconnect()
        return received, elapsed, counted

    received, elapsed, counted = async_to_sync(scenario)()
    # Frames are flushed at least `interval` apart, the first after the burst began.
    bound = math.floor(elapsed / interval) + 1
    for frames in received:
        assert 1 <= len(frames) <= bound, (len(frames), elapsed)
        assert frames[-1]["active_calls"] == 2
    # One computation per flush, shared by both subscribers.
    assert counted <= max(len(f) for f in received)
