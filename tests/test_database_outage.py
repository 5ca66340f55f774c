"""With the database unreachable, clients get 503 with Retry-After, not a crash."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_an_unreachable_database_is_answered_503(tmp_path):
    port, dead_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(DATABASE_URL=f"postgres://postgres@127.0.0.1:{dead_port}/nowhere", VAR_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "thinnest_analytics.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[
                    -2000:
                ]
                time.sleep(0.3)
        body = json.dumps({"agent_id": "agent_abc123", "input": "hi"}).encode()
        status, headers, content = _request(
            f"{base}/api/traces",
            body,
            {"Authorization": "Bearer ta_abcd1234_secret", "Content-Type": "application/json"},
        )
        assert status == 503
        assert headers["Retry-After"] == "5"
        assert json.loads(content)["error"]["code"] == "database_unavailable"
        status, headers, _ = _request(f"{base}/healthz")
        assert status == 503 and headers["Retry-After"] == "5"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
