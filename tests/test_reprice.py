"""``manage.py reprice``: trace costs follow the current price table after a
price change — reported costs stay — and every total and rollup follows."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from agents.models import Trace
from audit.models import AuditLog
from audit.services import Actor
from metrics.rebuild import rollups_rebuild
from pricing.services import model_price_save

from .conftest import rollup_snapshot, trace

T0 = datetime(2026, 3, 6, tzinfo=UTC)
MILLION = Decimal(1_000_000)
BUILTIN_MINI = (Decimal("0.15"), Decimal("0.60"))


def _cost(tokens: tuple[int, int], price: tuple[Decimal, Decimal]) -> Decimal:
    return (tokens[0] * price[0] + tokens[1] * price[1]) / MILLION


def _money_equal(a, b) -> bool:
    if connection.vendor == "postgresql":
        return Decimal(str(a)) == Decimal(str(b))
    return abs(Decimal(str(a)) - Decimal(str(b))) < Decimal("1e-9")  # SQLite keeps decimals as floats


@pytest.fixture
def stored(tenant, outsider, ingest):
    """Over two days: gpt-4o-mini traces (built-in price), an unknown model, a
    reported cost, step-priced traces, a trace before the range; and the same
    unknown model in another organisation."""
    items = []
    for n in range(8):
        at = T0 + timedelta(hours=6 * n, minutes=10)
        items.append(
            trace(
                id=f"mini{n}",
                session_id=f"s{n}",
                agent_id=("agent_a", "agent_b")[n % 2],
                created_at=at.isoformat(),
                input_tokens=1000 * (n + 1),
                output_tokens=100 * (n + 1),
            )
        )
        items.append(
            trace(
                id=f"house{n}",
                session_id=f"h{n}",
                agent_id=("agent_a", "agent_b")[n % 2],
                model="in-house-7b",
                created_at=at.isoformat(),
                input_tokens=2000,
                output_tokens=500,
            )
        )
    items.append(
        trace(id="reported", session_id="r", model="in-house-7b", cost_usd="0.5", created_at=T0.isoformat())
    )
    items.append(
        trace(
            id="steps",
            session_id="st",
            model=None,
            input_tokens=None,
            output_tokens=None,
            created_at=T0.isoformat(),
            steps=[
                {"kind": "llm", "model": "in-house-7b", "input_tokens": 300, "output_tokens": 30},
                {"kind": "llm", "model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 10},
                {"kind": "tool", "name": "search"},
            ],
        )
    )
    items.append(
        trace(
            id="before", session_id="b", model="in-house-7b", created_at=(T0 - timedelta(hours=1)).isoformat()
        )
    )
    assert ingest.post("/api/traces", {"traces": items}).status_code == 200
    outsider.api("ingest").post(
        "/api/traces", trace(id="theirs", model="in-house-7b", created_at=T0.isoformat())
    )


def _price(organisation, name, pattern, input_price, output_price, effective_from):
    return model_price_save(
        organisation=organisation,
        actor=Actor.system("test"),
        model_name=name,
        match_pattern=pattern,
        input_price_per_mtok=Decimal(input_price),
        output_price_per_mtok=Decimal(output_price),
        effective_from=effective_from,
    )


def _overview(reader):
    return reader.get("/api/analytics/overview", {"from": "2026-03-05", "to": "2026-03-09"}).json()


def test_reprice_prices_unpriced_traces_and_follows_an_override(tenant, outsider, stored, reader):
    before = _overview(reader)
    assert before["unpriced_traces"] == 10  # 8 in-house traces, the step-priced one, the one before the range
    builtin = sum(_cost((1000 * (n + 1), 100 * (n + 1)), BUILTIN_MINI) for n in range(8))
    assert _money_equal(before["total_cost_usd"], builtin + Decimal("0.5"))
    house = (Decimal("0.40"), Decimal("1.20"))
    override = (Decimal("0.10"), Decimal("0.50"))
    switch = T0 + timedelta(days=1)  # the organisation's own gpt-4o-mini price applies from here
    _price(tenant.organisation, "in-house-7b", "in-house-7b", *house, T0 - timedelta(days=30))
    _price(tenant.organisation, "gpt-4o-mini", r"(openai/)?gpt-4o-mini", *override, switch)

    out = StringIO()
    call_command(
        "reprice", "--from", T0.isoformat(), "--to", (T0 + timedelta(days=2)).isoformat(), stdout=out
    )

    costs = dict(Trace.objects.values_list("public_id", "cost_usd"))
    sources = dict(Trace.objects.values_list("public_id", "cost_source"))
    expected = Decimal(0)
    for n in range(8):
        at = T0 + timedelta(hours=6 * n, minutes=10)
        mini = _cost((1000 * (n + 1), 100 * (n + 1)), override if at >= switch else BUILTIN_MINI)
        assert _money_equal(costs[f"mini{n}"], mini), n
        assert _money_equal(costs[f"house{n}"], _cost((2000, 500), house))
        assert sources[f"house{n}"] == "price_table"
        expected += mini + _cost((2000, 500), house)
    steps = _cost((300, 30), house) + _cost((100, 10), BUILTIN_MINI)
    assert _money_equal(costs["steps"], steps)
    expected += steps + Decimal("0.5")
    assert costs["reported"] == Decimal("0.5") and sources["reported"] == "reported"
    assert costs["before"] is None and sources["before"] == "unpriced"  # outside the range
    assert Trace.objects.get(public_id="theirs").cost_usd is None  # another organisation's prices
    assert "Repriced 13 trace(s) on 2 day(s)" in out.getvalue()

    after = _overview(reader)
    assert after["unpriced_traces"] == 1
    assert _money_equal(after["total_cost_usd"], expected)
    # The rollups equal a rebuild from the repriced raw rows.
    incremental = rollup_snapshot(tenant.organisation)
    rollups_rebuild(start=T0 - timedelta(days=1), end=T0 + timedelta(days=3))
    assert rollup_snapshot(tenant.organisation) == incremental

    entries = AuditLog.objects.filter(action="trace.reprice", organisation=tenant.organisation).order_by(
        "resource_id"
    )
    assert [e.resource_id for e in entries] == ["2026-03-06", "2026-03-07"]
    assert sum(e.details["traces_changed"] for e in entries) == 13
    assert entries[0].user_id == "system:manage.py"


def test_reprice_of_one_agent_leaves_the_others(tenant, stored, reader):
    _price(tenant.organisation, "in-house-7b", "", "1", "1", T0 - timedelta(days=1))
    call_command(
        "reprice", "--from", "2026-03-06", "--to", "2026-03-08", "--agent", "agent_b", stdout=StringIO()
    )
    priced = set(
        Trace.objects.filter(cost_source="price_table", model="in-house-7b").values_list(
            "public_id", flat=True
        )
    )
    assert priced == {"house1", "house3", "house5", "house7"}
    assert _overview(reader)["unpriced_traces"] == 6


def test_running_it_again_changes_nothing(tenant, stored):
    _price(tenant.organisation, "in-house-7b", "", "1", "2", T0 - timedelta(days=1))
    call_command("reprice", "--from", "2026-03-06", "--to", "2026-03-08", stdout=StringIO())
    snapshot = rollup_snapshot(tenant.organisation)
    out = StringIO()
    call_command("reprice", "--from", "2026-03-06", "--to", "2026-03-08", "--org", "acme", stdout=out)
    assert "Repriced 0 trace(s) on 0 day(s)" in out.getvalue()
    assert rollup_snapshot(tenant.organisation) == snapshot
    assert AuditLog.objects.filter(action="trace.reprice").count() == 2


def test_retiring_a_price_makes_its_traces_unpriced_again(tenant, stored, reader):
    price = _price(tenant.organisation, "in-house-7b", "", "1", "2", T0 - timedelta(days=1))
    call_command("reprice", "--from", "2026-03-06", "--to", "2026-03-08", stdout=StringIO())
    from pricing.services import model_price_delete

    model_price_delete(organisation=tenant.organisation, price=price, actor=Actor.system("test"))
    call_command("reprice", "--from", "2026-03-06", "--to", "2026-03-08", stdout=StringIO())
    assert _overview(reader)["unpriced_traces"] == 10


def test_the_progress_bar_counts_days(tenant, stored, capsys):
    call_command("reprice", "--from", "2026-03-06", "--to", "2026-03-08", "--org", "acme", stdout=StringIO())
    assert "repricing traces" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--from", "2026-03-08", "--to", "2026-03-06"], "before"),
        (["--from", "yesterday"], "ISO 8601"),
        (["--from", "2026-03-06", "--org", "nobody"], "no organisation"),
        (["--from", "2026-03-06", "--agent", "agent_nobody"], "no agent"),
    ],
)
def test_bad_arguments_are_refused(tenant, stored, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("reprice", *args, stdout=StringIO())
