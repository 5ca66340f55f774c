"""The README's first command serves the app on embedded defaults: SQLite, the
in-memory channel layer and the filesystem Celery broker. It says what it is
doing, announces the URL only once the server answers, and stops at once, with
a clear message, when its port is taken."""

import os
import signal
import socket
import sqlite3
import subprocess
import threading
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


def _serve(port: int, var_dir: Path) -> subprocess.Popen:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(PORT=str(port), VAR_DIR=str(var_dir), DEMO_DAYS="1")
    return subprocess.Popen(
        ["bash", "scripts/serve.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class Output:
    """The command's output, read as it comes."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc) -> None:
        for raw in proc.stdout:
            with self.changed:
                self.lines.append(raw.decode(errors="replace"))
                self.changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: any(text in line for line in self.lines), timeout)

    @property
    def text(self) -> str:
        with self.changed:
            return "".join(self.lines)


def test_the_embedded_default_server_answers_once_it_announces_its_url(tmp_path):
    port = _free_port()
    proc = _serve(port, tmp_path)
    output = Output(proc)
    base = f"http://127.0.0.1:{port}"
    try:
        announced = output.wait_for(f"running at http://127.0.0.1:{port}/", timeout=300)
        assert announced, output.text[-3000:]
        # No retry: the URL is printed only after the server answers.
        status, body = _get(f"{base}/healthz")
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
    output.thread.join(timeout=10)
    text = output.text
    assert "log in as demo / demo" in text
    # It says what it is doing, in order, before the URL.
    steps = [
        "Preparing the database",
        "Loading 1 day of demo data",
        "Starting the Celery worker",
        "Starting the server",
    ]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions) and positions[-1] < text.index("running at")


def test_a_busy_port_stops_it_before_anything_starts_or_a_url_is_announced(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(port, tmp_path)
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = out.decode()
    assert proc.returncode != 0
    assert f"Cannot listen on 127.0.0.1:{port}" in text and "PORT=" in text
    assert "running at" not in text
    assert not (tmp_path / "db.sqlite3").exists()  # it stopped before preparing anything
