"""The ledger: top-ups, refunds, adjustments and subscription changes through
the API, each audited with the change, answering the new balance; entries are
immutable; the balance is the ledger minus usage, whatever happened in between."""

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import AppendOnlyError, AuditLog
from billing.models import LedgerEntry, Subscription
from billing.selectors import balance

from .conftest import _tenant, postgres_only, trace, usage_event

_orgs = itertools.count()


@pytest.fixture
def admin(tenant):
    return tenant.api("admin")


def test_a_topup_credits_the_balance_and_is_audited(tenant, admin):
    r = admin.post("/api/billing/topups", {"amount_usd": "100.00", "reference": "pay_123"})
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["balance_usd"] == 100.0 and body["duplicate"] is False
    assert body["entry"]["kind"] == "topup" and body["entry"]["amount_usd"] == 100.0
    assert body["entry"]["reference"] == "pay_123"
    entry = LedgerEntry.objects.get()
    assert entry.amount_usd == Decimal("100.00") and entry.created_by.startswith("apikey:")
    log = AuditLog.objects.get(action="billing.topup")
    assert log.resource_type == "ledger_entry" and log.resource_id == str(entry.pk)
    assert log.details == {
        "kind": "topup",
        "amount_usd": "100.00",
        "reference": "pay_123",
        "balance_usd": "100.00",
    }


def test_a_number_amount_is_taken_exactly(tenant, admin):
    assert admin.post("/api/billing/topups", {"amount_usd": 19.99}).status_code == 201
    assert LedgerEntry.objects.get().amount_usd == Decimal("19.99")


def test_a_resent_topup_with_the_same_idempotency_key_is_stored_once(tenant, admin):
    first = admin.post("/api/billing/topups", {"amount_usd": "50.00"}, HTTP_IDEMPOTENCY_KEY="order-7")
    again = admin.post("/api/billing/topups", {"amount_usd": "50.00"}, HTTP_IDEMPOTENCY_KEY="order-7")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True and again.json()["entry"]["id"] == first.json()["entry"]["id"]
    assert LedgerEntry.objects.count() == 1
    assert AuditLog.objects.filter(action="billing.topup").count() == 1
    other = admin.post("/api/billing/topups", {"amount_usd": "60.00"}, HTTP_IDEMPOTENCY_KEY="order-7")
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]["message"]
    assert LedgerEntry.objects.count() == 1
    assert balance(organisation=tenant.organisation) == Decimal("50.00")


def test_a_refund_is_a_negative_entry_and_never_exceeds_the_credits(tenant, admin):
    admin.post("/api/billing/topups", {"amount_usd": "100.00"})
    r = admin.post("/api/billing/refunds", {"amount_usd": "30.00", "reference": "re_1"})
    assert r.status_code == 201
    assert r.json()["entry"]["amount_usd"] == -30.0 and r.json()["balance_usd"] == 70.0
    too_much = admin.post("/api/billing/refunds", {"amount_usd": "70.01"})
    assert too_much.status_code == 409
    assert too_much.json()["error"]["code"] == "refund_exceeds_credits"
    assert (
        "amount_usd" in too_much.json()["error"]["message"] and "70.00" in too_much.json()["error"]["message"]
    )
    assert LedgerEntry.objects.count() == 2
    assert AuditLog.objects.filter(action="billing.refund").count() == 1


def test_a_refund_may_leave_a_negative_balance_when_usage_used_the_credits(tenant, admin, ingest):
    admin.post("/api/billing/topups", {"amount_usd": "10.00"})
    ingest.post("/api/traces", trace(cost_usd="4.00"))
    r = admin.post("/api/billing/refunds", {"amount_usd": "10.00"})
    assert r.status_code == 201 and r.json()["balance_usd"] == -4.0


def test_an_adjustment_needs_a_reason_and_may_be_negative(tenant, admin):
    r = admin.post("/api/billing/adjustments", {"amount_usd": "-2.50", "reason": "duplicate charge reversed"})
    assert r.status_code == 201 and r.json()["balance_usd"] == -2.5
    log = AuditLog.objects.get(action="billing.adjustment")
    assert log.details["reason"] == "duplicate charge reversed" and log.details["amount_usd"] == "-2.50"
    zero = admin.post("/api/billing/adjustments", {"amount_usd": "0", "reason": "nothing"})
    assert zero.status_code == 400 and "amount_usd" in zero.json()["error"]["message"]


def test_a_subscription_change_charges_a_priced_plan(tenant, admin, settings):
    settings.BILLING_PLANS = ["free", "pro:49.00", "enterprise"]
    admin.post("/api/billing/topups", {"amount_usd": "100.00"})
    r = admin.post("/api/billing/subscription", {"plan": "pro"})
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["plan"], body["previous_plan"], body["changed"]) == ("pro", None, True)
    assert body["charge"]["kind"] == "subscription" and body["charge"]["amount_usd"] == -49.0
    assert body["balance_usd"] == 51.0
    log = AuditLog.objects.get(action="billing.subscription_change")
    assert log.details["plan"] == "pro" and log.details["charge_usd"] == "49.00"
    # An unpriced plan is recorded without a charge.
    r = admin.post("/api/billing/subscription", {"plan": "enterprise"})
    assert r.json()["charge"] is None and r.json()["previous_plan"] == "pro"
    assert Subscription.objects.get(organisation=tenant.organisation).plan == "enterprise"
    assert LedgerEntry.objects.filter(kind="subscription").count() == 1
    assert AuditLog.objects.filter(action="billing.subscription_change").count() == 2


def test_choosing_the_current_plan_changes_and_records_nothing(tenant, admin, settings):
    settings.BILLING_PLANS = ["free", "pro:49.00"]
    admin.post("/api/billing/subscription", {"plan": "pro"})
    r = admin.post("/api/billing/subscription", {"plan": "pro"})
    assert r.status_code == 200 and r.json()["changed"] is False and r.json()["charge"] is None
    assert LedgerEntry.objects.count() == 1
    assert AuditLog.objects.filter(action="billing.subscription_change").count() == 1


def test_ledger_entries_cannot_be_changed_or_deleted(tenant, admin):
    admin.post("/api/billing/topups", {"amount_usd": "5.00"})
    entry = LedgerEntry.objects.get()
    entry.amount_usd = Decimal("500.00")
    with pytest.raises(AppendOnlyError):
        entry.save()
    with pytest.raises(AppendOnlyError):
        entry.delete()
    with pytest.raises(AppendOnlyError):
        LedgerEntry.objects.filter(pk=entry.pk).update(amount_usd=1)
    with pytest.raises(AppendOnlyError):
        LedgerEntry.objects.all().delete()
    assert LedgerEntry.objects.get().amount_usd == Decimal("5.00")


@postgres_only()
def test_the_database_refuses_to_change_the_ledger(tenant, admin):
    from django.db import DatabaseError

    admin.post("/api/billing/topups", {"amount_usd": "5.00"})
    for statement in (
        "UPDATE billing_ledgerentry SET amount_usd = 500",
        "DELETE FROM billing_ledgerentry",
        "TRUNCATE billing_ledgerentry",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                # The test's own inserts leave deferred foreign-key checks pending,
                # which TRUNCATE would trip over before reaching the trigger.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute(statement)
    assert LedgerEntry.objects.get().amount_usd == Decimal("5.00")


# --- the balance after any sequence of events ----------------------------------

T0 = datetime(2026, 3, 6, tzinfo=UTC)
money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=2)
usage_cost = st.decimals(min_value=Decimal(0), max_value=Decimal("20"), places=6)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("topup"), money),
        st.tuples(st.just("refund"), money),
        st.tuples(st.just("trace"), usage_cost),
        st.tuples(st.just("event"), usage_cost),
        st.tuples(st.just("adjustment"), money, st.booleans()),
    ),
    max_size=12,
)


def _money_equal(a, b) -> bool:
    if connection.vendor == "postgresql":
        return Decimal(str(a)) == Decimal(str(b))
    return abs(Decimal(str(a)) - Decimal(str(b))) < Decimal("1e-9")  # SQLite keeps decimals as floats


@pytest.mark.django_db
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps)
def test_balance_is_the_ledger_minus_usage_after_any_sequence(steps):
    tenant = _tenant(f"ledger-{next(_orgs)}")
    admin, ingest, reader = tenant.api("admin"), tenant.api("ingest"), tenant.api("read")
    ledger, usage = Decimal(0), Decimal(0)
    for n, step in enumerate(steps):
        kind, amount = step[0], step[1]
        at = (T0 + timedelta(hours=n, minutes=17)).isoformat()
        if kind == "topup":
            assert admin.post("/api/billing/topups", {"amount_usd": str(amount)}).status_code == 201
            ledger += amount
        elif kind == "refund":
            r = admin.post("/api/billing/refunds", {"amount_usd": str(amount)})
            if amount <= ledger:
                assert r.status_code == 201
                ledger -= amount
            else:
                assert r.status_code == 409
        elif kind == "adjustment":
            signed = amount if step[2] else -amount
            r = admin.post("/api/billing/adjustments", {"amount_usd": str(signed), "reason": "test"})
            assert r.status_code == 201
            ledger += signed
        elif kind == "trace":
            r = ingest.post(
                "/api/traces", trace(id=f"t{n}", session_id=f"s{n}", cost_usd=str(amount), created_at=at)
            )
            assert r.status_code == 200
            usage += amount
        else:
            r = ingest.post("/api/usage/events", usage_event(id=f"e{n}", cost_usd=str(amount), at=at))
            assert r.status_code == 200
            usage += amount
        got = reader.get("/api/metrics/usage").json()["balance_usd"]
        assert _money_equal(got, ledger - usage), (step, got, ledger - usage)
    entries = sum(
        LedgerEntry.objects.filter(organisation=tenant.organisation).values_list("amount_usd", flat=True)
    )
    assert entries == ledger
    assert _money_equal(balance(organisation=tenant.organisation), ledger - usage)
