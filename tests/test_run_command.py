"""The README's first command serves the app on embedded defaults: SQLite, the
in-memory channel layer and the filesystem Celery broker."""

import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


def test_the_embedded_default_server_answers(tmp_path):
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(PORT=str(port), VAR_DIR=str(tmp_path), DEMO_DAYS="1")
    proc = subprocess.Popen(
        ["bash", "scripts/serve.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                status, body = _get(f"{base}/healthz")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.stdout.read().decode()[-3000:]) from None
                time.sleep(0.5)
        assert status == 200 and b'"database": "sqlite"' in body
        assert (tmp_path / "db.sqlite3").exists()
        assert _get(f"{base}/login/")[0] == 200
        assert b"swagger-ui-bundle.js" in _get(f"{base}/api/docs")[1]
        with sqlite3.connect(tmp_path / "db.sqlite3") as db:
            assert db.execute("SELECT count(*) FROM agents_trace").fetchone()[0] > 100
        deadline = time.monotonic() + 60
        log = tmp_path / "celery.log"
        while b"ready" not in (log.read_bytes() if log.exists() else b""):
            assert time.monotonic() < deadline, "the Celery worker did not start"
            time.sleep(0.5)
        assert b"beat: Starting" in log.read_bytes()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    output = proc.stdout.read().decode()
    assert f"running at http://127.0.0.1:{port}/" in output
    assert "log in as demo / demo" in output
