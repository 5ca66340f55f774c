"""Hardening: login throttling, per-key ingestion limits, body size limits,
CSRF, CSP headers, and a clean ``check --deploy`` with production settings."""

import asyncio
import os
import secrets
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

from accounts.models import Role
from accounts.services import user_create_or_update
from thinnest_analytics.limits import BodySizeLimit

from .conftest import trace
from .daphne import Daphne

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


def _login(client: Client, password: str):
    return client.post("/login/", {"username": "ana", "password": password})


def test_repeated_failed_logins_pause_the_account(tenant, settings):
    settings.LOGIN_MAX_FAILURES = 3
    user_create_or_update(
        organisation=tenant.organisation, username="ana", password="right-pass-1", role=Role.VIEWER
    )
    c = Client()
    for _ in range(3):
        assert _login(c, "wrong").status_code == 200
    r = _login(c, "right-pass-1")
    assert r.status_code == 429
    assert "Too many failed attempts" in r.content.decode()
    assert "_auth_user_id" not in c.session
    cache.clear()  # the pause ends
    assert _login(c, "right-pass-1").status_code == 302


def test_a_successful_login_resets_the_count(tenant, settings):
    settings.LOGIN_MAX_FAILURES = 3
    user_create_or_update(
        organisation=tenant.organisation, username="ana", password="right-pass-1", role=Role.VIEWER
    )
    for _ in range(2):
        _login(Client(), "wrong")
    assert _login(Client(), "right-pass-1").status_code == 302
    for _ in range(2):
        assert _login(Client(), "wrong").status_code == 200
    assert _login(Client(), "right-pass-1").status_code == 302


def test_the_admin_login_pauses_a_staff_account(db):
    get_user_model().objects.create_superuser("root", "root@example.com", "right-pass-1")
    c = Client()
    statuses = [
        c.post("/admin/login/", {"username": "root", "password": f"wrong-{n}"}).status_code for n in range(12)
    ]
    assert statuses == [200] * 5 + [429] * 7
    r = c.post("/admin/login/", {"username": "root", "password": "right-pass-1"})
    assert r.status_code == 429
    assert "Too many failed attempts" in r.content.decode()
    assert "_auth_user_id" not in c.session
    assert c.get("/admin/").status_code == 302  # still sent to the login


def test_failures_at_either_login_count_towards_one_pause(tenant, settings):
    settings.LOGIN_MAX_FAILURES = 4
    get_user_model().objects.create_superuser("root", "root@example.com", "right-pass-1")
    for path in ("/login/", "/admin/login/", "/login/", "/admin/login/"):
        assert Client().post(path, {"username": "root", "password": "wrong"}).status_code == 200
    assert Client().post("/login/", {"username": "root", "password": "right-pass-1"}).status_code == 429
    assert Client().post("/admin/login/", {"username": "root", "password": "right-pass-1"}).status_code == 429


def test_spelling_variants_of_a_username_share_its_pause(tenant, settings):
    settings.LOGIN_MAX_FAILURES = 4
    user_create_or_update(
        organisation=tenant.organisation, username="brute_x", password="right-pass-1", role=Role.VIEWER
    )
    for variant in (" brute_x", "brute_x ", "\uff42rute_x", "BRUTE_X"):  # a full-width b
        r = Client().post("/login/", {"username": variant, "password": "wrong"})
        assert r.status_code == 200, variant
    r = Client().post("/login/", {"username": "brute_x", "password": "right-pass-1"})
    assert r.status_code == 429


def test_ingestion_is_limited_per_key_with_retry_after(tenant, settings):
    settings.INGEST_REQUESTS_PER_MINUTE = 3
    ingest = tenant.api("ingest")
    for n in range(3):
        assert ingest.post("/api/traces", trace(id=f"t{n}")).status_code == 200
    r = ingest.post("/api/traces", trace(id="t3"))
    assert r.status_code == 429
    assert 1 <= int(r["Retry-After"]) <= 60
    assert r.json()["error"]["code"] == "rate_limited"
    # Another key of the organisation, and reads, are not affected.
    assert tenant.api("admin", "ingest", "read").post("/api/traces", trace(id="t4")).status_code == 200
    assert tenant.api("read").get("/api/agents").status_code == 200


def _run_asgi(app, headers, chunks):
    sent = []
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/traces", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent


def test_an_oversized_body_is_refused_before_it_is_read():
    reached = []

    async def app(scope, receive, send):
        reached.append(True)
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guarded = BodySizeLimit(app, limit=1000)
    sent = _run_asgi(guarded, [(b"content-length", b"5000")], [b"x" * 5000])
    assert sent[0]["status"] == 413 and reached == []
    # A chunked body without a length is cut off once it passes the limit.
    sent = _run_asgi(guarded, [], [b"x" * 600, b"x" * 600, b"x" * 600])
    assert sent[0]["status"] == 413 and b"exceeds 1,000 bytes" in sent[1]["body"]
    sent = _run_asgi(guarded, [(b"content-length", b"10")], [b"x" * 10])
    assert sent[0]["status"] == 200


def test_forms_need_a_csrf_token(tenant):
    user, _ = user_create_or_update(
        organisation=tenant.organisation, username="ana", password="right-pass-1", role=Role.ADMIN
    )
    c = Client(enforce_csrf_checks=True)
    assert c.post("/login/", {"username": "ana", "password": "right-pass-1"}).status_code == 403
    c.force_login(user)
    assert c.post("/settings/api-keys/", {"name": "x", "scopes": ["read"]}).status_code == 403
    assert c.post("/alerts/", {"name": "x"}).status_code == 403


def test_pages_carry_a_strict_content_security_policy(members):
    r = members["viewer"].get("/")
    policy = r["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    assert r["X-Frame-Options"] == "DENY"
    assert r["X-Content-Type-Options"] == "nosniff"


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "ALLOW_HTTP", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="analytics.example.com",
        EMAIL_HOST="smtp.example.com",
        VAR_DIR=str(tmp_path),
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    shown = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT)",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.stdout.split()[-4:] == ["True", "True", "31536000", "True"]


def _raw_get(port: int, path: str) -> tuple[str, dict[str, str]]:
    """(status line, headers) of a GET sent over a plain socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head = received.split(b"\r\n\r\n", 1)[0].decode("latin1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    return head[0], {k.lower(): v for k, v in headers.items()}


@pytest.mark.slow
def test_static_files_carry_the_pages_security_headers(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL")
    }
    env.update(VAR_DIR=str(tmp_path), ALLOW_HTTP="true", LOG_LEVEL="ERROR")
    server = Daphne(env)
    try:
        server.wait_ready()
        for path in ("/static/js/charts.js", "/static/img/favicon.svg", "/static/no-such-file.js"):
            status, headers = _raw_get(server.port, path)
            assert status.split()[1] == ("404" if "no-such" in path else "200"), (path, status)
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["x-frame-options"] == "DENY", path
            assert headers["referrer-policy"] == "same-origin", path
            policy = headers["content-security-policy"]
            assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
    finally:
        server.stop()


def test_outside_debug_without_smtp_emails_go_to_a_private_outbox_not_the_log(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "EMAIL_HOST")
    }
    env.update(DEBUG="false", VAR_DIR=str(tmp_path))
    link = "http://127.0.0.1:8000/invitation/MQ/cq7x-0123456789abcdef/"
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.core.mail import send_mail; "
            f"send_mail('Invitation', 'Choose a password: {link}', None, ['new@example.com'])",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "/invitation/" not in result.stdout + result.stderr
    outbox = tmp_path / "outbox"
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    (written,) = outbox.iterdir()
    assert link in written.read_text()
