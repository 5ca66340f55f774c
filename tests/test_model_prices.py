"""Model prices: admins list, add, edit and retire their organisation's prices
on a page and in the Django admin, audited; overrides beat built-ins and apply
to the next trace at once."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import call_command

from agents.models import Trace
from audit.models import AuditLog
from pricing.models import ModelPrice

from .conftest import trace

FORM = {
    "model_name": "in-house-7b",
    "match_pattern": "",
    "input_price_per_mtok": "0.40",
    "output_price_per_mtok": "1.20",
    "effective_from": "2024-01-01T00:00",
}


def test_admins_see_their_prices_and_the_built_in_ones(members):
    page = members["admin"].get("/billing/prices/")
    assert page.status_code == 200
    assert b"gpt-4o-mini" in page.content and b"Built-in prices" in page.content


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_viewers_and_members_may_not_manage_prices(members, role):
    assert members[role].get("/billing/prices/").status_code == 403
    assert members[role].post("/billing/prices/", FORM).status_code == 403
    assert not ModelPrice.objects.filter(organisation__isnull=False).exists()


def test_an_added_price_prices_the_next_trace_and_is_audited(tenant, members, ingest):
    r = members["admin"].post("/billing/prices/", FORM)
    assert r.status_code == 302
    price = ModelPrice.objects.get(organisation=tenant.organisation)
    assert price.match_pattern == "in\\-house\\-7b"  # empty pattern: exactly the name
    assert price.effective_from == datetime(2024, 1, 1, tzinfo=UTC)
    log = AuditLog.objects.get(action="model_price.create")
    assert log.resource_id == str(price.pk) and log.details["input_price_per_mtok"] == "0.4"
    ingest.post("/api/traces", trace(model="in-house-7b", input_tokens=1_000_000, output_tokens=1_000_000))
    assert Trace.objects.get().cost_usd == Decimal("1.6")


def test_an_organisation_price_beats_the_built_in_one(tenant, members, ingest):
    members["admin"].post(
        "/billing/prices/",
        {
            **FORM,
            "model_name": "gpt-4o-mini",
            "match_pattern": r"(openai/)?gpt-4o-mini",
            "input_price_per_mtok": "1",
        },
    )
    ingest.post("/api/traces", trace(model="openai/gpt-4o-mini", input_tokens=1_000_000, output_tokens=0))
    assert Trace.objects.get().cost_usd == Decimal("1")


def test_editing_records_the_changed_fields(tenant, members):
    members["admin"].post("/billing/prices/", FORM)
    price = ModelPrice.objects.get(organisation=tenant.organisation)
    page = members["admin"].get(f"/billing/prices/{price.pk}/")
    assert page.status_code == 200 and b"in-house-7b" in page.content
    r = members["admin"].post(f"/billing/prices/{price.pk}/", {**FORM, "output_price_per_mtok": "2.5"})
    assert r.status_code == 302
    price.refresh_from_db()
    assert price.output_price_per_mtok == Decimal("2.5")
    log = AuditLog.objects.get(action="model_price.update")
    assert log.details["changed_fields"] == ["output_price_per_mtok"]
    assert log.details["old"] == {"output_price_per_mtok": "1.2"}
    # Saving it unchanged records nothing.
    members["admin"].post(f"/billing/prices/{price.pk}/", {**FORM, "output_price_per_mtok": "2.5"})
    assert AuditLog.objects.filter(action="model_price.update").count() == 1


def test_retiring_a_price_deletes_it_and_is_audited(tenant, members):
    members["admin"].post("/billing/prices/", FORM)
    price = ModelPrice.objects.get(organisation=tenant.organisation)
    assert members["admin"].post(f"/billing/prices/{price.pk}/retire/").status_code == 302
    assert not ModelPrice.objects.filter(pk=price.pk).exists()
    log = AuditLog.objects.get(action="model_price.delete")
    assert log.details["model_name"] == "in-house-7b"


@pytest.mark.parametrize(
    "change,words",
    [
        ({"match_pattern": "gpt-(4"}, ["regular expression"]),
        ({"match_pattern": "claude-.*"}, ["does not match the model name"]),
        ({"input_price_per_mtok": "-1"}, ["greater than or equal to 0"]),
        ({"output_price_per_mtok": "abc"}, ["Enter a number"]),
        ({"input_price_per_mtok": "0.0000001"}, ["decimal places"]),
        ({"effective_from": "soon"}, ["valid date"]),
        ({"model_name": ""}, ["required"]),
    ],
)
def test_an_invalid_price_is_refused_with_a_reason(tenant, members, change, words):
    r = members["admin"].post("/billing/prices/", {**FORM, **change})
    assert r.status_code == 400
    for word in words:
        assert word.encode() in r.content, word
    assert not ModelPrice.objects.filter(organisation=tenant.organisation).exists()
    assert not AuditLog.objects.filter(action__startswith="model_price").exists()


def test_built_in_and_other_organisations_prices_are_not_found(tenant, outsider, members):
    builtin = ModelPrice.objects.filter(organisation__isnull=True).first()
    assert members["admin"].get(f"/billing/prices/{builtin.pk}/").status_code == 404
    assert members["admin"].post(f"/billing/prices/{builtin.pk}/retire/").status_code == 404
    members["outsider"].post("/billing/prices/", FORM)
    theirs = ModelPrice.objects.get(organisation=outsider.organisation)
    assert members["admin"].get(f"/billing/prices/{theirs.pk}/").status_code == 404
    assert members["admin"].post(f"/billing/prices/{theirs.pk}/retire/").status_code == 404
    assert ModelPrice.objects.filter(pk=theirs.pk).exists()
    assert b"in-house-7b" not in members["admin"].get("/billing/prices/").content


def test_the_django_admin_changes_prices_through_the_audited_service(tenant, superuser):
    add = superuser.post(
        "/admin/pricing/modelprice/add/",
        {
            "organisation": tenant.organisation.pk,
            **FORM,
            "effective_from_0": "2024-01-01",
            "effective_from_1": "00:00:00",
        },
    )
    assert add.status_code == 302, add.content[:2000]
    price = ModelPrice.objects.get(organisation=tenant.organisation)
    assert AuditLog.objects.filter(action="model_price.create", resource_id=str(price.pk)).exists()
    bad = superuser.post(
        f"/admin/pricing/modelprice/{price.pk}/change/",
        {**FORM, "match_pattern": "(", "effective_from_0": "2024-01-01", "effective_from_1": "00:00:00"},
    )
    assert bad.status_code == 200 and b"regular expression" in bad.content
    superuser.post(f"/admin/pricing/modelprice/{price.pk}/delete/", {"post": "yes"})
    assert not ModelPrice.objects.filter(pk=price.pk).exists()
    assert AuditLog.objects.filter(action="model_price.delete").exists()
    builtin = ModelPrice.objects.filter(organisation__isnull=True).first()
    page = superuser.get(f"/admin/pricing/modelprice/{builtin.pk}/change/")
    assert page.status_code == 200 and b"Save" not in page.content  # built-ins are read-only


@pytest.mark.django_db(transaction=True)
def test_built_in_prices_come_back_after_a_flush_empties_every_table():
    call_command("flush", interactive=False, verbosity=0)
    assert ModelPrice.objects.filter(organisation=None, model_name="gpt-4o").exists()
