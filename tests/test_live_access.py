"""Live voice sockets last only as long as the access that opened them: a live
Daphne server closes a subscriber within 5 s of its API key being revoked or
its user being removed from the organisation — at once on the revocation's
notice, and by the periodic re-check when no notice arrives."""

import asyncio
import json
import os
import time

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from accounts.models import ApiKey, Membership, Role
from accounts.services import user_create_or_update

from . import voice
from .conftest import Tenant, _tenant, postgres_only
from .processes import daphne, http, shared_env

pytestmark = [postgres_only(), pytest.mark.slow, pytest.mark.django_db(transaction=True)]
AGENT = "agent_abc123"
CEILING = 5.0  # seconds from the change to the close


@pytest.fixture
def acme() -> Tenant:
    return _tenant("live-access")


def _server(tmp_path, recheck_seconds: float):
    # With REDIS_URL the notice travels through Redis, as between several servers.
    env = shared_env(os.getenv("REDIS_URL", ""), tmp_path, LIVE_ACCESS_RECHECK_SECONDS=str(recheck_seconds))
    return daphne(env, tmp_path)


def _signed_in(base: str, organisation, username: str, role: str) -> requests.Session:
    """A browser session of a member on the live server (with its CSRF cookie)."""
    user, _ = user_create_or_update(organisation=organisation, username=username, password=None, role=role)
    client = Client()
    client.force_login(user)
    session = requests.Session()
    session.cookies.set(settings.SESSION_COOKIE_NAME, client.cookies[settings.SESSION_COOKIE_NAME].value)
    assert session.get(f"{base}/", timeout=30).status_code == 200  # sets the CSRF cookie
    return session


def _press(session: requests.Session, url: str) -> None:
    """Submit a page's POST button, as the browser does."""
    r = session.post(
        url, data={"csrfmiddlewaretoken": session.cookies["csrftoken"]}, allow_redirects=False, timeout=30
    )
    assert r.status_code == 302, (r.status_code, r.text[:500])


def _call_started(base: str, tenant: Tenant) -> None:
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status, _, body = http(
        "POST",
        f"{base}/api/voice/events",
        voice.started(call_id="live-1", at=at, agent_id=AGENT),
        headers={"Authorization": f"Bearer {tenant.keys['ingest']}"},
    )
    assert status == 200, body


async def _close_code_after(ws, change) -> tuple[int, float]:
    """Make ``change`` (a blocking call), then read frames until the server
    closes the socket: (close code, seconds from the change to the close).
    Fails if the socket is still open after CEILING seconds."""
    first = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert first["type"] == "snapshot"
    await asyncio.to_thread(change)
    changed = time.monotonic()
    try:
        async with asyncio.timeout(CEILING):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code, time.monotonic() - changed
    raise AssertionError("unreachable")


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + f"/api/voice/metrics/{AGENT}/ws"


def test_a_socket_opened_with_a_key_closes_when_the_key_is_revoked(acme, tmp_path):
    read = ApiKey.objects.get(organisation=acme.organisation, name="read")
    with _server(tmp_path, recheck_seconds=600) as base:
        _call_started(base, acme)
        admin = _signed_in(base, acme.organisation, "ada", Role.ADMIN)

        async def watch():
            headers = {"Authorization": f"Bearer {acme.keys['read']}"}
            async with connect(_ws_url(base), additional_headers=headers) as ws:
                return await _close_code_after(
                    ws, lambda: _press(admin, f"{base}/settings/api-keys/{read.prefix}/revoke/")
                )

        code, seconds = asyncio.run(watch())
    assert code == 4401, code
    assert seconds < CEILING


def test_a_members_socket_closes_when_they_are_removed_from_the_organisation(acme, tmp_path):
    with _server(tmp_path, recheck_seconds=600) as base:
        _call_started(base, acme)
        admin = _signed_in(base, acme.organisation, "ada", Role.ADMIN)
        viewer = _signed_in(base, acme.organisation, "vic", Role.VIEWER)
        membership = Membership.objects.get(organisation=acme.organisation, user__username="vic")
        cookie = f"{settings.SESSION_COOKIE_NAME}={viewer.cookies[settings.SESSION_COOKIE_NAME]}"

        async def watch():
            async with connect(_ws_url(base), additional_headers={"Cookie": cookie}) as ws:
                return await _close_code_after(
                    ws, lambda: _press(admin, f"{base}/settings/team/{membership.pk}/remove/")
                )

        code, seconds = asyncio.run(watch())
    assert code == 4403, code
    assert seconds < CEILING


def test_a_key_revoked_without_a_notice_is_caught_by_the_periodic_check(acme, tmp_path):
    with _server(tmp_path, recheck_seconds=1) as base:
        _call_started(base, acme)

        def revoke_in_the_database_alone():
            try:
                ApiKey.objects.filter(organisation=acme.organisation, name="read").update(
                    revoked_at=timezone.now()
                )
            finally:
                connection.close()

        async def watch():
            headers = {"Authorization": f"Bearer {acme.keys['read']}"}
            async with connect(_ws_url(base), additional_headers=headers) as ws:
                return await _close_code_after(ws, revoke_in_the_database_alone)

        code, seconds = asyncio.run(watch())
    assert code == 4401, code
    assert seconds < CEILING
