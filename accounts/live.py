"""Ending live connections when the access that admitted them ends.

A WebSocket subscriber is admitted by a *grant*: an API key, or a user's
membership of an organisation. When a key is revoked or a member removed, the
service calls ``access_ended_on_commit``; once the transaction commits, one
notice goes to the channel-layer group ``ACCESS_GROUP``, which each server
process joins (with ``REDIS_URL``, every process; without it, this one), and the
process closes that grant's sockets. Each process also re-checks its grants
every ``LIVE_ACCESS_RECHECK_SECONDS`` (``accounts.selectors.grants_ended``), so a
lost notice or a change made elsewhere still closes them in time.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

ACCESS_GROUP = "access.ended"
ACCESS_ENDED = "access.ended"  # the notice's message type


def api_key_grant(api_key_pk: int) -> str:
    return f"apikey:{api_key_pk}"


def membership_grant(user_pk: int, organisation_pk: int) -> str:
    return f"member:{user_pk}:{organisation_pk}"


def access_ended_on_commit(grant: str) -> None:
    """Tell every server process that ``grant`` ended, once the current
    transaction commits (a rolled-back revocation closes nothing)."""
    transaction.on_commit(lambda: access_ended_notify(grant))


def access_ended_notify(grant: str) -> None:
    """Send the notice now (from synchronous code). A layer that cannot be
    reached costs only speed: the periodic re-check closes the sockets."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(ACCESS_GROUP, {"type": ACCESS_ENDED, "grant": grant})
    except Exception:
        logger.warning("live access: could not announce the end of %s", grant, exc_info=True)
