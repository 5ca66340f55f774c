"""Telling live subscribers that an agent's calls changed.

Writers mark the agent's channel-layer group dirty after their transaction
commits; each Daphne process then recomputes the agent's live frame (see
``voice.consumers``). With ``REDIS_URL`` the message reaches every process;
without it, the in-memory layer reaches the subscribers of this process only.
"""

import logging
import uuid
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

CHANGED = "voice.changed"


def voice_group(agent_pk: int) -> str:
    return f"voice.agent.{agent_pk}"


def voice_changed_on_commit(agent_pks: Iterable[int]) -> None:
    """Tell the agents' subscribers once the current transaction commits."""
    pks = sorted(set(agent_pks))
    if pks:
        transaction.on_commit(lambda: voice_changed_notify(pks))


def voice_changed_notify(agent_pks: Iterable[int]) -> None:
    """Send one change notice to each agent's group (from synchronous code).

    The notice carries an id, so the subscribers of one process recognise it
    as one change. A layer that cannot be reached costs the subscribers a
    frame, never the caller its request: the data is already committed and
    the next heartbeat carries it."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": CHANGED, "change": uuid.uuid4().hex}

    async def send_all() -> None:
        for pk in agent_pks:
            await layer.group_send(voice_group(pk), message)

    try:
        async_to_sync(send_all)()
    except Exception:
        logger.warning("live voice metrics: could not notify subscribers", exc_info=True)
