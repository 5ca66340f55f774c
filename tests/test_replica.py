"""A streaming replica serves the dashboard and the read API; everything else
stays on the primary. The test starts its own small primary and a standby made
from it with ``pg_basebackup -R`` (ports 5441–5449, loopback, trust), runs the
server against both, and pauses the standby's replay to see whose data a page
or an endpoint shows. Waits are on WAL positions, never on time."""

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from .conftest import trace
from .processes import PostgresCluster, app_env, daphne, http, manage, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PORTS = range(5441, 5450)
DATABASE = "thinnest"
PASSWORD = "pw-123456"


def _free_ports(n: int) -> list[int]:
    found = []
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    pytest.fail(f"needs {n} free ports in {PORTS.start}–{PORTS.stop - 1}")


@dataclass
class Replicated:
    primary: PostgresCluster
    standby: PostgresCluster
    env: dict[str, str]
    base: str
    key: str
    tmp: Path

    def lsn(self) -> str:
        return self.primary.sql(DATABASE, "SELECT pg_current_wal_lsn()::text")[0][0]

    def standby_has(self, what: str, lsn: str) -> bool:
        return self.standby.sql(
            DATABASE, f"SELECT coalesce(pg_last_wal_{what}_lsn() >= %s::pg_lsn, false)", (lsn,)
        )[0][0]

    def wait_replayed(self) -> None:
        lsn = self.lsn()
        wait_until(
            lambda: self.standby_has("replay", lsn), timeout=30, what="the standby did not replay", step=0.05
        )

    def wait_received(self) -> str:
        """Wait until the standby has received everything the primary wrote; the position."""
        lsn = self.lsn()
        wait_until(
            lambda: self.standby_has("receive", lsn),
            timeout=30,
            what="the standby did not receive",
            step=0.05,
        )
        return lsn

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.standby.sql(DATABASE, "SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            self.standby.sql(DATABASE, "SELECT pg_wal_replay_resume()")

    def ingest(self, *ids: str) -> None:
        now = datetime.now(UTC) - timedelta(minutes=5)
        items = [trace(id=i, session_id=f"sess_{i}", created_at=now.isoformat()) for i in ids]
        status, _, body = http(
            "POST", f"{self.base}/api/traces", {"traces": items}, {"Authorization": f"Bearer {self.key}"}
        )
        assert status == 200 and len(json.loads(body)["accepted"]) == len(ids), body

    def get(self, path: str) -> tuple[int, dict, dict]:
        status, headers, body = http(
            "GET", f"{self.base}{path}", headers={"Authorization": f"Bearer {self.key}"}
        )
        return status, headers, json.loads(body)

    def traces_counted(self) -> int:
        status, _, body = self.get("/api/analytics/overview?period=24h")
        assert status == 200, body
        return body["total_traces"]

    def browser(self) -> requests.Session:
        """A person signed in to the dashboard."""
        session = requests.Session()
        session.get(f"{self.base}/login/", timeout=30)
        answer = session.post(
            f"{self.base}/login/",
            data={
                "username": "olivia",
                "password": PASSWORD,
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 302, answer.text[-2000:]
        return session


# The primary's schema, a person and an API key, in one process.
SETUP = f"""
from django.core.management import call_command
from accounts.services import api_key_create, organisation_get_or_create, user_create_or_update
from audit.services import Actor
call_command("migrate", interactive=False, verbosity=0)
org = organisation_get_or_create(slug="acme")
user_create_or_update(organisation=org, username="olivia", password="{PASSWORD}", role="owner")
print(api_key_create(organisation=org, name="probe", scopes=["admin", "ingest", "read"], actor=Actor.system("test")).raw_key)
"""


@pytest.fixture(scope="module")
def replicated(tmp_path_factory) -> Iterator[Replicated]:
    tmp = tmp_path_factory.mktemp("replica")
    primary_port, standby_port = _free_ports(2)
    primary = PostgresCluster(port=primary_port)
    standby = PostgresCluster(port=standby_port)
    if not (primary.bin / "pg_basebackup").exists():
        pytest.skip(f"needs pg_basebackup beside {primary.bin / 'initdb'}")
    try:
        primary.init()
        primary.start()
        primary.sql("postgres", f"CREATE DATABASE {DATABASE}")
        env = app_env(DATABASE_URL=primary.url(DATABASE), VAR_DIR=str(tmp), DB_POOL_TIMEOUT="2")
        key = manage("shell", "-c", SETUP, env=env).strip().splitlines()[-1]
        env = {
            **env,
            "DATABASE_REPLICA_URL": standby.url(DATABASE),
            "REPLICA_LAG_CACHE_SECONDS": "0",
            "REPLICA_LAG_NOTICE_SECONDS": "0",
        }
        # The standby is copied while the server starts (it reads the replica only when asked).
        with ThreadPoolExecutor(1) as background:
            copied = background.submit(standby.basebackup, primary)
            with daphne(env, tmp) as base:
                copied.result()
                standby.start()
                yield Replicated(primary, standby, env, base, key, tmp)
    finally:
        standby.remove()
        primary.remove()


def test_the_analytics_api_answers_from_the_replica_and_says_how_far_behind_it_is(replicated):
    replicated.ingest("trace_api_1", "trace_api_2")
    replicated.wait_replayed()
    status, headers, body = replicated.get("/api/analytics/overview?period=24h")
    assert status == 200 and body["total_traces"] >= 2
    assert float(headers["X-Replica-Lag-Seconds"]) >= 0


READ_ENDPOINTS = [
    "/api/agents/agent_abc123/summary?period=24h",
    "/api/analytics/overview?period=24h",
    "/api/analytics/channels?period=24h",
    "/api/analytics/timeseries?period=24h",
    "/api/agents/agent_abc123/traces",
    "/api/traces/trace_every_1",
    "/api/agents/agent_abc123/voice?period=24h",
    "/api/metrics/usage",
    "/api/admin/audit/logs",
]
READ_PAGES = [
    "/",
    "/agents/agent_abc123/performance/",
    "/agents/agent_abc123/compare/",
    "/agents/agent_abc123/voice/",
    "/conversations/",
    "/conversations/sess_trace_every_1/",
    "/traces/",
    "/traces/trace_every_1/",
    "/audit/",
]


def test_every_read_endpoint_and_dashboard_page_is_served_by_the_replica(replicated):
    browser = replicated.browser()
    replicated.ingest("trace_every_1")
    replicated.wait_replayed()
    answers = {path: replicated.get(path)[:2] for path in READ_ENDPOINTS}
    answers.update(
        {
            path: (r.status_code, r.headers)
            for path in READ_PAGES
            for r in [browser.get(replicated.base + path)]
        }
    )
    not_from_replica = {
        path: status
        for path, (status, headers) in answers.items()
        if status != 200 or "X-Replica-Lag-Seconds" not in headers
    }
    assert not_from_replica == {}


def test_a_paused_replica_answers_with_its_own_state_and_its_lag_until_it_catches_up(replicated):
    replicated.ingest("trace_before_pause")
    replicated.wait_replayed()
    before = replicated.traces_counted()
    with replicated.paused():
        replicated.ingest("trace_paused_1", "trace_paused_2")
        replicated.wait_received()
        status, headers, body = replicated.get("/api/analytics/overview?period=24h")
        assert body["total_traces"] == before
        assert float(headers["X-Replica-Lag-Seconds"]) > 0
    replicated.wait_replayed()
    assert replicated.traces_counted() == before + 2


def test_a_dashboard_page_shows_the_replicas_data_and_says_it_is_behind(replicated):
    browser = replicated.browser()
    replicated.ingest("trace_page_1")
    replicated.wait_replayed()
    with replicated.paused():
        replicated.ingest("trace_page_2")
        replicated.wait_received()
        page = browser.get(f"{replicated.base}/traces/?period=24h", timeout=30)
        assert page.status_code == 200
        assert "trace_page_1" in page.text and "trace_page_2" not in page.text
        assert re.search(r"Data as of \d+ s ago", page.text)
    replicated.wait_replayed()
    page = browser.get(f"{replicated.base}/traces/?period=24h", timeout=30)
    assert "trace_page_2" in page.text and "Data as of" not in page.text


def test_writes_go_to_the_primary_while_the_replica_is_paused(replicated):
    with replicated.paused():
        replicated.ingest("trace_written_1")
        replicated.wait_received()
        stored = "SELECT count(*) FROM agents_trace WHERE public_id = 'trace_written_1'"
        assert replicated.primary.sql(DATABASE, stored) == [(1,)]
        assert replicated.standby.sql(DATABASE, stored) == [(0,)]


def test_a_trace_the_replica_has_not_replayed_yet_is_found_on_the_primary(replicated):
    with replicated.paused():
        replicated.ingest("trace_fresh_1")
        status, headers, body = replicated.get("/api/traces/trace_fresh_1")
        assert status == 200 and body["id"] == "trace_fresh_1"
        assert "X-Replica-Lag-Seconds" not in headers


def test_a_person_who_just_changed_something_reads_the_primary_until_the_replica_has_it(replicated):
    replicated.ingest("trace_pin_1")
    replicated.wait_replayed()
    with replicated.paused():
        replicated.ingest("trace_pin_2")
        replicated.wait_received()
        browser = replicated.browser()  # signing in writes: a session, the last login
        page = browser.get(f"{replicated.base}/traces/?period=24h", timeout=30)
        assert "trace_pin_2" in page.text and "X-Replica-Lag-Seconds" not in page.headers
    replicated.wait_replayed()
    page = browser.get(f"{replicated.base}/traces/?period=24h", timeout=30)
    assert float(page.headers["X-Replica-Lag-Seconds"]) >= 0


def test_while_the_replica_is_down_reads_come_from_the_primary_and_return_to_it_after(replicated):
    before = replicated.traces_counted()
    replicated.standby.stop("immediate")
    try:
        replicated.ingest("trace_down_1")
        status, headers, body = replicated.get("/api/analytics/overview?period=24h")
        assert status == 200 and body["total_traces"] == before + 1
        assert "X-Replica-Lag-Seconds" not in headers
    finally:
        replicated.standby.start()
    replicated.wait_replayed()
    wait_until(
        lambda: "X-Replica-Lag-Seconds" in replicated.get("/api/analytics/overview?period=24h")[1],
        timeout=30,
        what="reads did not return to the replica",
    )


def test_without_a_replica_the_server_reads_the_primary_and_says_nothing_of_lag(replicated):
    env = {k: v for k, v in replicated.env.items() if k != "DATABASE_REPLICA_URL"}
    with daphne(env, replicated.tmp) as base, replicated.paused():
        before = replicated.traces_counted()
        replicated.ingest("trace_alone_1")
        replicated.wait_received()
        status, headers, body = http(
            "GET",
            f"{base}/api/analytics/overview?period=24h",
            headers={"Authorization": f"Bearer {replicated.key}"},
        )
        assert status == 200 and json.loads(body)["total_traces"] == before + 1
        assert "X-Replica-Lag-Seconds" not in headers
        assert replicated.traces_counted() == before
