"""Every malformed usage or billing request gets a 4xx whose message names the
field, and nothing is stored."""

import json

import pytest

from agents.models import Agent
from audit.models import AuditLog
from billing.models import LedgerEntry, Subscription, UsageEvent

from .conftest import usage_event

# (case, path, scope, raw body, status, words the message must contain)
CASES = [
    # usage events
    ("events: malformed JSON", "/api/usage/events", "ingest", '{"id": ', 400, ["not valid JSON"]),
    ("events: a number", "/api/usage/events", "ingest", "42", 400, ["usage event object"]),
    ("events: empty batch", "/api/usage/events", "ingest", {"events": []}, 400, ["empty"]),
    ("events: not a list", "/api/usage/events", "ingest", {"events": {"a": 1}}, 400, ["must be a list"]),
    ("events: extra key", "/api/usage/events", "ingest", {"events": [usage_event()], "x": 1}, 400, ["'x'"]),
    (
        "events: 1001 items",
        "/api/usage/events",
        "ingest",
        {"events": [usage_event(id=f"e{i}") for i in range(1001)]},
        413,
        ["at most 1000", "1001"],
    ),
    ("events: no id", "/api/usage/events", "ingest", usage_event(id=None), 400, ["id", "required"]),
    ("events: id with a slash", "/api/usage/events", "ingest", usage_event(id="a/b"), 400, ["id", "pattern"]),
    (
        "events: no agent",
        "/api/usage/events",
        "ingest",
        usage_event(agent_id=None),
        400,
        ["agent_id", "required"],
    ),
    ("events: no category", "/api/usage/events", "ingest", usage_event(category=None), 400, ["category"]),
    (
        "events: category not a slug",
        "/api/usage/events",
        "ingest",
        usage_event(category="Scraping!"),
        400,
        ["category", "pattern"],
    ),
    (
        "events: llm_tokens",
        "/api/usage/events",
        "ingest",
        usage_event(category="llm_tokens"),
        400,
        ["category", "traces"],
    ),
    (
        "events: negative cost",
        "/api/usage/events",
        "ingest",
        usage_event(cost_usd="-0.01"),
        400,
        ["cost_usd", "greater than or equal to 0"],
    ),
    ("events: cost as text", "/api/usage/events", "ingest", usage_event(cost_usd="cheap"), 400, ["cost_usd"]),
    (
        "events: cost too precise",
        "/api/usage/events",
        "ingest",
        usage_event(cost_usd="0.00000000001"),
        400,
        ["cost_usd", "decimal places"],
    ),
    ("events: huge cost", "/api/usage/events", "ingest", usage_event(cost_usd="1000001"), 400, ["cost_usd"]),
    ("events: cost is true", "/api/usage/events", "ingest", usage_event(cost_usd=True), 400, ["cost_usd"]),
    ("events: negative quantity", "/api/usage/events", "ingest", usage_event(quantity=-1), 400, ["quantity"]),
    ("events: no unit", "/api/usage/events", "ingest", usage_event(unit=""), 400, ["unit"]),
    ("events: long unit", "/api/usage/events", "ingest", usage_event(unit="u" * 33), 400, ["unit", "32"]),
    (
        "events: NUL in unit",
        "/api/usage/events",
        "ingest",
        usage_event(unit="pa\x00ges"),
        400,
        ["unit", "NUL"],
    ),
    (
        "events: year 1999",
        "/api/usage/events",
        "ingest",
        usage_event(at="1999-12-31T23:59:59Z"),
        400,
        ["at", "2000"],
    ),
    (
        "events: far future",
        "/api/usage/events",
        "ingest",
        usage_event(at="2999-01-01T00:00:00Z"),
        400,
        ["at", "future"],
    ),
    (
        "events: unknown field",
        "/api/usage/events",
        "ingest",
        usage_event(colour="blue"),
        400,
        ["colour", "not a known field"],
    ),
    ("events: NaN", "/api/usage/events", "ingest", '{"id": "e", "cost_usd": NaN}', 400, ["NaN"]),
    # top-ups
    ("topup: malformed JSON", "/api/billing/topups", "admin", '{"amount_usd": ', 400, ["body"]),
    ("topup: no amount", "/api/billing/topups", "admin", {"reference": "x"}, 400, ["amount_usd", "required"]),
    (
        "topup: zero",
        "/api/billing/topups",
        "admin",
        {"amount_usd": "0"},
        400,
        ["amount_usd", "greater than 0"],
    ),
    ("topup: negative", "/api/billing/topups", "admin", {"amount_usd": "-5.00"}, 400, ["amount_usd"]),
    (
        "topup: fractions of a cent",
        "/api/billing/topups",
        "admin",
        {"amount_usd": "10.005"},
        400,
        ["amount_usd", "2 decimal places"],
    ),
    (
        "topup: too large",
        "/api/billing/topups",
        "admin",
        {"amount_usd": "1000000.01"},
        400,
        ["amount_usd", "1000000"],
    ),
    ("topup: not a number", "/api/billing/topups", "admin", {"amount_usd": "lots"}, 400, ["amount_usd"]),
    ("topup: infinity", "/api/billing/topups", "admin", {"amount_usd": "Infinity"}, 400, ["amount_usd"]),
    ("topup: boolean", "/api/billing/topups", "admin", {"amount_usd": True}, 400, ["amount_usd"]),
    (
        "topup: long reference",
        "/api/billing/topups",
        "admin",
        {"amount_usd": "1", "reference": "r" * 201},
        400,
        ["reference", "200"],
    ),
    (
        "topup: NUL in reference",
        "/api/billing/topups",
        "admin",
        {"amount_usd": "1", "reference": "a\x00"},
        400,
        ["reference", "NUL"],
    ),
    (
        "topup: unknown field",
        "/api/billing/topups",
        "admin",
        {"amount_usd": "1", "currency": "EUR"},
        400,
        ["currency"],
    ),
    ("topup: a list", "/api/billing/topups", "admin", [{"amount_usd": "1"}], 400, ["body"]),
    # refunds
    ("refund: no amount", "/api/billing/refunds", "admin", {}, 400, ["amount_usd", "required"]),
    ("refund: negative", "/api/billing/refunds", "admin", {"amount_usd": "-1"}, 400, ["amount_usd"]),
    (
        "refund: more than the credits",
        "/api/billing/refunds",
        "admin",
        {"amount_usd": "0.01"},
        409,
        ["amount_usd", "credits"],
    ),
    # adjustments
    (
        "adjustment: no reason",
        "/api/billing/adjustments",
        "admin",
        {"amount_usd": "5"},
        400,
        ["reason", "required"],
    ),
    (
        "adjustment: empty reason",
        "/api/billing/adjustments",
        "admin",
        {"amount_usd": "5", "reason": ""},
        400,
        ["reason"],
    ),
    (
        "adjustment: blank reason",
        "/api/billing/adjustments",
        "admin",
        {"amount_usd": "5", "reason": "   "},
        400,
        ["reason"],
    ),
    (
        "adjustment: zero",
        "/api/billing/adjustments",
        "admin",
        {"amount_usd": "0.00", "reason": "x"},
        400,
        ["amount_usd", "not 0"],
    ),
    (
        "adjustment: too large",
        "/api/billing/adjustments",
        "admin",
        {"amount_usd": "-1000000.01", "reason": "x"},
        400,
        ["amount_usd"],
    ),
    # subscription
    ("subscription: no plan", "/api/billing/subscription", "admin", {}, 400, ["plan", "required"]),
    (
        "subscription: unknown plan",
        "/api/billing/subscription",
        "admin",
        {"plan": "platinum"},
        400,
        ["plan", "platinum", "free"],
    ),
    ("subscription: empty plan", "/api/billing/subscription", "admin", {"plan": ""}, 400, ["plan"]),
    ("subscription: plan not text", "/api/billing/subscription", "admin", {"plan": 3}, 400, ["plan"]),
    (
        "subscription: unknown field",
        "/api/billing/subscription",
        "admin",
        {"plan": "free", "seats": 3},
        400,
        ["seats"],
    ),
]


@pytest.mark.parametrize("case,path,scope,body,status,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_the_field(tenant, case, path, scope, body, status, words):
    raw = body if isinstance(body, str) else json.dumps(body)
    r = tenant.api(scope).post(path, raw=raw)
    assert r.status_code == status, r.content[:500]
    error = r.json()["error"]
    text = error["message"] + json.dumps(error["details"])
    for word in words:
        assert word in text, f"{word!r} not in {text[:300]!r}"
    assert not UsageEvent.objects.exists()
    assert not LedgerEntry.objects.exists()
    assert not Subscription.objects.exists()
    assert not Agent.objects.exists()
    assert not AuditLog.objects.filter(action__startswith="billing.").exists()


@pytest.mark.parametrize(
    "params,words",
    [
        ({"limit": 0}, ["limit", "greater than or equal to 1"]),
        ({"limit": 51}, ["limit", "less than or equal to 50"]),
        ({"limit": "five"}, ["limit"]),
    ],
)
def test_a_bad_usage_query_is_400_naming_the_parameter(reader, params, words):
    r = reader.get("/api/metrics/usage", params)
    assert r.status_code == 400
    for word in words:
        assert word in r.json()["error"]["message"]


@pytest.mark.parametrize("key", ["", " ", "k" * 201, "naïve"])
def test_a_bad_idempotency_key_is_refused(tenant, key):
    r = tenant.api("admin").post("/api/billing/topups", {"amount_usd": "1.00"}, HTTP_IDEMPOTENCY_KEY=key)
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["error"]["message"]
    assert not LedgerEntry.objects.exists()
