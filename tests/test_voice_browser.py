"""A member's browser on the Voice tab: the live panel follows calls as they
start and end, and reconnects by itself after the server restarts."""

import os
import time

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import sync_playwright

from accounts.models import Role
from accounts.services import user_create_or_update

from . import voice
from .conftest import _tenant, postgres_only
from .daphne import Daphne, database_url

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    postgres_only(),
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium package"),
]


def _now(offset: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + offset)) + "Z"


def test_the_live_panel_follows_calls_and_survives_a_restart(tmp_path):
    tenant = _tenant("browser")
    user, _ = user_create_or_update(
        organisation=tenant.organisation, username="watcher", password=None, role=Role.VIEWER
    )
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # The server must sign sessions as this process does.
    env.update(
        DATABASE_URL=database_url(), SECRET_KEY=settings.SECRET_KEY, VAR_DIR=str(tmp_path), LOG_LEVEL="ERROR"
    )
    key = tenant.keys["ingest"]
    server = Daphne(env)
    try:
        server.wait_ready()
        base = f"http://127.0.0.1:{server.port}"
        assert server.post("/api/voice/events", key, voice.started(call_id="b1", at=_now())) == 200
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            context = browser.new_context()
            context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base}])
            page = context.new_page()
            blocked = []
            page.on("console", lambda m: "Content Security Policy" in m.text and blocked.append(m.text))
            page.goto(f"{base}/agents/agent_abc123/voice/")

            def active_calls(value: str, timeout: float) -> None:
                page.wait_for_function(
                    "v => document.querySelector('[data-field=active_calls]').textContent === v",
                    arg=value,
                    timeout=timeout * 1000,
                )

            active_calls("1", 10)
            assert page.get_attribute("[data-voice-live]", "data-state") == "live"
            assert server.post("/api/voice/events", key, voice.started(call_id="b2", at=_now(1))) == 200
            active_calls("2", 2)

            server.stop()
            page.wait_for_selector('[data-voice-live][data-state="reconnecting"]', timeout=10_000)
            server = Daphne(env, port=server.port)
            server.wait_ready()
            assert server.post("/api/voice/events", key, voice.ended(call_id="b1", at=_now(2))) == 200
            active_calls("1", 30)  # reconnected by itself: a snapshot of the new state
            assert page.get_attribute("[data-voice-live]", "data-state") == "live"
            assert not blocked, blocked
            browser.close()
    finally:
        server.stop()
