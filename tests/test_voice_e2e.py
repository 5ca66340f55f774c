"""Two Daphne processes on loopback sharing PostgreSQL and the Redis channel
layer: call events posted to one reach a WebSocket subscriber of the other
within a second."""

import asyncio
import json
import os
import time

import pytest
import redis
from websockets.asyncio.client import connect

from . import voice
from .conftest import _tenant, postgres_only
from .daphne import Daphne, database_url

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


@pytest.fixture
def two_servers(redis_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DATABASE_URL=database_url(), REDIS_URL=redis_url, VAR_DIR=str(tmp_path), LOG_LEVEL="ERROR")
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
