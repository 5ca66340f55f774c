"""Live voice metrics over WebSocket: ``ws://<server>/api/voice/metrics/<agent_id>/ws``.

A subscriber gets a ``snapshot`` frame on connect, an ``update`` frame within
a second of every change to the agent's calls, and a ``heartbeat`` frame when
nothing else was sent for ``VOICE_LIVE_HEARTBEAT_MS``. Changes are coalesced:
each process computes an agent's frame at most once per
``VOICE_LIVE_MIN_INTERVAL_MS`` and sends it to all of the agent's subscribers
connected to it.
"""

import asyncio
import json
import logging
import math
import weakref
from collections import OrderedDict
from datetime import datetime
from decimal import Decimal
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user
from django.http.cookie import parse_cookie
from django.utils import timezone

from accounts.middleware import SESSION_KEY
from accounts.models import Membership, Scope
from accounts.services import api_key_authenticate
from thinnest_analytics.db import in_worker_thread

from .live import voice_group
from .models import Agent

logger = logging.getLogger(__name__)

# Close codes of a refused subscription (sent before any frame).
UNAUTHENTICATED = 4401  # no session and no API key, or an unknown or revoked key
FORBIDDEN = 4403  # a key without the read scope, or a browser page from another origin
NOT_FOUND = 4404  # no such agent in the subscriber's organisation

# A frame this recent may serve a snapshot or heartbeat instead of a new query.
REUSE_SECONDS = 1.0


class LiveFrames:
    """One agent's live frames in one process (one event loop), shared by the
    agent's subscribers there.

    A change notice raises the generation once however many subscribers
    receive it; the first one schedules a flush, which computes one frame at
    most every ``VOICE_LIVE_MIN_INTERVAL_MS`` and hands it to every subscriber.
    So a burst of changes and a hundred subscribers cost one query per
    interval, not one per change or per subscriber."""

    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, LiveFrames]]" = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.generation = 0
        self.subscribers: set[VoiceMetricsConsumer] = set()
        self._changes: OrderedDict[str, int] = OrderedDict()
        self._frame: dict | None = None
        self._frame_generation = -1
        self._frame_time = -math.inf
        self._pending: tuple[int, float, asyncio.Task] | None = None
        self._flusher: asyncio.Task | None = None
        self._flushed = 0
        self._last_flush = -math.inf

    @classmethod
    def subscribe(cls, agent: Agent, consumer: "VoiceMetricsConsumer") -> "LiveFrames":
        frames = cls._by_loop.setdefault(asyncio.get_running_loop(), {})
        live = frames.get(agent.pk)
        if live is None:
            live = frames[agent.pk] = cls(agent)
        live.subscribers.add(consumer)
        return live

    def unsubscribe(self, consumer: "VoiceMetricsConsumer") -> None:
        self.subscribers.discard(consumer)
        frames = self._by_loop.get(asyncio.get_running_loop(), {})
        if not self.subscribers and frames.get(self.agent.pk) is self:
            del frames[self.agent.pk]
            if self._flusher is not None:
                self._flusher.cancel()

    def notice(self, change: str) -> None:
        """A change notice (every subscriber receives each one): the first
        delivery of a change raises the generation and schedules a flush."""
        if change in self._changes:
            return
        self.generation += 1
        self._changes[change] = self.generation
        if len(self._changes) > 1024:
            self._changes.popitem(last=False)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        interval = settings.VOICE_LIVE_MIN_INTERVAL_MS / 1000
        try:
            while self._flushed < self.generation:
                wait = self._last_flush + interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._last_flush = loop.time()
                try:
                    frame, generation = await self.get(generation=self.generation)
                except Exception:
                    logger.warning("live voice metrics: could not compute a frame", exc_info=True)
                    continue
                self._flushed = max(self._flushed, generation)
                for consumer in list(self.subscribers):
                    try:
                        await consumer.deliver(frame, generation)
                    except Exception:  # one broken subscriber must not starve the others
                        logger.warning("live voice metrics: could not send a frame", exc_info=True)
        finally:
            self._flusher = None

    async def get(self, *, generation: int, max_age: float | None = None) -> tuple[dict, int]:
        """A frame computed after change ``generation`` was noticed (and, with
        ``max_age``, at most that many seconds ago), with its generation."""
        loop = asyncio.get_running_loop()
        fresh = max_age is None or loop.time() - self._frame_time <= max_age
        if self._frame is not None and self._frame_generation >= generation and fresh:
            return self._frame, self._frame_generation
        if self._pending is not None:
            pending_generation, started, task = self._pending
            if pending_generation >= generation and (max_age is None or loop.time() - started <= max_age):
                return await asyncio.shield(task)
        started = loop.time()
        task = loop.create_task(self._compute(self.generation, started))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never left unretrieved
        self._pending = (self.generation, started, task)
        return await asyncio.shield(task)

    async def _compute(self, generation: int, started: float) -> tuple[dict, int]:
        from dashboard.voice import voice_live

        try:
            frame = await in_worker_thread(voice_live, agent=self.agent, now=timezone.now())
        finally:
            if self._pending is not None and self._pending[2] is asyncio.current_task():
                self._pending = None
        if generation >= self._frame_generation:
            self._frame, self._frame_generation, self._frame_time = frame, generation, started
        return frame, generation


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _origin_allowed(headers: dict[bytes, bytes]) -> bool:
    """Clients without an Origin header (not browsers) are welcome; a browser
    page must come from this site (or a CSRF_TRUSTED_ORIGINS entry), so another
    site cannot open a socket with a member's session cookie."""
    origin = headers.get(b"origin")
    if origin is None:
        return True
    origin_text = origin.decode("latin1")
    host = headers.get(b"host", b"").decode("latin1")
    netloc = urlparse(origin_text).netloc
    return (bool(netloc) and netloc == host) or origin_text in settings.CSRF_TRUSTED_ORIGINS


def _api_key_of(headers: dict[bytes, bytes], query_string: bytes) -> str | None:
    """An API key from ``Authorization: Bearer`` or, for clients that cannot set
    headers (browsers), ``?token=``."""
    authorization = headers.get(b"authorization", b"").decode("latin1").strip()
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    tokens = parse_qs(query_string.decode("latin1")).get("token")
    return tokens[0] if tokens else None


class _SessionRequest:
    """What ``django.contrib.auth.get_user`` reads of a request: its session."""

    def __init__(self, session) -> None:
        self.session = session


def _session_user(headers: dict[bytes, bytes]):
    """The user signed in with the browser session cookie, and the session."""
    cookies = parse_cookie(headers.get(b"cookie", b"").decode("latin1"))
    session = import_module(settings.SESSION_ENGINE).SessionStore(cookies.get(settings.SESSION_COOKIE_NAME))
    return get_user(_SessionRequest(session)), session


def subscriber_agent(
    *, agent_id: str, headers: dict[bytes, bytes], query_string: bytes
) -> tuple[Agent | None, int | None]:
    """The agent a subscriber may watch, or the close code that refuses them:
    an API key with the read scope of the agent's organisation, or a signed-in
    member of it (any role). Other organisations' agents are not found."""
    agents = Agent.objects.select_related("organisation").filter(public_id=agent_id)
    key = _api_key_of(headers, query_string)
    if key is not None:
        api_key = api_key_authenticate(key)
        if api_key is None:
            return None, UNAUTHENTICATED
        if Scope.READ not in api_key.scopes:
            return None, FORBIDDEN
        agent = agents.filter(organisation=api_key.organisation_id).first()
        return (agent, None) if agent else (None, NOT_FOUND)
    user, session = _session_user(headers)
    if not user.is_authenticated:
        return None, UNAUTHENTICATED
    organisations = list(Membership.objects.filter(user=user).values_list("organisation_id", flat=True))
    current = session.get(SESSION_KEY)
    # The organisation chosen in the switcher first, as the pages show it.
    candidates = sorted(
        agents.filter(organisation__in=organisations), key=lambda a: a.organisation_id != current
    )
    return (candidates[0], None) if candidates else (None, NOT_FOUND)


class VoiceMetricsConsumer(AsyncWebsocketConsumer):
    """Pushes an agent's live voice metrics to one subscriber."""

    live: LiveFrames | None = None
    heartbeats: asyncio.Task | None = None

    async def connect(self) -> None:
        # Accept, then close with a code, so a refused client learns why (4401,
        # 4403, 4404); no frame is sent before the subscriber is authorised.
        await self.accept()
        headers = dict(self.scope.get("headers", []))
        agent, refusal = None, FORBIDDEN
        if _origin_allowed(headers):
            agent, refusal = await in_worker_thread(
                subscriber_agent,
                agent_id=self.scope["url_route"]["kwargs"]["agent_id"],
                headers=headers,
                query_string=self.scope.get("query_string", b""),
            )
        if refusal is not None:
            await self.close(code=refusal)
            return
        self.heartbeat_interval = settings.VOICE_LIVE_HEARTBEAT_MS / 1000
        self.last_sent = -math.inf
        self.sent: int | None = None  # the generation of the last frame sent; None before the snapshot
        self.held: tuple[dict, int] | None = None
        # Subscribe before the snapshot, so no change falls between the two.
        self.live = LiveFrames.subscribe(agent, self)
        await self.channel_layer.group_add(voice_group(agent.pk), self.channel_name)
        try:
            frame, generation = await self.live.get(generation=self.live.generation, max_age=REUSE_SECONDS)
        except Exception:
            logger.warning("live voice metrics: could not compute a snapshot", exc_info=True)
            await self.close(code=1011)  # the client retries, as after a restart
            return
        await self._send(frame, "snapshot", generation)
        if self.held is not None:  # an update flushed while the snapshot was computed
            await self.deliver(*self.held)
        self.heartbeats = asyncio.get_running_loop().create_task(self._heartbeats())

    async def disconnect(self, code: int) -> None:
        if self.live is None:
            return
        if self.heartbeats is not None:
            self.heartbeats.cancel()
        await self.channel_layer.group_discard(voice_group(self.live.agent.pk), self.channel_name)
        self.live.unsubscribe(self)
        self.live = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Subscribers only listen; anything they send is ignored."""

    async def voice_changed(self, message: dict) -> None:
        """A change notice from the channel layer."""
        if self.live is not None:
            self.live.notice(message["change"])

    async def deliver(self, frame: dict, generation: int) -> None:
        """An update flushed by this process's LiveFrames."""
        if self.sent is None:
            self.held = (frame, generation)
        elif generation > self.sent:
            await self._send(frame, "update", generation)

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = self.last_sent + self.heartbeat_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                frame, generation = await self.live.get(
                    generation=self.live.generation, max_age=min(REUSE_SECONDS, self.heartbeat_interval / 2)
                )
            except Exception:
                logger.warning("live voice metrics: could not compute a heartbeat", exc_info=True)
                await asyncio.sleep(self.heartbeat_interval)
                continue
            await self._send(frame, "heartbeat", generation)

    async def _send(self, frame: dict, kind: str, generation: int) -> None:
        await self.send(text_data=json.dumps({"type": kind, **frame}, default=_json_value))
        self.last_sent = asyncio.get_running_loop().time()
        self.sent = max(self.sent or 0, generation)
