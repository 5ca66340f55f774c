"""Live voice metrics over WebSocket: ``ws://<server>/api/voice/metrics/<agent_id>/ws``.

A subscriber gets a ``snapshot`` frame on connect, an ``update`` frame within
a second of every change to the agent's calls, and a ``heartbeat`` frame when
nothing else was sent for ``VOICE_LIVE_HEARTBEAT_MS``. Changes are coalesced:
each process computes an agent's frame at most once per
``VOICE_LIVE_MIN_INTERVAL_MS`` and sends it to all of the agent's subscribers
connected to it.

A subscriber stays only as long as what admitted it: revoking its API key
closes the socket with 4401, removing its user from the organisation with 4403,
within a moment of the change (``AccessWatch``).
"""

import asyncio
import json
import logging
import math
import weakref
from importlib import import_module
from typing import NamedTuple
from urllib.parse import parse_qs, urlparse

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user
from django.http.cookie import parse_cookie
from django.utils import timezone

from accounts.live import ACCESS_ENDED, ACCESS_GROUP, api_key_grant, membership_grant
from accounts.middleware import SESSION_KEY
from accounts.models import Membership, Scope
from accounts.selectors import grants_ended
from accounts.services import api_key_authenticate
from agents.models import Agent
from thinnest_analytics.db import in_worker_thread
from thinnest_analytics.formatting import json_value

from . import selectors as voice_selectors
from .live import CHANGED, voice_group

logger = logging.getLogger(__name__)

# Close codes of a refused subscription (sent before any frame), and of one
# whose access ended while it was open.
UNAUTHENTICATED = 4401  # no session and no API key, an unknown key, or the key was revoked
FORBIDDEN = 4403  # a key without the read scope, a page from another origin, or no longer a member
NOT_FOUND = 4404  # no such agent in the subscriber's organisation

# A frame this recent may serve a snapshot or heartbeat instead of a new query.
REUSE_SECONDS = 1.0


class LiveFrames:
    """One agent's live frames in one process (one event loop), shared by the
    agent's subscribers there.

    The process, not each subscriber, listens to the agent's channel-layer
    group: a change costs one message per process however many subscribers it
    has. A change raises the generation and schedules a flush, which computes
    one frame at most every ``VOICE_LIVE_MIN_INTERVAL_MS`` and hands it to
    every subscriber. So a burst of changes and a hundred subscribers cost one
    query per interval, not one per change or per subscriber."""

    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, LiveFrames]]" = (
        weakref.WeakKeyDictionary()
    )
    # Groups of the Redis layer expire (a day by default): join again well before.
    REJOIN_SECONDS = 600

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.group = voice_group(agent.pk)
        self.generation = 0
        self.subscribers: set[VoiceMetricsConsumer] = set()
        self._frame: dict | None = None
        self._texts: dict[tuple[int, str], tuple[dict, str]] = {}
        self._frame_generation = -1
        self._frame_time = -math.inf
        self._pending: tuple[int, float, asyncio.Task] | None = None
        self._flusher: asyncio.Task | None = None
        self._flushed = 0
        self._last_flush = -math.inf
        self._layer = get_channel_layer()
        self._channel: str | None = None
        self._listener: asyncio.Task | None = None
        self._joined = asyncio.get_running_loop().create_future()

    @classmethod
    async def subscribe(cls, agent: Agent, consumer: "VoiceMetricsConsumer") -> "LiveFrames":
        """The agent's LiveFrames, listening to its group before this returns."""
        frames = cls._by_loop.setdefault(asyncio.get_running_loop(), {})
        live = frames.get(agent.pk)
        if live is None:
            live = frames[agent.pk] = cls(agent)
            live._listener = asyncio.get_running_loop().create_task(live._listen())
        live.subscribers.add(consumer)
        try:
            await asyncio.shield(live._joined)
        except Exception:
            live.subscribers.discard(consumer)
            raise
        return live

    @classmethod
    def of(cls, agent_pk: int) -> "LiveFrames | None":
        """This process's (event loop's) LiveFrames of the agent, while it has subscribers."""
        return cls._by_loop.get(asyncio.get_running_loop(), {}).get(agent_pk)

    async def idle(self) -> None:
        """Return once no flush runs: every change noticed so far has been sent."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    def _forget(self) -> None:
        frames = self._by_loop.get(asyncio.get_running_loop(), {})
        if frames.get(self.agent.pk) is self:
            del frames[self.agent.pk]

    def unsubscribe(self, consumer: "VoiceMetricsConsumer") -> None:
        self.subscribers.discard(consumer)
        if not self.subscribers:
            self._forget()
            for task in (self._flusher, self._listener):
                if task is not None:
                    task.cancel()

    async def _listen(self) -> None:
        """Receive the group's change notices; after losing the layer (Redis
        restarting), join again with backoff and refresh, since changes may
        have been missed meanwhile."""
        loop = asyncio.get_running_loop()
        retry = 0.5
        while True:
            try:
                self._channel = await self._layer.new_channel()
                await self._layer.group_add(self.group, self._channel)
                if self._joined.done():
                    self.notice()
                else:
                    self._joined.set_result(True)
                retry, joined_at = 0.5, loop.time()
                while True:
                    message = await self._layer.receive(self._channel)
                    if message.get("type") == CHANGED:
                        self.notice()
                    if loop.time() - joined_at > self.REJOIN_SECONDS:
                        await self._layer.group_add(self.group, self._channel)
                        joined_at = loop.time()
            except asyncio.CancelledError:
                if self._channel is not None:
                    await asyncio.shield(self._layer.group_discard(self.group, self._channel))
                raise
            except Exception as exc:
                logger.warning("live voice metrics: lost the channel layer", exc_info=True)
                if not self._joined.done():
                    self._joined.set_exception(exc)  # these subscribers are refused; the next try anew
                    self._forget()
                    return
                await asyncio.sleep(retry)
                retry = min(retry * 2, 10)

    def notice(self) -> None:
        """The agent's calls changed: raise the generation, flush soon."""
        self.generation += 1
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
        try:
            frame = await in_worker_thread(voice_selectors.voice_live, agent=self.agent, now=timezone.now())
        finally:
            if self._pending is not None and self._pending[2] is asyncio.current_task():
                self._pending = None
        if generation >= self._frame_generation:
            self._frame, self._frame_generation, self._frame_time = frame, generation, started
        return frame, generation

    def text(self, frame: dict, kind: str) -> str:
        """The frame as sent: serialised once however many subscribers get it."""
        key = (id(frame), kind)
        cached = self._texts.get(key)
        if cached is not None and cached[0] is frame:
            return cached[1]
        if len(self._texts) > 8:
            self._texts.clear()
        text = json.dumps({"type": kind, **frame}, default=json_value)
        self._texts[key] = (frame, text)  # holding the frame keeps its id from being reused
        return text


class AccessWatch:
    """This process's subscribers by the grant that admitted them (an API key,
    or a user's membership of an organisation; see ``accounts.live``), so they
    can be closed when it ends.

    One channel per process (per event loop) joins ``ACCESS_GROUP`` and closes a
    grant's subscribers on its notice, in milliseconds. Every
    ``LIVE_ACCESS_RECHECK_SECONDS`` it also asks the database which of its
    grants ended — two queries however many subscribers — so a notice lost while
    Redis restarted, or a grant ended by other means (a key deleted in the
    admin, an account deactivated), still closes them within that interval."""

    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AccessWatch]" = (
        weakref.WeakKeyDictionary()
    )
    REJOIN_SECONDS = 600  # groups of the Redis layer expire (a day by default)

    def __init__(self) -> None:
        self.subscribers: dict[str, set[VoiceMetricsConsumer]] = {}
        self._layer = get_channel_layer()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._recheck())]

    @classmethod
    def add(cls, grant: str, consumer: "VoiceMetricsConsumer") -> None:
        loop = asyncio.get_running_loop()
        watch = cls._by_loop.get(loop)
        if watch is None:
            watch = cls._by_loop[loop] = cls()
        watch.subscribers.setdefault(grant, set()).add(consumer)

    @classmethod
    def discard(cls, grant: str, consumer: "VoiceMetricsConsumer") -> None:
        loop = asyncio.get_running_loop()
        watch = cls._by_loop.get(loop)
        if watch is None:
            return
        consumers = watch.subscribers.get(grant, set())
        consumers.discard(consumer)
        if not consumers:
            watch.subscribers.pop(grant, None)
        if not watch.subscribers:
            del cls._by_loop[loop]
            for task in watch._tasks:
                task.cancel()

    def _end(self, grant: str) -> None:
        code = UNAUTHENTICATED if grant.startswith("apikey:") else FORBIDDEN
        for consumer in list(self.subscribers.get(grant, ())):
            asyncio.get_running_loop().create_task(consumer.access_ended(code))

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        retry = 0.5
        channel = None
        while True:
            try:
                channel = await self._layer.new_channel()
                await self._layer.group_add(ACCESS_GROUP, channel)
                retry, joined_at = 0.5, loop.time()
                while True:
                    message = await self._layer.receive(channel)
                    if message.get("type") == ACCESS_ENDED:
                        self._end(str(message.get("grant")))
                    if loop.time() - joined_at > self.REJOIN_SECONDS:
                        await self._layer.group_add(ACCESS_GROUP, channel)
                        joined_at = loop.time()
            except asyncio.CancelledError:
                if channel is not None:
                    await asyncio.shield(self._layer.group_discard(ACCESS_GROUP, channel))
                raise
            except Exception:
                # The periodic re-check keeps closing ended grants meanwhile.
                logger.warning("live access: lost the channel layer", exc_info=True)
                await asyncio.sleep(retry)
                retry = min(retry * 2, 10)

    async def _recheck(self) -> None:
        while True:
            await asyncio.sleep(settings.LIVE_ACCESS_RECHECK_SECONDS)
            try:
                ended = await in_worker_thread(grants_ended, grants=list(self.subscribers))
            except Exception:
                logger.warning("live access: could not re-check grants", exc_info=True)
                continue
            for grant in ended:
                self._end(grant)


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


class Admission(NamedTuple):
    """The agent a subscriber may watch and the grant that admits them, or the
    close code that refuses them."""

    agent: Agent | None
    refusal: int | None
    grant: str | None = None


def subscriber_agent(*, agent_id: str, headers: dict[bytes, bytes], query_string: bytes) -> Admission:
    """Admit an API key with the read scope of the agent's organisation, or a
    signed-in member of it (any role). Other organisations' agents are not found."""
    agents = Agent.objects.select_related("organisation").filter(public_id=agent_id)
    key = _api_key_of(headers, query_string)
    if key is not None:
        api_key = api_key_authenticate(key)
        if api_key is None:
            return Admission(None, UNAUTHENTICATED)
        if Scope.READ not in api_key.scopes:
            return Admission(None, FORBIDDEN)
        agent = agents.filter(organisation=api_key.organisation_id).first()
        return Admission(agent, None, api_key_grant(api_key.pk)) if agent else Admission(None, NOT_FOUND)
    user, session = _session_user(headers)
    if not user.is_authenticated:
        return Admission(None, UNAUTHENTICATED)
    organisations = list(Membership.objects.filter(user=user).values_list("organisation_id", flat=True))
    current = session.get(SESSION_KEY)
    # The organisation chosen in the switcher first, as the pages show it.
    candidates = sorted(
        agents.filter(organisation__in=organisations), key=lambda a: a.organisation_id != current
    )
    if not candidates:
        return Admission(None, NOT_FOUND)
    return Admission(candidates[0], None, membership_grant(user.pk, candidates[0].organisation_id))


class VoiceMetricsConsumer(AsyncWebsocketConsumer):
    """Pushes an agent's live voice metrics to one subscriber."""

    # The process's LiveFrames listens to the channel layer, not each subscriber.
    channel_layer_alias = None

    live: LiveFrames | None = None
    heartbeats: asyncio.Task | None = None
    grant: str | None = None

    async def connect(self) -> None:
        # Accept, then close with a code, so a refused client learns why (4401,
        # 4403, 4404); no frame is sent before the subscriber is authorised.
        await self.accept()
        headers = dict(self.scope.get("headers", []))
        admission = Admission(None, FORBIDDEN)
        if _origin_allowed(headers):
            admission = await in_worker_thread(
                subscriber_agent,
                agent_id=self.scope["url_route"]["kwargs"]["agent_id"],
                headers=headers,
                query_string=self.scope.get("query_string", b""),
            )
        if admission.refusal is not None:
            await self.close(code=admission.refusal)
            return
        agent = admission.agent
        self.grant = admission.grant
        AccessWatch.add(self.grant, self)
        self.heartbeat_interval = settings.VOICE_LIVE_HEARTBEAT_MS / 1000
        self.last_sent = -math.inf
        self.sent: int | None = None  # the generation of the last frame sent; None before the snapshot
        self.held: tuple[dict, int] | None = None
        # Subscribe before the snapshot, so no change falls between the two.
        try:
            self.live = await LiveFrames.subscribe(agent, self)
            frame, generation = await self.live.get(generation=self.live.generation, max_age=REUSE_SECONDS)
        except Exception:
            logger.warning("live voice metrics: could not compute a snapshot", exc_info=True)
            await self.close(code=1011)  # the client retries, as after a restart
            return
        if self.live is None:
            return  # its access ended while the snapshot was computed
        await self._send(frame, "snapshot", generation)
        if self.held is not None:  # an update flushed while the snapshot was computed
            await self.deliver(*self.held)
        self.heartbeats = asyncio.get_running_loop().create_task(self._heartbeats())

    async def disconnect(self, code: int) -> None:
        self._stop()

    def _stop(self) -> None:
        """No more frames for this subscriber, and no more watching its grant."""
        if self.grant is not None:
            AccessWatch.discard(self.grant, self)
            self.grant = None
        if self.heartbeats is not None:
            self.heartbeats.cancel()
            self.heartbeats = None
        if self.live is not None:
            self.live.unsubscribe(self)
            self.live = None

    async def access_ended(self, code: int) -> None:
        """The key was revoked or the member removed: close at once."""
        if self.grant is None:
            return  # already closed
        self._stop()
        await self.close(code=code)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Subscribers only listen; anything they send is ignored."""

    async def deliver(self, frame: dict, generation: int) -> None:
        """An update flushed by this process's LiveFrames."""
        if self.live is None:
            return  # disconnected during the flush
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
        await self.send(text_data=self.live.text(frame, kind))
        self.last_sent = asyncio.get_running_loop().time()
        self.sent = max(self.sent or 0, generation)
