"""A backup taken with pg_dump restores with pg_restore into a fresh database
on another server, which serves the same numbers and takes new traces — the
commands of docs/operations.md, run for real."""

import json
import subprocess
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from .conftest import _tenant, trace
from .processes import app_env, current_database_url, daphne, http, postgres_cluster

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _counts(rows_of) -> dict[str, int]:
    tables = rows_of(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
        "AND table_type = 'BASE TABLE' ORDER BY table_name"
    )
    return {t: rows_of(f'SELECT count(*) FROM "{t}"')[0][0] for (t,) in tables}


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_dump_restores_into_a_fresh_database(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL): backups are taken with pg_dump")
    tenant = _tenant("backup")
    now = timezone.now().replace(microsecond=0)
    batch = [
        trace(
            id=f"b{n}",
            session_id=f"bs{n // 3}",
            status="error" if n % 5 == 0 else "success",
            latency_ms=200 + 31 * n,
            evaluation_score=n % 5,
            steps=[{"kind": "llm", "name": "chat", "latency_ms": 90}],
            created_at=(now - timedelta(minutes=7 * n)).isoformat(),
        )
        for n in range(40)
    ]
    assert tenant.api("ingest").post("/api/traces", {"traces": batch}).status_code == 200
    window = {"from": (now - timedelta(days=1)).isoformat(), "to": (now + timedelta(minutes=1)).isoformat()}
    summary = tenant.api("read").get("/api/agents/agent_abc123/summary", window).json()
    assert summary["total_traces"] == 40

    def source(sql):
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()

    with postgres_cluster() as cluster:
        dump = tmp_path / "thinnest.dump"
        _run(
            str(cluster.bin / "pg_dump"),
            "--format=custom",
            "--no-owner",
            "--no-acl",
            f"--file={dump}",
            current_database_url(),
        )
        cluster.sql("postgres", "CREATE DATABASE thinnest_restored")
        _run(
            str(cluster.bin / "pg_restore"),
            "--no-owner",
            "--no-acl",
            "--exit-on-error",
            f"--dbname={cluster.url('thinnest_restored')}",
            str(dump),
        )
        restored = _counts(lambda sql: cluster.sql("thinnest_restored", sql))
        assert restored == _counts(source) and restored["agents_trace"] == 40

        env = app_env(DATABASE_URL=cluster.url("thinnest_restored"), VAR_DIR=str(tmp_path))
        with daphne(env, tmp_path) as base:
            query = "&".join(f"{k}={v.replace('+', '%2B')}" for k, v in window.items())
            status, _, body = http(
                "GET",
                f"{base}/api/agents/agent_abc123/summary?{query}",
                headers={"Authorization": f"Bearer {tenant.keys['read']}"},
            )
            assert status == 200 and json.loads(body) == summary
            # Sequences and constraints came back too: new rows go in, re-sends stay single.
            status, _, body = http(
                "POST",
                f"{base}/api/traces",
                {"traces": [trace(id="after-restore", session_id="bs0"), trace(id="b1")]},
                {"Authorization": f"Bearer {tenant.keys['ingest']}"},
            )
            assert status == 200 and json.loads(body)["duplicates"] == ["b1"], body
        assert cluster.sql("thinnest_restored", "SELECT count(*) FROM agents_trace") == [(41,)]
