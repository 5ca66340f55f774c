"""``GET /api/metrics/usage``: the product description's shape, with numbers
equal to an independent sum of the raw rows, "today" and "this month" in the
organisation's time zone — also around local midnight, month ends and a
daylight-saving change."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.utils import timezone

from billing.selectors import billing_periods, usage_overview

from . import oracle
from .conftest import trace, usage_event

PRODUCT_KEYS = {"balance_usd", "usage_today_usd", "usage_this_month_usd", "top_agents_by_cost", "breakdown"}


def _money_equal(a, b) -> bool:
    if connection.vendor == "postgresql":
        return Decimal(str(a)) == Decimal(str(b))
    return abs(Decimal(str(a)) - Decimal(str(b))) < Decimal("1e-9")  # SQLite keeps decimals as floats


@pytest.fixture
def frozen(monkeypatch):
    """Pin "now" for the usage summary (ingested items carry explicit times)."""

    def freeze(at: datetime) -> None:
        monkeypatch.setattr(timezone, "now", lambda: at)

    return freeze


def _local_bounds(now: datetime, zone: str) -> tuple[datetime, datetime, datetime, datetime]:
    """Independently of the code under test: the local day and month around ``now``, in UTC."""
    z = ZoneInfo(zone)
    local = now.astimezone(z)
    day = datetime(local.year, local.month, local.day, tzinfo=z)
    next_day = datetime.fromordinal(day.toordinal() + 1).replace(tzinfo=z)
    month = datetime(local.year, local.month, 1, tzinfo=z)
    next_month = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=z)
    return tuple(t.astimezone(UTC) for t in (day, next_day, month, next_month))


def _send_edges(ingest, edges: list[datetime]) -> tuple[list[dict], list[dict]]:
    """Traces (reported, table-priced and unpriced) and usage events a microsecond
    either side of each edge and on it, from three agents."""
    traces, events = [], []
    n = 0
    for edge in edges:
        for nudge in (-timedelta(microseconds=1), timedelta(0), timedelta(minutes=20)):
            at = (edge + nudge).isoformat()
            agent = ("agent_support", "agent_sales", "agent_ops")[n % 3]
            item = trace(id=f"t{n}", session_id=f"s{n}", agent_id=agent, created_at=at, input_tokens=1000 + n)
            if n % 3 == 0:
                item["cost_usd"] = f"{n}.{n:02d}"
            elif n % 3 == 2:
                item["model"] = "in-house-7b"  # unpriced: counts in no total
            traces.append(item)
            events.append(
                usage_event(
                    id=f"e{n}",
                    agent_id=agent,
                    category=("scraping", "web_search")[n % 2],
                    cost_usd=f"0.{n:03d}7",
                    at=at,
                )
            )
            n += 1
    assert ingest.post("/api/traces", {"traces": traces}).status_code == 200
    assert ingest.post("/api/usage/events", {"events": events}).status_code == 200
    return traces, events


def _oracle(traces, events, start, end) -> dict:
    """Cost per category and per agent of raw items in [start, end), USD."""
    out = {"llm_tokens": Decimal(0), "scraping": Decimal(0), "web_search": Decimal(0)}
    agents: dict[str, Decimal] = {}
    for t in traces:
        if start <= datetime.fromisoformat(t["created_at"]) < end:
            cost = oracle.cost_of({**t, **({"cost_usd": Decimal(t["cost_usd"])} if "cost_usd" in t else {})})
            if cost is not None:
                out["llm_tokens"] += cost
                agents[t["agent_id"]] = agents.get(t["agent_id"], Decimal(0)) + cost
    for e in events:
        if start <= datetime.fromisoformat(e["at"]) < end:
            out[e["category"]] += Decimal(e["cost_usd"])
            agents[e["agent_id"]] = agents.get(e["agent_id"], Decimal(0)) + Decimal(e["cost_usd"])
    return {"categories": out, "total": sum(out.values()), "agents": agents}


def _check(body, traces, events, now, zone, credits=Decimal(0)):
    day0, day1, month0, month1 = _local_bounds(now, zone)
    today = _oracle(traces, events, day0, day1)
    month = _oracle(traces, events, month0, month1)
    everything = _oracle(traces, events, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    assert PRODUCT_KEYS <= set(body)
    assert body["timezone"] == zone
    assert body["period"]["today"]["from"] == day0.isoformat().replace("+00:00", "Z")
    assert body["period"]["this_month"]["to"] == month1.isoformat().replace("+00:00", "Z")
    assert _money_equal(body["usage_today_usd"], today["total"])
    assert _money_equal(body["usage_this_month_usd"], month["total"])
    assert _money_equal(body["balance_usd"], credits - everything["total"])
    assert list(body["breakdown"])[:3] == ["llm_tokens", "voice_minutes", "scraping"]
    assert body["breakdown"]["voice_minutes"] == 0
    for category, cost in month["categories"].items():
        assert _money_equal(body["breakdown"].get(category, 0), cost), category
    assert _money_equal(sum(Decimal(str(v)) for v in body["breakdown"].values()), month["total"])
    ranked = sorted(month["agents"].items(), key=lambda kv: -kv[1])
    assert [a["agent_id"] for a in body["top_agents_by_cost"]] == [a for a, cost in ranked if cost > 0][:5]
    for row in body["top_agents_by_cost"]:
        assert _money_equal(row["cost_usd"], month["agents"][row["agent_id"]])
        assert set(row) == {"agent_id", "name", "cost_usd"}


def test_kolkata_today_and_month_around_local_midnight_and_month_end(tenant, ingest, reader, frozen):
    tenant.organisation.timezone = "Asia/Kolkata"  # UTC+5:30: local days start at 18:30 UTC
    tenant.organisation.save()
    edges = [
        datetime(2026, 3, 31, 18, 30, tzinfo=UTC),  # 1 April 00:00 IST: a new day and month
        datetime(2026, 4, 1, 18, 30, tzinfo=UTC),  # 2 April 00:00 IST
        datetime(2026, 4, 30, 18, 30, tzinfo=UTC),  # 1 May 00:00 IST
        datetime(2026, 3, 1, 0, 0, tzinfo=UTC),  # midnight UTC, mid-morning IST
    ]
    traces, events = _send_edges(ingest, edges)
    for now in (
        datetime(2026, 3, 31, 18, 29, 59, tzinfo=UTC),  # still 31 March IST
        datetime(2026, 3, 31, 18, 30, tzinfo=UTC),  # the first instant of April IST
        datetime(2026, 4, 1, 19, 0, tzinfo=UTC),
    ):
        frozen(now)
        body = reader.get("/api/metrics/usage").json()
        _check(body, traces, events, now, "Asia/Kolkata")
    assert body["period"]["today"] == {
        "date": "2026-04-02",
        "from": "2026-04-01T18:30:00Z",
        "to": "2026-04-02T18:30:00Z",
    }
    assert body["period"]["this_month"] == {
        "month": "2026-04",
        "from": "2026-03-31T18:30:00Z",
        "to": "2026-04-30T18:30:00Z",
    }


def test_new_york_month_end_and_the_short_daylight_saving_day(tenant, ingest, reader, frozen):
    tenant.organisation.timezone = "America/New_York"
    tenant.organisation.save()
    edges = [
        datetime(2026, 3, 1, 5, 0, tzinfo=UTC),  # 1 March 00:00 EST
        datetime(2026, 3, 8, 5, 0, tzinfo=UTC),  # 8 March 00:00 EST: this day has 23 hours
        datetime(2026, 3, 9, 4, 0, tzinfo=UTC),  # 9 March 00:00 EDT
        datetime(2026, 4, 1, 4, 0, tzinfo=UTC),  # 1 April 00:00 EDT
    ]
    traces, events = _send_edges(ingest, edges)
    for now in (datetime(2026, 3, 8, 12, 0, tzinfo=UTC), datetime(2026, 3, 31, 23, 59, tzinfo=UTC)):
        frozen(now)
        _check(reader.get("/api/metrics/usage").json(), traces, events, now, "America/New_York")
    periods = billing_periods(organisation=tenant.organisation, now=datetime(2026, 3, 8, 12, 0, tzinfo=UTC))
    assert periods.today.length == timedelta(hours=23)


def test_utc_is_the_default_and_the_balance_counts_credits(tenant, ingest, reader, frozen):
    traces, events = _send_edges(ingest, [datetime(2026, 3, 6, 0, 0, tzinfo=UTC)])
    tenant.api("admin").post("/api/billing/topups", {"amount_usd": "250.00"})
    now = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
    frozen(now)
    body = reader.get("/api/metrics/usage").json()
    _check(body, traces, events, now, "UTC", credits=Decimal("250.00"))


def test_voice_cost_shows_as_voice_minutes(tenant, ingest, reader, frozen):
    ingest.post(
        "/api/traces", trace(agent_id="agent_caller", cost_usd="1.00", created_at="2026-03-06T08:00:00Z")
    )
    events = [  # 150 s at the default 0.05 USD a minute
        {
            "type": "call.started",
            "call_id": "call_1",
            "agent_id": "agent_caller",
            "at": "2026-03-06T08:57:30Z",
        },
        {"type": "call.ended", "call_id": "call_1", "at": "2026-03-06T09:00:00Z", "status": "completed"},
    ]
    r = ingest.post("/api/voice/events", {"events": events})
    assert r.status_code == 200, r.json()
    frozen(datetime(2026, 3, 6, 12, 0, tzinfo=UTC))
    body = reader.get("/api/metrics/usage").json()
    assert body["breakdown"]["voice_minutes"] == 0.125
    assert body["usage_today_usd"] == 1.125
    assert body["top_agents_by_cost"] == [
        {"agent_id": "agent_caller", "name": "agent_caller", "cost_usd": 1.125}
    ]


def test_limit_chooses_how_many_top_agents(tenant, ingest, reader, frozen):
    frozen(datetime(2026, 3, 20, tzinfo=UTC))
    batch = [
        trace(
            id=f"t{n}",
            session_id=f"s{n}",
            agent_id=f"agent_{n:02d}",
            cost_usd=str(n + 1),
            created_at="2026-03-06T10:00:00Z",
        )
        for n in range(12)
    ]
    ingest.post("/api/traces", {"traces": batch})
    default = reader.get("/api/metrics/usage").json()["top_agents_by_cost"]
    assert [a["agent_id"] for a in default] == ["agent_11", "agent_10", "agent_09", "agent_08", "agent_07"]
    assert len(reader.get("/api/metrics/usage", {"limit": 50}).json()["top_agents_by_cost"]) == 12
    assert reader.get("/api/metrics/usage", {"limit": 1}).json()["top_agents_by_cost"][0]["cost_usd"] == 12


def test_an_empty_organisation_answers_zeros(tenant, reader):
    body = reader.get("/api/metrics/usage").json()
    assert body["balance_usd"] == 0 and body["usage_today_usd"] == 0 and body["usage_this_month_usd"] == 0
    assert body["top_agents_by_cost"] == []
    assert body["breakdown"] == {"llm_tokens": 0, "voice_minutes": 0, "scraping": 0}


def test_an_unknown_stored_time_zone_falls_back_to_utc(tenant):
    tenant.organisation.timezone = "Mars/Olympus_Mons"
    assert usage_overview(organisation=tenant.organisation)["timezone"] == "UTC"


def test_the_django_admin_accepts_only_known_time_zones(tenant, superuser):
    url = f"/admin/accounts/organisation/{tenant.organisation.pk}/change/"
    form = {
        "slug": "acme",
        "name": "Acme",
        "created_at_0": "2026-01-01",
        "created_at_1": "00:00:00",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    refused = superuser.post(url, {**form, "timezone": "Europe/Atlantis"})
    assert refused.status_code == 200 and b"not a time zone name" in refused.content
    tenant.organisation.refresh_from_db()
    assert tenant.organisation.timezone == "UTC"
    assert superuser.post(url, {**form, "timezone": "Europe/Berlin"}).status_code == 302
    tenant.organisation.refresh_from_db()
    assert tenant.organisation.timezone == "Europe/Berlin"
