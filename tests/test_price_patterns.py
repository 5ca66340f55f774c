"""Model price patterns run on RE2: matching time grows linearly with the model
name whatever an organisation's admin writes, so no pattern can stall the
server for other tenants; what RE2 cannot run is refused when it is saved."""

import threading
import time
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from agents.models import Trace
from audit.services import Actor
from pricing.models import ModelPrice
from pricing.prices import price_pattern
from pricing.services import model_price_save

from .conftest import _tenant, postgres_only, trace
from .daphne import Daphne, database_url
from .processes import app_env
from .test_model_prices import FORM

# Backtracking engines take time doubling with each "a" on this pair; at the
# 200-character model limit, longer than anyone waits.
PATHOLOGICAL_PATTERN = "(a+)+b"
PATHOLOGICAL_MODEL = "a" * 199 + "c"


@pytest.mark.parametrize(
    "pattern,model_name",
    [(r"(a)\1", "aa"), (r"gpt(?=-4o)-4o", "gpt-4o"), (r"gpt-4o\Z", "gpt-4o")],
)
def test_a_pattern_re2_cannot_run_is_refused_with_a_reason(tenant, members, pattern, model_name):
    r = members["admin"].post(
        "/billing/prices/", {**FORM, "model_name": model_name, "match_pattern": pattern}
    )
    assert r.status_code == 400
    assert b"RE2 syntax" in r.content
    assert not ModelPrice.objects.filter(organisation=tenant.organisation).exists()


def test_every_built_in_pattern_runs_on_re2_and_matches_its_model(db):
    built_in = ModelPrice.objects.filter(organisation__isnull=True)
    assert built_in.exists()
    for price in built_in:
        assert price_pattern(price.match_pattern).fullmatch(price.model_name), price.model_name


def test_a_stored_pattern_re2_refuses_leaves_its_model_unpriced(tenant, ingest):
    # A row saved before patterns ran on RE2: ingestion goes on, the model is unpriced.
    ModelPrice.objects.create(
        organisation=tenant.organisation,
        model_name="in-house",
        match_pattern="in(?=-)-house",
        input_price_per_mtok=Decimal("1"),
        output_price_per_mtok=Decimal("1"),
        effective_from=datetime(2024, 1, 1, tzinfo=UTC),
    )
    r = ingest.post("/api/traces", trace(model="in-house"))
    assert r.status_code == 200 and len(r.json()["accepted"]) == 1
    assert Trace.objects.get().cost_usd is None


@postgres_only()
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_pathological_pattern_neither_stalls_ingestion_nor_other_requests(tmp_path):
    tenant = _tenant("patterns")
    model_price_save(
        organisation=tenant.organisation,
        actor=Actor.system("test"),
        model_name="aab",
        match_pattern=PATHOLOGICAL_PATTERN,
        input_price_per_mtok=Decimal("1"),
        output_price_per_mtok=Decimal("1"),
        effective_from=datetime(2024, 1, 1, tzinfo=UTC),
    )
    server = Daphne(app_env(DATABASE_URL=database_url(), VAR_DIR=str(tmp_path), ALLOW_HTTP="true"))
    try:
        server.wait_ready()
        key = tenant.keys["ingest"]
        assert server.post("/api/traces", key, trace(id="warm", model="aaab")) == 200
        answered: dict[str, float | int] = {}

        def ingest_pathological():
            started = time.monotonic()
            answered["status"] = server.post("/api/traces", key, trace(id="slow", model=PATHOLOGICAL_MODEL))
            answered["seconds"] = time.monotonic() - started

        sender = threading.Thread(target=ingest_pathological, daemon=True)
        sender.start()
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as r:
            assert r.status == 200
        healthz_seconds = time.monotonic() - started
        sender.join(timeout=15)
        assert answered.get("status") == 200, "the trace with the pathological model was not answered"
        assert answered["seconds"] < 2 and healthz_seconds < 1
        assert Trace.objects.get(public_id="slow").cost_usd is None  # no match: unpriced
        assert Trace.objects.get(public_id="warm").cost_usd is not None  # the pattern itself works
    finally:
        server.stop()
