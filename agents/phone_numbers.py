"""The organisation's phone numbers and the agents they are assigned to."""

import re

from django.db import transaction
from django.utils import timezone

from audit.services import Actor, audit_record
from thinnest_analytics.errors import ApiError, not_found

from .models import Agent, PhoneNumber
from .services import agent_lock

E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def phone_number_normalise(raw: str) -> str:
    """E.164 (``+14155550100``) from what a person types: spaces, dots, dashes and
    brackets are dropped, a leading ``00`` becomes ``+``."""
    number = re.sub(r"[\s().-]", "", raw or "")
    if number.startswith("00"):
        number = "+" + number[2:]
    if not E164.fullmatch(number):
        raise ApiError(
            400, "invalid_phone_number", f"'{raw}' is not an international number such as +14155550100"
        )
    return number


@transaction.atomic
def phone_number_assign(*, organisation, number: str, agent: Agent, actor: Actor) -> PhoneNumber:
    """Assign ``number`` to ``agent`` (an active agent of ``organisation``),
    adding the number if it is new and moving it if another agent has it.
    Records phone_number.assign with the agent and the previous one."""
    number = phone_number_normalise(number)
    agent = agent_lock(agent)
    if agent.organisation_id != organisation.pk:
        raise not_found(f"agent '{agent.public_id}'")
    phone, _ = PhoneNumber.objects.select_for_update().get_or_create(organisation=organisation, number=number)
    if phone.agent_id == agent.pk:
        return phone
    previous = phone.agent.public_id if phone.agent_id else None
    phone.agent = agent
    phone.assigned_at = timezone.now()
    phone.save(update_fields=["agent", "assigned_at"])
    audit_record(
        organisation=organisation,
        actor=actor,
        action="phone_number.assign",
        resource_type="phone_number",
        resource_id=number,
        details={"agent_id": agent.public_id, "previous_agent_id": previous},
    )
    return phone


@transaction.atomic
def phone_number_release(*, phone_number: PhoneNumber, actor: Actor) -> PhoneNumber:
    """Unassign the number from its agent; it stays on the organisation's list.
    Records phone_number.release with the agent; releasing a free number records nothing."""
    phone = PhoneNumber.objects.select_for_update().get(pk=phone_number.pk)
    if phone.agent_id is None:
        return phone
    agent_id = phone.agent.public_id
    phone.agent = None
    phone.assigned_at = None
    phone.save(update_fields=["agent", "assigned_at"])
    audit_record(
        organisation=phone.organisation,
        actor=actor,
        action="phone_number.release",
        resource_type="phone_number",
        resource_id=phone.number,
        details={"agent_id": agent_id},
    )
    return phone
