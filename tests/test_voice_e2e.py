"""Two Daphne processes on loopback sharing PostgreSQL and the Redis channel
layer: call events posted to one reach a WebSocket subscriber of the other
within a second."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from django.db import connection
from websockets.asyncio.client import connect

from . import voice
from .conftest import _tenant, postgres_only

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.getenv("REDIS_URL", "")
pytestmark = [postgres_only(), pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def redis_url() -> str:
    if not REDIS_URL:
        pytest.skip("needs REDIS_URL: the two servers share the Redis channel layer")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at REDIS_URL is unreachable: {exc}")
    return REDIS_URL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Daphne:
    """One server process, as `make run` starts it, in its own process group."""

    def __init__(self, env: dict) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(self.port), "-v", "0"]
            + ["thinnest_analytics.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(self.proc.stderr.read().decode()[-3000:]) from None
                time.sleep(0.2)

    def post(self, path: str, key: str, body: dict) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def two_servers(redis_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DATABASE_URL=_database_url(), REDIS_URL=redis_url, VAR_DIR=str(tmp_path), LOG_LEVEL="ERROR")
    servers = [Daphne(env), Daphne(env)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_events_posted_to_one_server_reach_subscribers_of_the_other(two_servers):
    ingesting, serving = two_servers
    tenant = _tenant("e2e")
    ingest_key, read_key = tenant.keys["ingest"], tenant.keys["read"]
    now = time.time()

    def at(offset: float = 0) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + offset)) + "Z"

    assert ingesting.post("/api/voice/events", ingest_key, voice.started(call_id="e2e-1", at=at())) == 200

    async def watch() -> list[tuple[dict, float]]:
        uri = f"ws://127.0.0.1:{serving.port}/api/voice/metrics/agent_abc123/ws"
        async with connect(uri, additional_headers={"Authorization": f"Bearer {read_key}"}) as ws:
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert (snapshot["type"], snapshot["active_calls"]) == ("snapshot", 1)
            seen = []
            for event, wanted in (
                (voice.started(call_id="e2e-2", at=at(1)), 2),
                (voice.turn(call_id="e2e-2", at=at(2), voice_latency_ms=640), 2),
                (voice.ended(call_id="e2e-1", at=at(3)), 1),
            ):
                sent = time.monotonic()
                status = await asyncio.to_thread(ingesting.post, "/api/voice/events", ingest_key, event)
                assert status == 200
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                    if frame["type"] == "update" and frame["active_calls"] == wanted:
                        break
                seen.append((frame, time.monotonic() - sent))
            return seen

    seen = asyncio.run(watch())
    assert all(elapsed < 1.0 for _, elapsed in seen), [elapsed for _, elapsed in seen]
    assert seen[1][0]["avg_latency_ms"] == 640
    assert [f["active_calls"] for f, _ in seen] == [2, 2, 1]
