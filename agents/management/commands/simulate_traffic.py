"""Demo traffic against a running server, through the public HTTP API only: voice
calls (start, a turn every few seconds, end) with the agent's replies as
traces, and chat conversations beside them, so the live panels move."""

import json
import math
import random
import signal
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

QUESTIONS = (
    ("Hi, who is this?", "This is Ava from Acme, calling about your trial."),
    ("How much does the team plan cost?", "The team plan is $49 per seat per month, billed yearly."),
    ("Can we book a demo for Tuesday?", "Booked: Tuesday at 2 PM, invite sent."),
    ("Does it work with our CRM?", "Yes, it syncs with the common CRMs out of the box."),
)
CHAT = (
    ("What are your hours?", "We're open Monday to Friday, 9 AM to 5 PM EST."),
    ("Where is my order?", "It left our warehouse yesterday and arrives Thursday."),
)


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Call:
    call_id: str
    turns_left: int
    next_turn: float


class Api:
    """POSTs JSON with the key; a server that is down or restarting costs a
    skipped send, never the simulator."""

    def __init__(self, url: str, key: str, out) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.out = out
        self.failures = 0

    def post(self, path: str, body: dict) -> bool:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            return True
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise CommandError(
                    f"the server refused the key ({exc.code}); it needs the ingest scope"
                ) from None
            self.out.write(f"{path}: {exc.code} {exc.read()[:200]!r}")
        except OSError as exc:
            self.failures += 1
            if self.failures % 20 == 1:
                self.out.write(f"{path}: server unreachable ({exc}); retrying")
        return False


class Command(BaseCommand):
    help = "Place voice calls and chat traffic against a running server (Ctrl-C ends its calls and stops)."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
        parser.add_argument("--key", required=True, help="an API key with the ingest scope")
        parser.add_argument("--duration", type=float, default=0, help="seconds to run; 0 runs until stopped")
        parser.add_argument("--rate", type=float, default=6, help="new calls per minute (chat: the same)")
        parser.add_argument("--agent", default="agent_sales", help="the voice agent placing calls")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args, url, key, duration, rate, agent, seed, **options):
        if rate <= 0:
            raise CommandError("--rate must be above 0")
        rng = random.Random(seed)
        api = Api(url, key, self.stdout)
        stopping = []
        previous_handler = signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        calls: list[Call] = []
        started = time.monotonic()
        placed = 0
        self.stdout.write(f"Simulating {rate:g} calls and chats a minute against {url} (agent {agent}).")
        try:
            while not stopping and (not duration or time.monotonic() - started < duration):
                tick = time.monotonic()
                events, traces = [], []
                # New calls and chats arrive as a Poisson process.
                if rng.random() < 1 - math.exp(-rate / 60 * 0.25):
                    call = Call(f"sim_{uuid.uuid4().hex[:12]}", rng.randint(3, 10), tick + rng.uniform(2, 5))
                    calls.append(call)
                    placed += 1
                    events.append(
                        {
                            "type": "call.started",
                            "call_id": call.call_id,
                            "agent_id": agent,
                            "agent_name": "Sales Caller",
                            "at": _now(),
                            "from_number": f"+1415555{rng.randint(1000, 9999)}",
                            "to_number": "+14155550100",
                        }
                    )
                if rng.random() < 1 - math.exp(-rate / 60 * 0.25):
                    traces.append(self._chat(rng))
                for call in [c for c in calls if c.next_turn <= tick]:
                    events.append(self._turn(call, rng))
                    traces.append(self._reply(call, agent, rng))
                    call.turns_left -= 1
                    call.next_turn = tick + rng.uniform(3, 9)
                    if call.turns_left == 0:
                        status = rng.choices(["completed", "failed", "dropped"], [0.9, 0.05, 0.05])[0]
                        events.append(
                            {"type": "call.ended", "call_id": call.call_id, "at": _now(), "status": status}
                        )
                        calls.remove(call)
                if traces:
                    api.post("/api/traces", {"traces": traces})
                if events:
                    api.post("/api/voice/events", {"events": events})
                time.sleep(max(0.0, 0.25 - (time.monotonic() - tick)))
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
            # Hang up what is still going, so no call waits to be found stale.
            if calls:
                api.post(
                    "/api/voice/events",
                    {
                        "events": [
                            {"type": "call.ended", "call_id": c.call_id, "at": _now(), "status": "completed"}
                            for c in calls
                        ]
                    },
                )
        self.stdout.write(f"Placed {placed} calls in {time.monotonic() - started:.0f} s.")

    def _turn(self, call: Call, rng: random.Random) -> dict:
        return {
            "type": "call.turn",
            "call_id": call.call_id,
            "at": _now(),
            "voice_latency_ms": round(rng.lognormvariate(math.log(850), 0.3)),
            "interrupted": rng.random() < 0.12,
            "transcription_confidence": round(rng.uniform(0.8, 0.99), 3),
        }

    def _reply(self, call: Call, agent: str, rng: random.Random) -> dict:
        question, answer = rng.choice(QUESTIONS)
        return {
            "agent_id": agent,
            "session_id": call.call_id,
            "channel": "voice",
            "input": question,
            "output": answer,
            "model": "gpt-4o",
            "input_tokens": rng.randint(200, 1200),
            "output_tokens": rng.randint(20, 120),
            "latency_ms": round(rng.lognormvariate(math.log(1100), 0.35)),
            "created_at": _now(),
        }

    def _chat(self, rng: random.Random) -> dict:
        question, answer = rng.choice(CHAT)
        return {
            "agent_id": "agent_support",
            "agent_name": "Support Agent",
            "session_id": f"sim_chat_{uuid.uuid4().hex[:12]}",
            "channel": "chat",
            "input": question,
            "output": answer,
            "model": "gpt-4o-mini",
            "input_tokens": rng.randint(80, 900),
            "output_tokens": rng.randint(20, 200),
            "latency_ms": round(rng.lognormvariate(math.log(900), 0.4)),
            "created_at": _now(),
        }
