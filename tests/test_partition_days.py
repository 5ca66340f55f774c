"""Daily partitions are there before rows of their day are written: created
ahead by the beat schedule, on demand by a writer, and checked again when
retention may have dropped them."""

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from agents import partitions
from agents.partitions import (
    PARTITIONED,
    day_of,
    partition_days,
    partition_name,
    partitions_ahead,
    partitions_drop,
)

from .conftest import postgres_only

pytestmark = [pytest.mark.django_db, postgres_only()]


def _tables_of(day) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s)",
            [[partition_name(s.table, day) for s in PARTITIONED]],
        )
        return {name for (name,) in cursor.fetchall()}


def _trace(public_id: str, at: datetime) -> dict:
    return {
        "id": public_id,
        "agent_id": "agent_days",
        "input": "hi",
        "output": "hello",
        "created_at": at.isoformat(),
    }


def test_partitions_ahead_creates_yesterday_to_a_week_ahead_for_every_partitioned_table():
    now = timezone.now()
    partitions_ahead(now=now)
    for offset in range(-1, 8):
        day = day_of(now) + timedelta(days=offset)
        assert _tables_of(day) == {partition_name(s.table, day) for s in PARTITIONED}


def test_a_trace_of_a_day_without_partitions_gets_them_before_it_is_stored(tenant, ingest):
    at = (timezone.now() - timedelta(days=123)).replace(hour=23, minute=59, second=59, microsecond=0)
    assert at.date() not in partition_days()
    assert ingest.post("/api/traces", _trace("trace_new_day", at)).json()["accepted"] == ["trace_new_day"]
    assert at.date() in partition_days()
    assert (
        tenant.api("read")
        .get("/api/traces/trace_new_day")
        .json()["created_at"]
        .startswith(f"{at.date()}T23:59:59")
    )


# Committed writes: dropping a partition waits for transactions that wrote to it.
@pytest.mark.django_db(transaction=True)
def test_a_day_retention_may_drop_is_checked_again_before_writing(tenant, ingest, settings):
    settings.RETENTION_DAYS = 30
    old = timezone.now() - timedelta(days=45)
    assert ingest.post("/api/traces", _trace("trace_old_1", old)).json()["accepted"] == ["trace_old_1"]
    # Another process drops the day (retention) while this one remembers it.
    partitions_drop(day=day_of(old))
    partitions._known_days.setdefault(partitions._database(), set()).add(day_of(old))
    assert ingest.post("/api/traces", _trace("trace_old_2", old)).json()["accepted"] == ["trace_old_2"]
    assert tenant.api("read").get("/api/traces/trace_old_2").status_code == 200
