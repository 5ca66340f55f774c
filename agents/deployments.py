"""Deployments of an agent: recording a new one and rolling back to an earlier one."""

import re
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from audit.services import Actor, audit_record
from thinnest_analytics.errors import ApiError, not_found

from .config import (
    VERSION_PATTERN,
    agent_fields,
    change_details,
    config_complete,
    config_of,
    config_validate,
    tools_restore,
)
from .models import Agent, Deployment, DeploymentStatus
from .services import agent_config_store, agent_lock


def _next_version(agent: Agent) -> str:
    """``v<n>`` one above the highest ``v<n>`` label the agent has used."""
    numbers = [
        int(v[1:])
        for v in Deployment.objects.filter(agent=agent).values_list("version", flat=True)
        if re.fullmatch(r"v\d{1,9}", v)
    ]
    return f"v{max(numbers, default=0) + 1}"


def _deployment_activate(
    agent: Agent, *, replaced_status: str, **fields
) -> tuple[Deployment, Deployment | None]:
    """Make a new deployment the agent's active one; the one it replaces gets
    ``replaced_status``. The caller holds the agent's row lock."""
    previous = Deployment.objects.filter(agent=agent, status=DeploymentStatus.ACTIVE).first()
    if previous is not None:
        previous.status = replaced_status
        previous.save(update_fields=["status"])
    deployment = Deployment.objects.create(agent=agent, status=DeploymentStatus.ACTIVE, **fields)
    return deployment, previous


@transaction.atomic
def deployment_create(
    *,
    agent: Agent,
    actor: Actor,
    version: str | None = None,
    changes: str = "",
    config: dict | None = None,
    deployed_at: datetime | None = None,
) -> Deployment:
    """Record a deployment of ``agent``; it becomes the active one and the
    previously active deployment is superseded. ``version`` defaults to the next
    ``v<n>``; a label the agent already used is a 409. ``config`` becomes the
    agent's configuration (masked tool settings sent back unchanged keep their
    secrets); without it the deployment snapshots the current configuration.
    Traces ingested from now on carry this version unless they name another."""
    agent = agent_lock(agent)
    current = config_of(agent)
    if config is not None:
        config = config_validate(config)
        config["tools"] = tools_restore(config["tools"], current["tools"])
    else:
        config = current
    if version is None:
        version = _next_version(agent)
    elif not re.fullmatch(VERSION_PATTERN, version) or len(version) > 64:
        raise ApiError(400, "invalid_request", "version: letters, digits and _ . + - only, at most 64")
    if Deployment.objects.filter(agent=agent, version=version).exists():
        raise ApiError(409, "version_exists", f"agent '{agent.public_id}' already has a deployment {version}")
    if "\x00" in changes:
        raise ApiError(400, "invalid_request", "changes: contains a NUL character")
    details = {"agent_id": agent.public_id, "version": version, "changes": changes}
    config_change = change_details(agent_fields(agent.name, current), agent_fields(agent.name, config))
    if config_change:
        details["changed_fields"] = config_change["changed_fields"]
        agent_config_store(agent, config=config)
    deployment, previous = _deployment_activate(
        agent,
        replaced_status=DeploymentStatus.SUPERSEDED,
        version=version,
        deployed_at=deployed_at or timezone.now(),
        deployed_by=actor.user_id,
        changes=changes,
        config=config,
    )
    details["superseded"] = previous.version if previous else None
    audit_record(
        organisation=agent.organisation,
        actor=actor,
        action="deployment.create",
        resource_type="deployment",
        resource_id=str(deployment.pk),
        details=details,
    )
    return deployment


@transaction.atomic
def deployment_rollback(*, agent: Agent, version_id: int, actor: Actor) -> Deployment:
    """Make deployment ``version_id``'s configuration active again as a new
    deployment (history is append-only): labelled with the next ``v<n>``, it
    records ``rollback_of``; the deployment it replaces is marked rolled_back and
    the agent's configuration becomes the snapshot. An unknown deployment or
    another agent's is a 404; one whose configuration is already active a 409.
    The agent's row lock makes concurrent rollbacks queue, so there is never more
    than one active deployment."""
    agent = agent_lock(agent)
    target = Deployment.objects.filter(agent=agent, pk=version_id).first()
    if target is None:
        raise not_found(f"deployment {version_id} of agent '{agent.public_id}'")
    active = Deployment.objects.filter(agent=agent, status=DeploymentStatus.ACTIVE).first()
    if active is not None and target.pk in (active.pk, active.rollback_of_id):
        raise ApiError(409, "already_active", f"the configuration of {target.version} is already active")
    current = config_of(agent)
    config = config_complete(target.config)
    config_change = change_details(agent_fields(agent.name, current), agent_fields(agent.name, config))
    if config_change:
        agent_config_store(agent, config=config)
    deployment, previous = _deployment_activate(
        agent,
        replaced_status=DeploymentStatus.ROLLED_BACK,
        version=_next_version(agent),
        deployed_at=timezone.now(),
        deployed_by=actor.user_id,
        changes=f"Rollback to {target.version}",
        config=config,
        rollback_of=target,
    )
    audit_record(
        organisation=agent.organisation,
        actor=actor,
        action="deployment.rollback",
        resource_type="deployment",
        resource_id=str(deployment.pk),
        details={
            "agent_id": agent.public_id,
            "version": deployment.version,
            "rollback_of": target.pk,
            "rollback_to_version": target.version,
            "rolled_back": previous.version if previous else None,
            "changed_fields": config_change.get("changed_fields", []),
        },
    )
    return deployment
