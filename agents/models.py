from datetime import timedelta
from decimal import Decimal

from django.db import models
from django.db.models import Case, F, FloatField, Value, When
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

MONEY = {"max_digits": 20, "decimal_places": 10}


# Sort keys of the lists: a missing value sorts as -1, below every real one, so
# keyset pagination compares plain values. Queries and indexes use these same
# expressions, so the indexes serve the ORDER BY.
SORT_KEYS = {
    "latency_ms": Coalesce(F("latency_ms"), Value(-1)),
    "cost_usd": Coalesce(F("cost_usd"), Value(-1), output_field=models.DecimalField(**MONEY)),
    "latency_avg_ms": Coalesce(F("latency_avg_ms"), Value(-1.0)),
}


class Channel(models.TextChoices):
    CHAT = "chat"
    VOICE = "voice"
    WIDGET = "widget"


class Agent(models.Model):
    organisation = models.ForeignKey("accounts.Organisation", on_delete=models.CASCADE, related_name="agents")
    # The id callers use, e.g. "agent_abc123"; unique within the organisation.
    public_id = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    # instructions, model, temperature, tools [{name, config}]
    config = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["organisation", "public_id"], name="agent_public_id")]

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"


class DeploymentStatus(models.TextChoices):
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled_back"


class Deployment(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="deployments")
    version = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=DeploymentStatus.choices, default=DeploymentStatus.ACTIVE
    )
    deployed_at = models.DateTimeField(default=timezone.now)
    deployed_by = models.CharField(max_length=200, blank=True)
    changes = models.TextField(blank=True)
    config = models.JSONField(default=dict, blank=True)
    rollback_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="rollbacks"
    )

    class Meta:
        ordering = ["-deployed_at", "-id"]
        indexes = [models.Index(fields=["agent", "-deployed_at"], name="deployment_agent_time")]
        constraints = [
            # At most one active deployment per agent.
            models.UniqueConstraint(
                fields=["agent"],
                condition=models.Q(status="active"),
                name="deployment_one_active",
            ),
            # A version label names one deployment: traces and comparisons refer to it.
            models.UniqueConstraint(fields=["agent", "version"], name="deployment_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.version} ({self.status})"


class PhoneNumber(models.Model):
    """A phone number of the organisation's, answered by the agent it is assigned to."""

    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, related_name="phone_numbers"
    )
    # E.164: "+" and up to 15 digits, e.g. "+14155550100".
    number = models.CharField(max_length=16)
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.RESTRICT, related_name="phone_numbers"
    )
    assigned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["organisation", "number"], name="phone_number_unique")]

    def __str__(self) -> str:
        return self.number


class Session(models.Model):
    """A conversation: the traces (and voice call) sharing a session id."""

    organisation = models.ForeignKey("accounts.Organisation", on_delete=models.CASCADE, db_index=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="sessions", db_index=False)
    public_id = models.CharField(max_length=200)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    # Version of the conversation's earliest trace (or of the call).
    deployment_version = models.CharField(max_length=64, blank=True)
    # Start = earliest of first trace and call start; null until either exists.
    started_at = models.DateTimeField(null=True, blank=True)
    first_trace_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    trace_count = models.IntegerField(default=0)
    error_count = models.IntegerField(default=0)
    # Sums over the conversation's traces, kept current with the counts above.
    input_tokens = models.BigIntegerField(default=0, db_default=0)
    output_tokens = models.BigIntegerField(default=0, db_default=0)
    latency_count = models.IntegerField(default=0, db_default=0)  # traces with a latency
    latency_sum_ms = models.BigIntegerField(default=0, db_default=0)
    llm_cost_usd = models.DecimalField(
        **MONEY, default=Decimal(0), db_default=Decimal(0)
    )  # priced traces only
    unpriced_traces = models.IntegerField(default=0, db_default=0)
    # The call's minutes, priced when the call ended.
    voice_cost_usd = models.DecimalField(**MONEY, default=Decimal(0), db_default=Decimal(0))
    # What the Conversations list shows and sorts by, kept by the database.
    cost_usd = models.GeneratedField(
        expression=F("llm_cost_usd") + F("voice_cost_usd"),
        output_field=models.DecimalField(**MONEY),
        db_persist=True,
    )
    latency_avg_ms = models.GeneratedField(
        expression=Case(
            When(latency_count__gt=0, then=Cast("latency_sum_ms", FloatField()) / F("latency_count")),
            default=None,
            output_field=FloatField(),
        ),
        output_field=FloatField(null=True),
        db_persist=True,
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organisation", "public_id"], name="session_public_id")
        ]
        indexes = [
            models.Index(fields=["agent", "started_at"], name="session_agent_start"),
            models.Index(fields=["organisation", "started_at", "id"], name="session_org_start_id"),
            # The Conversations list sorted by cost or average latency (keyset on value, id).
            models.Index(F("organisation"), F("cost_usd"), F("id"), name="session_org_cost_id"),
            models.Index(
                F("organisation"), SORT_KEYS["latency_avg_ms"], F("id"), name="session_org_latency_id"
            ),
        ]

    @property
    def failed(self) -> bool:
        return self.error_count > 0

    @property
    def duration(self) -> timedelta | None:
        """From its start to its last trace or event (to its end, for a call that ended)."""
        end = self.ended_at or self.last_activity_at
        if self.started_at is None or end is None:
            return None
        return max(end - self.started_at, timedelta(0))

    @property
    def status(self) -> str:
        return "failed" if self.failed else "success"


class TraceStatus(models.TextChoices):
    SUCCESS = "success"
    ERROR = "error"


class CostSource(models.TextChoices):
    REPORTED = "reported"  # the caller sent cost_usd
    PRICE_TABLE = "price_table"  # computed from the model price table
    UNPRICED = "unpriced"  # no price known: cost_usd is null, never a silent 0


class Trace(models.Model):
    """One agent reply: input, reasoning, tool calls, output, usage."""

    # The composite indexes below lead with these columns; single-column indexes
    # would only slow ingestion down. Traces, steps and scores carry no database
    # foreign-key constraints: the per-row checks cost ~40 % of insert time, and
    # ingestion writes only ids it resolved or locked in the same transaction.
    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.CASCADE, related_name="traces", db_index=False, db_constraint=False
    )
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="traces", db_index=False, db_constraint=False
    )
    public_id = models.CharField(max_length=200)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    deployment_version = models.CharField(max_length=64, blank=True)
    input = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    output = models.TextField(blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    tool_call_count = models.IntegerField(default=0)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    latency_ms = models.IntegerField(null=True, blank=True)
    cost_usd = models.DecimalField(**MONEY, null=True, blank=True)
    cost_source = models.CharField(max_length=16, choices=CostSource.choices)
    status = models.CharField(max_length=8, choices=TraceStatus.choices)
    error = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # A public id is unique within its organisation through ``TraceKey``: on
        # PostgreSQL this table is partitioned by ``created_at`` (``agents.partitions``),
        # and a unique index over partitions must hold the partition key.
        indexes = [
            models.Index(fields=["agent", "created_at", "id"], name="trace_agent_time"),
            models.Index(fields=["organisation", "created_at", "id"], name="trace_org_time_id"),
            models.Index(fields=["session", "created_at"], name="trace_session_time"),
            # The Traces list sorted by latency or cost (keyset on value, id). A
            # full-text index for its search is created on PostgreSQL only
            # (migration 0010; see agents.search).
            models.Index(F("organisation"), SORT_KEYS["latency_ms"], F("id"), name="trace_org_latency_id"),
            models.Index(F("organisation"), SORT_KEYS["cost_usd"], F("id"), name="trace_org_cost_id"),
        ]

    def __str__(self) -> str:
        return self.public_id


class TraceKey(models.Model):
    """A trace's public id, claimed once per organisation: ingestion inserts the
    key first (``ON CONFLICT DO NOTHING``) and stores the trace only when the
    claim is new, so a re-sent or racing id is stored once whatever its time.
    ``created_at`` is the trace's (kept equal to it): it names the trace's time
    partition, so a look-up by public id reads one partition, and retention
    removes the keys of the traces it drops."""

    pk = models.CompositePrimaryKey("organisation", "public_id")
    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    public_id = models.CharField(max_length=200)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="trace_key_time")]


class StepKind(models.TextChoices):
    LLM = "llm"
    TOOL = "tool"
    REASONING = "reasoning"
    RETRIEVAL = "retrieval"
    OTHER = "other"


class TraceStep(models.Model):
    """One step inside a trace: an LLM call, a tool call, reasoning, retrieval."""

    trace = models.ForeignKey(
        Trace, on_delete=models.CASCADE, related_name="steps", db_index=False, db_constraint=False
    )
    position = models.IntegerField()
    span_id = models.CharField(max_length=64, blank=True)
    parent_span_id = models.CharField(max_length=64, blank=True)
    kind = models.CharField(max_length=16, choices=StepKind.choices)
    name = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    latency_ms = models.IntegerField(null=True, blank=True)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(**MONEY, null=True, blank=True)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    # Bit 1: the input is the trace's input; bit 2: the output is the trace's
    # output. Such a text is stored once, on the trace (``agents.steps``).
    texts_from_trace = models.SmallIntegerField(default=0)
    # The trace's ``created_at``: on PostgreSQL steps are partitioned by it, so a
    # trace and its steps share a day and leave together.
    trace_created_at = models.DateTimeField()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["trace", "position", "trace_created_at"], name="step_position")
        ]


class Score(models.Model):
    """An evaluation score attached to a trace (at ingestion or later).

    The trace's agent, channel, version and time are copied here (they follow
    the trace), so window queries find scores by time without joining traces;
    on PostgreSQL scores are partitioned by ``trace_created_at``."""

    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="scores", db_constraint=False)
    agent = models.ForeignKey(
        Agent, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    deployment_version = models.CharField(max_length=64, blank=True)
    trace_created_at = models.DateTimeField()
    name = models.CharField(max_length=100, default="evaluation")
    value = models.DecimalField(max_digits=18, decimal_places=6)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["organisation", "trace_created_at"], name="score_org_time"),
            models.Index(fields=["agent", "trace_created_at"], name="score_agent_time"),
        ]
