"""PostgreSQL stopped in the middle of ingestion: clients get 503 with
Retry-After (never a 500), nothing is half-written, ingestion resumes on its
own when the database is back, and after the client re-sends what failed the
totals are exact. A throwaway cluster of its own, never the shared server."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from .conftest import trace
from .processes import app_env, daphne, http, manage, postgres_cluster, wait_until

pytestmark = pytest.mark.slow

BATCH = 20
CLIENTS = 2


def _batch(client: int, n: int, now: datetime) -> list[dict]:
    """Traces of conversations that span batches, with steps, scores and errors."""
    items = []
    for i in range(BATCH):
        k = n * BATCH + i
        conversation = k // 7
        items.append(
            trace(
                id=f"c{client}-t{k}",
                session_id=f"c{client}-s{conversation}",
                agent_id=f"agent_{conversation % 3}",
                status="error" if k % 11 == 0 else "success",
                error="tool timed out" if k % 11 == 0 else None,
                latency_ms=200 + (k * 37) % 3000,
                evaluation_score=k % 5 if k % 4 == 0 else None,
                steps=[{"kind": "llm", "name": "chat", "latency_ms": 100, "input_tokens": 10}],
                created_at=(now - timedelta(seconds=(k * 13) % 1800)).isoformat(),
            )
        )
    return items


class Client:
    """Sends numbered batches in a loop and remembers what to send again."""

    def __init__(self, base: str, key: str, number: int, now: datetime) -> None:
        self.base, self.key, self.number, self.now = base, key, number, now
        self.sent: list[list[dict]] = []
        self.outcomes: list[tuple[int, object]] = []  # (batch, status or error)
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)

    def post(self, items: list[dict]) -> tuple[int | str, dict]:
        try:
            status, headers, _ = http(
                "POST",
                f"{self.base}/api/traces",
                {"traces": items},
                {"Authorization": f"Bearer {self.key}"},
                timeout=20,
            )
        except OSError as exc:  # refused, reset, timed out: the client does not know
            return type(exc).__name__, {}
        return status, headers

    def send_next(self) -> int | str:
        n = len(self.sent)
        items = _batch(self.number, n, self.now)
        self.sent.append(items)
        status, headers = self.post(items)
        if status == 503 and not headers.get("Retry-After"):
            status = "503 without Retry-After"
        self.outcomes.append((n, status))
        return status

    def run(self) -> None:
        while self.running:
            if self.send_next() != 200:
                time.sleep(0.2)

    def accepted_since(self, index: int) -> int:
        return sum(1 for _, s in self.outcomes[index:] if s == 200)

    def resend_failed(self) -> None:
        """Send again every batch that got anything but a 200, until it does."""
        for n, status in list(self.outcomes):
            if status == 200:
                continue
            for _ in range(20):
                again, _ = self.post(self.sent[n])
                if again == 200:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"batch {n} was never accepted")


def _rollups(cluster, database) -> dict:
    rows = cluster.sql(
        database,
        """SELECT 'hour', to_jsonb(r) - 'id' FROM dashboard_hourlyrollup r
           UNION ALL SELECT 'day', to_jsonb(r) - 'id' FROM dashboard_dailyrollup r""",
    )
    return {
        (kind, r["agent_id"], r["channel"], r["deployment_version"], r["bucket_start"]): r for kind, r in rows
    }


def test_ingestion_survives_a_database_outage(tmp_path):
    with postgres_cluster() as cluster:
        cluster.sql("postgres", "CREATE DATABASE thinnest")
        env = app_env(DATABASE_URL=cluster.url("thinnest"), VAR_DIR=str(tmp_path), DB_POOL_TIMEOUT="2")
        manage("migrate", "--no-input", "-v0", env=env)
        key = manage("create_api_key", "outage", "--name", "agent", "--scopes", "ingest,read", env=env)
        key = key.strip().splitlines()[-1]
        now = datetime.now(UTC).replace(microsecond=0)
        with daphne(env, tmp_path) as base:
            clients = [Client(base, key, number, now) for number in range(CLIENTS)]
            for c in clients:
                c.thread.start()
            try:
                wait_until(
                    lambda: all(c.accepted_since(0) >= 5 for c in clients),
                    timeout=60,
                    what="ingestion did not start",
                )
                cluster.stop("immediate")
                stopped = [len(c.outcomes) for c in clients]
                wait_until(
                    lambda: all(len(c.outcomes) >= s + 2 for c, s in zip(clients, stopped, strict=True)),
                    timeout=60,
                    what="no answers while the database was down",
                )
                status, headers, body = http("GET", f"{base}/healthz")
                assert status == 503 and headers["Retry-After"]
                status, headers, body = http(
                    "GET",
                    f"{base}/api/analytics/overview?period=24h",
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert status == 503 and json.loads(body)["error"]["code"] == "database_unavailable"
                down = [c.outcomes[s:] for c, s in zip(clients, stopped, strict=True)]

                cluster.start()
                restarted = [len(c.outcomes) for c in clients]
                started = time.monotonic()
                wait_until(
                    lambda: all(c.accepted_since(r) >= 3 for c, r in zip(clients, restarted, strict=True)),
                    timeout=60,
                    what="ingestion did not resume on its own",
                )
                recovery = time.monotonic() - started
            finally:
                for c in clients:
                    c.running = False
                for c in clients:
                    c.thread.join(timeout=60)
            # Never a 500; a connection cut before the answer is the client's to retry.
            statuses = {s for c in clients for _, s in c.outcomes}
            assert statuses <= {200, 503, "ConnectionResetError", "RemoteDisconnected"}, statuses
            assert any(s == 503 for d in down for _, s in d), down
            for c in clients:
                c.resend_failed()
            print(
                f"\n{sum(len(d) for d in down)} answers while down, resumed {recovery:.1f} s after the restart"
            )

            # A restart nobody noticed: pooled connections are checked before use,
            # so the first request after it is served, not answered 503.
            cluster.stop("immediate")
            cluster.start()
            assert clients[0].send_next() == 200

        sent = {t["id"]: t for c in clients for batch in c.sent for t in batch}
        [(stored, distinct)] = cluster.sql(
            "thinnest", "SELECT count(*), count(DISTINCT public_id) FROM agents_trace"
        )
        assert stored == distinct == len(sent)
        # Every conversation's counters agree with its traces: no trace without them.
        mismatched = cluster.sql(
            "thinnest",
            """SELECT s.public_id FROM agents_session s
               LEFT JOIN agents_trace t ON t.session_id = s.id
               GROUP BY s.id HAVING s.trace_count <> count(t.id)
                  OR s.error_count <> count(t.id) FILTER (WHERE t.status = 'error')
                  OR s.started_at IS DISTINCT FROM min(t.created_at)""",
        )
        assert mismatched == []
        expected_steps = len(sent)
        [(steps,)] = cluster.sql("thinnest", "SELECT count(*) FROM agents_tracestep")
        assert steps == expected_steps
        [(scores,)] = cluster.sql("thinnest", "SELECT count(*) FROM agents_score")
        assert scores == sum(1 for t in sent.values() if "evaluation_score" in t)
        # Incremental rollups equal a rebuild from raw rows.
        incremental = _rollups(cluster, "thinnest")
        assert sum(r["traces"] for (kind, *_), r in incremental.items() if kind == "hour") == len(sent)
        oldest = min(t["created_at"] for t in sent.values())
        manage(
            "rebuild_rollups",
            "--from",
            oldest,
            "--to",
            (now + timedelta(seconds=1)).isoformat(),
            "-v0",
            env=env,
        )
        assert _rollups(cluster, "thinnest") == incremental
