"""What the browser tests share: Debian's Chromium through Playwright (no
browser download), a signed-in page, and everything the page complained about
(Content Security Policy violations, console errors, uncaught exceptions)."""

import os
import shutil
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from accounts.models import Role
from accounts.services import organisation_get_or_create, user_create_or_update
from agents.services import trace_ingest
from audit.services import Actor

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    not shutil.which(CHROMIUM), reason=f"Chromium not found at {CHROMIUM} (install Debian's chromium package)"
)
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
USERNAME, PASSWORD = "operator", "pw-123456"

# Collected in the page itself, from the first script on, across HTMX swaps.
WATCH = (
    "window.__violations = [];"
    "document.addEventListener('securitypolicyviolation', e => window.__violations.push("
    "e.violatedDirective + ' ' + e.sourceFile + ':' + e.lineNumber));"
)


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own
    # database work (fixtures) is still synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def watched_page(browser, viewport=DESKTOP, **context_options):
    """A new page that keeps what it complained about in ``page.complaints``.
    (Take screenshots only after reading them: Playwright hides the caret by
    styling inputs, which a strict CSP reports.)"""
    context = browser.new_context(viewport=viewport, **context_options)
    page = context.new_page()
    page.add_init_script(WATCH)
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(f"uncaught: {e}"))
    return page


def complaints(page) -> list[str]:
    """CSP violations and console errors since the page was opened."""
    return [f"CSP: {v}" for v in page.evaluate("window.__violations || []")] + page.console_errors


def sign_in(page, base: str, username: str = USERNAME, password: str = PASSWORD) -> None:
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def operator_organisation(name: str = "Demo Company"):
    """An organisation with a two-word name and its owner, who signs in."""
    organisation = organisation_get_or_create(slug="demo-company", name=name)
    user_create_or_update(organisation=organisation, username=USERNAME, password=PASSWORD, role=Role.OWNER)
    return organisation


def ingest(organisation, items: list[dict]) -> None:
    result = trace_ingest(organisation=organisation, items=items, actor=Actor.system("test"))
    assert not result.rejected, result.rejected[:3]


def conversations(
    *,
    agent_id: str,
    first: datetime,
    last: datetime,
    count: int,
    prefix: str,
    channel: str = "chat",
    version: str = "",
    latency_ms=lambda n: 800 + n % 7 * 100,
    failed=lambda n: False,
    cost_usd=None,
) -> list[dict]:
    """``count`` one-trace conversations spread evenly over ``[first, last]``."""
    step = (last - first) / max(count - 1, 1)
    items = []
    for n in range(count):
        item = {
            "id": f"{prefix}-{n}",
            "agent_id": agent_id,
            "session_id": f"{prefix}-s{n}",
            "channel": channel,
            "input": f"question {n}",
            "output": "" if failed(n) else f"answer {n}",
            "model": "gpt-4o-mini",
            "input_tokens": 100 + n,
            "output_tokens": 20,
            "latency_ms": latency_ms(n),
            "status": "error" if failed(n) else "success",
            "error": "model call failed" if failed(n) else "",
            "created_at": (first + step * n).isoformat(),
        }
        if version:
            item["deployment_version"] = version
        if cost_usd is not None:
            item["cost_usd"] = str(cost_usd(n))
        items.append(item)
    return items


def ago(**delta) -> datetime:
    return timezone.now() - timedelta(**delta)
