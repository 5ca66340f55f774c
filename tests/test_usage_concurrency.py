"""Racing clients on PostgreSQL: usage events re-sent by several clients at once
are stored and counted once, alongside racing trace batches; racing top-ups
with one Idempotency-Key credit once; racing refunds never exceed the credits."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

import pytest

from billing.models import LedgerEntry, UsageEvent
from billing.selectors import balance, category_costs
from dashboard import selectors
from metrics.rebuild import rollups_rebuild
from metrics.windows import Window

from .conftest import (
    _tenant,
    post_json,
    postgres_only,
    race,
    rollup_snapshot,
    trace,
    usage_event,
    usage_rollup_snapshot,
)

pytestmark = [postgres_only(), pytest.mark.django_db(transaction=True)]

T0 = datetime(2026, 3, 6, 22, 0, tzinfo=UTC)


def _event(n: int) -> dict:
    return usage_event(
        id=f"e{n}",
        agent_id=f"agent_{n % 3}",
        category=("scraping", "web_search")[n % 2],
        cost_usd=f"0.{n:04d}",
        at=(T0 + timedelta(minutes=7 * n)).isoformat(),
    )


def test_racing_usage_batches_lose_nothing_and_count_nothing_twice(live_server):
    tenant = _tenant("race-usage")
    key = tenant.keys["ingest"]
    calls = []
    for client in range(6):  # overlapping windows of ids: every event is sent by several clients
        events = [_event(n) for n in range(client * 20, client * 20 + 60)]
        calls.append(
            (f"{live_server.url}/api/usage/events", key, {"events": events[::-1] if client % 2 else events})
        )
    for client in range(3):  # and traces for the same agents and hours at the same time
        traces = [
            trace(
                id=f"t{n}",
                session_id=f"s{n % 3}-{n % 5}",
                agent_id=f"agent_{n % 3}",
                cost_usd="0.01",
                created_at=(T0 + timedelta(minutes=5 * n)).isoformat(),
            )
            for n in range(client * 10, client * 10 + 40)
        ]
        calls.append((f"{live_server.url}/api/traces", key, {"traces": traces}))
    results = race([partial(post_json, *call) for call in calls])
    assert [status for status, _ in results] == [200] * len(calls)

    unique = {f"e{n}" for n in range(5 * 20 + 60)}
    assert (
        set(UsageEvent.objects.filter(organisation=tenant.organisation).values_list("public_id", flat=True))
        == unique
    )
    stored = [eid for _, body in results[:6] for eid in body["accepted"] if eid not in body["duplicates"]]
    assert sorted(stored) == sorted(unique)  # each event new in exactly one answer

    sent = {f"e{n}": _event(n) for n in range(160)}
    window = Window(T0 - timedelta(hours=1), T0 + timedelta(days=2))
    totals = selectors.overview(organisation=tenant.organisation, window=window)
    traces = 60  # t0 … t59, 0.01 each
    assert (
        totals["total_cost_usd"]
        == sum(Decimal(e["cost_usd"]) for e in sent.values()) + Decimal("0.01") * traces
    )
    per_category = category_costs(organisation=tenant.organisation, window=window)
    for category in ("scraping", "web_search"):
        assert per_category[category] == sum(
            Decimal(e["cost_usd"]) for e in sent.values() if e["category"] == category
        )

    incremental, categories = rollup_snapshot(tenant.organisation), usage_rollup_snapshot(tenant.organisation)
    rollups_rebuild(start=T0 - timedelta(days=1), end=T0 + timedelta(days=2))
    assert rollup_snapshot(tenant.organisation) == incremental
    assert usage_rollup_snapshot(tenant.organisation) == categories


def test_racing_topups_with_one_idempotency_key_credit_once(live_server):
    tenant = _tenant("race-topup")
    url = f"{live_server.url}/api/billing/topups"
    topup = partial(
        post_json, url, tenant.keys["admin"], {"amount_usd": "25.00"}, {"Idempotency-Key": "pay-1"}
    )
    results = race([topup] * 6)
    assert sorted(status for status, _ in results) == [200] * 5 + [201]
    assert len({body["entry"]["id"] for _, body in results}) == 1
    assert LedgerEntry.objects.filter(organisation=tenant.organisation).count() == 1
    assert balance(organisation=tenant.organisation) == Decimal("25.00")


def test_racing_refunds_never_exceed_the_credits(live_server):
    tenant = _tenant("race-refund")
    admin = tenant.keys["admin"]
    assert post_json(f"{live_server.url}/api/billing/topups", admin, {"amount_usd": "100.00"})[0] == 201
    results = race(
        [partial(post_json, f"{live_server.url}/api/billing/refunds", admin, {"amount_usd": "30.00"})] * 6
    )
    assert sorted(status for status, _ in results) == [201] * 3 + [409] * 3
    assert balance(organisation=tenant.organisation) == Decimal("10.00")
