"""Phone numbers: assigning them to agents and releasing them."""

import pytest

from agents.models import PhoneNumber
from audit.models import AuditLog

PAGE = "/phone-numbers/"


@pytest.fixture
def agents(members):
    for public_id, name in (("agent_support", "Support"), ("agent_sales", "Sales")):
        assert members["member"].post("/agents/", {"id": public_id, "name": name}).status_code == 302


def _assign(client, number, agent="agent_support"):
    return client.post(PAGE, {"number": number, "agent": agent})


def test_a_member_assigns_a_number_typed_any_common_way(members, agents):
    r = _assign(members["member"], "+1 (415) 555-0100")
    assert r.status_code == 302
    phone = PhoneNumber.objects.get()
    assert (phone.number, phone.agent.public_id) == ("+14155550100", "agent_support")
    entry = AuditLog.objects.get(action="phone_number.assign")
    assert (entry.resource_type, entry.resource_id, entry.user_id) == (
        "phone_number",
        "+14155550100",
        "member-user",
    )
    assert entry.details == {"agent_id": "agent_support", "previous_agent_id": None}
    page = members["viewer"].get(PAGE).content.decode()
    assert "+14155550100" in page and "Support" in page
    assert "+14155550100" in members["viewer"].get("/agents/agent_support/").content.decode()


def test_assigning_an_assigned_number_moves_it(members, agents):
    _assign(members["member"], "0044 20 7946 0000")
    _assign(members["member"], "+442079460000", agent="agent_sales")
    phone = PhoneNumber.objects.get()
    assert phone.number == "+442079460000" and phone.agent.public_id == "agent_sales"
    last = AuditLog.objects.filter(action="phone_number.assign").order_by("-pk").first()
    assert last.details == {"agent_id": "agent_sales", "previous_agent_id": "agent_support"}
    # Assigning it where it already is changes nothing and records nothing.
    _assign(members["member"], "+442079460000", agent="agent_sales")
    assert AuditLog.objects.filter(action="phone_number.assign").count() == 2


def test_releasing_frees_the_number_and_keeps_it_listed(members, agents):
    _assign(members["member"], "+14155550100")
    phone = PhoneNumber.objects.get()
    r = members["member"].post(f"{PAGE}{phone.pk}/release/")
    assert r.status_code == 302
    phone.refresh_from_db()
    assert phone.agent is None
    entry = AuditLog.objects.get(action="phone_number.release")
    assert (entry.resource_id, entry.details) == ("+14155550100", {"agent_id": "agent_support"})
    members["member"].post(f"{PAGE}{phone.pk}/release/")
    assert AuditLog.objects.filter(action="phone_number.release").count() == 1


@pytest.mark.parametrize("number", ["12345", "+0123456789", "+1 415 555 0100 ext 9", "+1234567890123456", ""])
def test_numbers_that_are_not_e164_are_refused(members, agents, number):
    r = _assign(members["member"], number)
    assert r.status_code == 400
    assert (
        not PhoneNumber.objects.exists()
        and not AuditLog.objects.filter(action="phone_number.assign").exists()
    )


def test_an_agent_with_numbers_is_archived_only_after_releasing_them(members, agents):
    _assign(members["member"], "+14155550100")
    r = members["member"].post("/agents/agent_support/archive/", follow=True)
    assert b"release the agent" in r.content
    assert not AuditLog.objects.filter(action="agent.delete").exists()
    members["member"].post(f"{PAGE}{PhoneNumber.objects.get().pk}/release/")
    members["member"].post("/agents/agent_support/archive/")
    assert AuditLog.objects.filter(action="agent.delete").count() == 1
    # Archived agents are not offered and cannot be given numbers.
    assert b"agent_support" not in members["member"].get(PAGE).content
    assert _assign(members["member"], "+14155550100").status_code == 400


def test_viewers_read_and_outsiders_see_nothing(members, agents):
    _assign(members["member"], "+14155550100")
    phone = PhoneNumber.objects.get()
    assert _assign(members["viewer"], "+14155550101").status_code == 403
    assert members["viewer"].post(f"{PAGE}{phone.pk}/release/").status_code == 403
    assert members["outsider"].post(f"{PAGE}{phone.pk}/release/").status_code == 404
    assert "+14155550100" not in members["outsider"].get(PAGE).content.decode()
    assert _assign(members["outsider"], "+14155550102").status_code == 400  # not their agent
    phone.refresh_from_db()
    assert phone.agent is not None
