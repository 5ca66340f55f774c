"""Voice calls and their turns: the voice side of a conversation."""

from django.db import models
from django.utils import timezone

from agents.models import MONEY


class CallStatus(models.TextChoices):
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    DROPPED = "dropped"  # the caller hung up early, the line broke, or no event came for too long


class VoiceCall(models.Model):
    """The voice side of a conversation: one call per voice conversation.

    Minutes are priced when the call ends (``cost_usd`` = ``duration_s`` × the
    organisation's price per minute, kept in ``price_per_minute``) and count in
    the rollups of the hour the call ended. ``last_received_at`` is when the
    server last heard of the call, which decides when a silent call is stale."""

    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.CASCADE, related_name="voice_calls", db_index=False
    )
    session = models.OneToOneField("agents.Session", on_delete=models.CASCADE, related_name="voice_call")
    public_id = models.CharField(max_length=200)
    deployment_version = models.CharField(max_length=64, blank=True)
    from_number = models.CharField(max_length=64, blank=True)
    to_number = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=CallStatus.choices, default=CallStatus.ACTIVE)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    # Latest event time (start, turn or end) the caller reported.
    last_event_at = models.DateTimeField()
    last_received_at = models.DateTimeField(default=timezone.now)
    duration_s = models.DecimalField(max_digits=20, decimal_places=3, null=True, blank=True)
    price_per_minute = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    cost_usd = models.DecimalField(**MONEY, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "agents_voicecall"  # the table predates the voice app
        constraints = [
            models.UniqueConstraint(fields=["organisation", "public_id"], name="voice_call_public_id")
        ]
        indexes = [
            models.Index(fields=["agent", "started_at"], name="voice_call_agent_start"),
            models.Index(fields=["agent", "ended_at"], name="voice_call_agent_end"),
            models.Index(fields=["organisation", "ended_at"], name="voice_call_org_end"),
            # Active calls, and the stale-call sweep, read only calls that have not ended.
            models.Index(
                fields=["agent"], condition=models.Q(ended_at__isnull=True), name="voice_call_agent_active"
            ),
            models.Index(
                fields=["last_received_at"],
                condition=models.Q(ended_at__isnull=True),
                name="voice_call_open_received",
            ),
        ]

    def __str__(self) -> str:
        return self.public_id


class VoiceTurn(models.Model):
    """One exchange in a call: how long the agent took to answer after the caller
    stopped speaking, whether the caller interrupted, and how sure speech-to-text
    was. ``key`` identifies the turn within its call (the caller's ``event_id``,
    else its time), so a re-sent turn is stored once."""

    # Like traces, turns carry no database foreign-key constraints: ingestion
    # writes only ids it resolved in the same transaction.
    organisation = models.ForeignKey(
        "accounts.Organisation",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    call = models.ForeignKey(
        VoiceCall, on_delete=models.CASCADE, related_name="turns", db_index=False, db_constraint=False
    )
    key = models.CharField(max_length=200)
    at = models.DateTimeField()
    voice_latency_ms = models.IntegerField()
    interrupted = models.BooleanField()
    transcription_confidence = models.FloatField(null=True, blank=True)  # None: not reported
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "agents_voiceturn"  # the table predates the voice app
        constraints = [models.UniqueConstraint(fields=["call", "key"], name="voice_turn_key")]
        indexes = [models.Index(fields=["agent", "at"], name="voice_turn_agent_time")]
