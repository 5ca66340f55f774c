"""Benchmark (not a test): live voice metrics, event to frame.

    python -m bench.voice [--subscribers 100] [--events 40]

Starts Daphne on loopback, connects the subscribers to one agent's live
metrics WebSocket, then posts call events one at a time and measures, for each
subscriber, the time from sending the POST to receiving the frame that shows
the event. Scenarios: one server with the in-memory channel layer (the
embedded default) and, when Redis answers, two servers sharing the Redis layer
(events posted to one, subscribers on the other). A burst of events shows the
coalescing: frames per subscriber stay a few per second however many events
arrive. Prints a table and writes bench/voice_results.json.

Needs PostgreSQL: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/thinnest_bench),
created and migrated if missing; Redis from BENCH_REDIS_URL, else REDIS_URL.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

from .__main__ import DEFAULT_URL, ROOT, Server, _ensure_database, _percentiles

RESULTS = Path(__file__).resolve().parent / "voice_results.json"
AGENT = "agent_bench_voice"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _post(port: int, key: str, body: dict) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/voice/events",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status != 200:
            raise RuntimeError(f"events answered {response.status}: {response.read()[:300]!r}")
        response.read()


class Subscribers:
    """``n`` WebSocket clients of the agent's live metrics; each keeps the
    arrival time of every frame."""

    def __init__(self, port: int, key: str, n: int) -> None:
        self.uri = f"ws://127.0.0.1:{port}/api/voice/metrics/{AGENT}/ws"
        self.key = key
        self.n = n
        self.frames: list[list[tuple[float, dict]]] = [[] for _ in range(n)]
        self.arrived = [asyncio.Event() for _ in range(n)]
        self.sockets: list = []

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {self.key}"}
        self.sockets = await asyncio.gather(
            *(connect(self.uri, additional_headers=headers) for _ in range(self.n))
        )
        self.readers = [asyncio.create_task(self._read(i, ws)) for i, ws in enumerate(self.sockets)]
        while any(not f for f in self.frames):  # every snapshot in
            await asyncio.sleep(0.05)

    async def _read(self, i: int, ws) -> None:
        async for message in ws:
            self.frames[i].append((time.monotonic(), json.loads(message)))
            self.arrived[i].set()

    async def first_frame(self, i: int, since: float, active_calls: int, timeout: float = 5.0) -> float:
        """When subscriber ``i`` received the first update since ``since`` showing ``active_calls``."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for at, frame in self.frames[i][checked:]:
                if at >= since and frame["type"] == "update" and frame["active_calls"] >= active_calls:
                    return at
            checked = len(self.frames[i])
            self.arrived[i].clear()
            try:
                await asyncio.wait_for(self.arrived[i].wait(), deadline - time.monotonic())
            except TimeoutError:
                raise TimeoutError(f"subscriber {i} saw no frame with {active_calls} active calls") from None

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)


async def _latency(
    ingest_port: int, serve_port: int, keys: dict, subscribers: int, events: int, gap: float
) -> dict:
    call_ids = []
    _post(
        ingest_port,
        keys["ingest"],
        {"type": "call.started", "call_id": f"b-{uuid.uuid4().hex}", "agent_id": AGENT, "at": _now()},
    )
    subs = Subscribers(serve_port, keys["read"], subscribers)
    await subs.open()
    baseline = subs.frames[0][-1][1]["active_calls"]
    answered, to_frame = [], []
    try:
        for n in range(events):
            call_id = f"b-{uuid.uuid4().hex}"
            call_ids.append(call_id)
            sent = time.monotonic()
            body = {"type": "call.started", "call_id": call_id, "agent_id": AGENT, "at": _now()}
            await asyncio.to_thread(_post, ingest_port, keys["ingest"], body)
            answered.append((time.monotonic() - sent) * 1000)
            arrivals = await asyncio.gather(
                *(subs.first_frame(i, sent, baseline + n + 1) for i in range(subscribers))
            )
            to_frame.extend((at - sent) * 1000 for at in arrivals)
            await asyncio.sleep(gap)
    finally:
        await subs.close()
        ends = [{"type": "call.ended", "call_id": c, "at": _now(), "status": "completed"} for c in call_ids]
        if ends:
            _post(ingest_port, keys["ingest"], {"events": ends})
    return {
        "post_answered": _percentiles(answered),
        "event_to_frame": _percentiles(to_frame),
        "subscribers": subscribers,
    }


async def _burst(port: int, keys: dict, subscribers: int, events: int, batch: int) -> dict:
    """``events`` turns posted as fast as four clients can, ``batch`` per request."""
    call_id = f"b-{uuid.uuid4().hex}"
    _post(port, keys["ingest"], {"type": "call.started", "call_id": call_id, "agent_id": AGENT, "at": _now()})
    subs = Subscribers(port, keys["read"], subscribers)
    await subs.open()
    start = time.monotonic()

    def turn(n: int) -> dict:
        return {
            "type": "call.turn",
            "call_id": call_id,
            "at": _now(),
            "event_id": f"t{n}",
            "voice_latency_ms": 700 + n % 300,
            "interrupted": n % 9 == 0,
            "transcription_confidence": 0.9,
        }

    def client(k: int) -> None:
        mine = list(range(k, events, 4))
        for i in range(0, len(mine), batch):
            _post(port, keys["ingest"], {"events": [turn(n) for n in mine[i : i + batch]]})

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    elapsed = time.monotonic() - start
    await asyncio.sleep(0.6)  # the last flush
    frames = [sum(1 for at, f in mine if at >= start and f["type"] == "update") for mine in subs.frames]
    await subs.close()
    _post(
        port, keys["ingest"], {"type": "call.ended", "call_id": call_id, "at": _now(), "status": "completed"}
    )
    return {
        "events": events,
        "events_per_request": batch,
        "seconds": round(elapsed, 2),
        "events_per_second": round(events / elapsed, 1),
        "update_frames_per_subscriber": {"mean": round(statistics.mean(frames), 1), "max": max(frames)},
        "subscribers": subscribers,
    }


def _redis_url() -> str | None:
    url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("REDIS_URL")
    if not url:
        return None
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError:
        return None
    return url


def _servers(count: int, redis_url: str | None) -> list[Server]:
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    else:
        os.environ.pop("REDIS_URL", None)
    try:
        return [Server() for _ in range(count)]
    finally:
        os.environ.pop("REDIS_URL", None)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.voice",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=40, help="events timed one at a time")
    parser.add_argument(
        "--gap",
        type=float,
        default=0.4,
        help="seconds between timed events (above the 250 ms flush interval)",
    )
    parser.add_argument("--burst", type=int, default=3000, help="turns of the burst")
    parser.add_argument("--burst-batch", type=int, default=25, help="turns per request in the burst")
    args = parser.parse_args()

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    redis_url = _redis_url()
    os.environ["DATABASE_URL"] = url
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinnest_analytics.settings")
    sys.path.insert(0, str(ROOT))
    _ensure_database(url)
    import django

    django.setup()
    from accounts.services import api_key_create, organisation_get_or_create
    from audit.services import Actor

    org = organisation_get_or_create(slug="bench-voice")
    keys = {
        scope: api_key_create(
            organisation=org, name=f"bench {scope}", scopes=[scope], actor=Actor.system("bench")
        ).raw_key
        for scope in ("ingest", "read")
    }
    results: dict = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores",
        "scenarios": {},
    }
    scenarios = [("one server, in-memory layer", None)]
    if redis_url:
        scenarios.append(("two servers, Redis layer", redis_url))
    else:
        print("Redis is not reachable (BENCH_REDIS_URL / REDIS_URL): the two-server scenario is skipped.")
    for label, layer in scenarios:
        servers = _servers(2 if layer else 1, layer)
        try:
            ingest_port, serve_port = servers[0].port, servers[-1].port
            latency = asyncio.run(
                _latency(ingest_port, serve_port, keys, args.subscribers, args.events, args.gap)
            )
            burst = (
                asyncio.run(_burst(serve_port, keys, args.subscribers, args.burst, args.burst_batch))
                if not layer
                else None
            )
        finally:
            for server in servers:
                server.stop()
        results["scenarios"][label] = {"latency": latency, **({"burst": burst} if burst else {})}

    print(f"\nlive voice metrics, {args.subscribers} subscribers, {args.events} events one at a time (ms)")
    print(
        f"  {'scenario':<30}{'POST p50':>10}{'POST p95':>10}{'frame p50':>11}{'frame p95':>11}{'frames':>8}"
    )
    for label, r in results["scenarios"].items():
        post, frame = r["latency"]["post_answered"], r["latency"]["event_to_frame"]
        print(
            f"  {label:<30}{post['p50_ms']:>10}{post['p95_ms']:>10}{frame['p50_ms']:>11}{frame['p95_ms']:>11}{frame['calls']:>8}"
        )
    for label, r in results["scenarios"].items():
        if "burst" in r:
            b = r["burst"]
            print(
                f"  burst ({label}): {b['events']} turns in {b['seconds']} s ({b['events_per_second']}/s, "
                f"{b['events_per_request']} a request) gave each "
                f"subscriber {b['update_frames_per_subscriber']['mean']} update frames (max {b['update_frames_per_subscriber']['max']})"
            )
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
