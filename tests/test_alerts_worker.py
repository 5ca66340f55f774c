"""A real Celery worker with beat, on Redis, fires a rule and delivers its
webhook — no eager mode."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from alerts.models import AlertEvent

from .conftest import LOOPBACK, _tenant, postgres_only
from .test_alerts import Receiver, _conversations, _rule

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [postgres_only(), pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_beat_evaluates_and_the_worker_delivers(tmp_path, loopback_receivers):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL: the worker and beat run on the Redis broker")
    tenant = _tenant("worker-alerts")
    receiver = Receiver()
    _rule(tenant, notify=[{"type": "webhook", "url": receiver.url, "secret": "k"}], window_minutes=30)
    _conversations(tenant.api("ingest"), 20, failing=20)
    db = connection.settings_dict
    env = dict(
        os.environ,
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        ALERTS_EVALUATION_SECONDS="1",
        VAR_DIR=str(tmp_path),
        DB_POOL="false",
        OUTBOUND_ALLOWED_NETWORKS=LOOPBACK,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "thinnest_analytics",
            "worker",
            "--beat",
            "--pool=solo",
            "--loglevel=INFO",
            "--schedule",
            str(tmp_path / "beat"),
            "-Q",
            "celery",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not receiver.requests and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stdout.read().decode()[-3000:]
            time.sleep(0.5)
        assert receiver.requests, "no webhook within a minute"
        time.sleep(3)  # a few more beats: the rule keeps firing, but notifies once
        payloads = [json.loads(body) for _, body in receiver.requests]
        assert [p["state"] for p in payloads] == ["firing"]
        assert AlertEvent.objects.filter(organisation=tenant.organisation, state="firing").count() == 1
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        receiver.close()
