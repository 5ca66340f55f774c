"""Spans received over OTLP, kept so that a trace can be derived again from all
of its spans whenever more of them arrive (in any order, in any request)."""

from django.db import models
from django.utils import timezone


class ReceivedTrace(models.Model):
    """One OpenTelemetry trace id of an organisation. Its row is locked while the
    trace is derived, so concurrent requests carrying spans of the same trace
    take turns."""

    organisation = models.ForeignKey("accounts.Organisation", on_delete=models.CASCADE, db_index=False)
    trace_id = models.CharField(max_length=32)  # 32 lower-case hex digits
    span_count = models.IntegerField(default=0)
    # Whether the product trace ("otel-<trace id>") has been derived from the spans.
    derived = models.BooleanField(default=False)
    first_received_at = models.DateTimeField(default=timezone.now)
    last_received_at = models.DateTimeField(default=timezone.now)
    # GenAI events received as OTLP log records (``otlp.LogIn.as_stored``), in
    # arrival order; each is read as an event of its span, whichever came first.
    log_records = models.JSONField(default=list)
    # Once the trace has settled (nothing received for OTEL_SPAN_SETTLE_SECONDS),
    # its spans are packed into a ``CompactedSpans`` row and their
    # ``ReceivedSpan`` rows deleted (``otel.compaction``).
    compacted = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organisation", "trace_id"], name="received_trace_unique")
        ]
        indexes = [
            # The traces whose spans are still rows: those compaction looks at.
            models.Index(fields=["id"], name="received_trace_spans_open", condition=models.Q(compacted=False))
        ]


class ReceivedSpan(models.Model):
    """One span as it arrived: ids, times in Unix nanoseconds, status, and its
    span and resource attributes. A re-sent span (same trace and span id) is
    ignored: the first version wins."""

    organisation = models.ForeignKey("accounts.Organisation", on_delete=models.CASCADE, db_index=False)
    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)
    parent_span_id = models.CharField(max_length=16, blank=True)
    # True: the parent lives in another process; False: in this one; None: not reported.
    parent_is_remote = models.BooleanField(null=True)
    name = models.TextField(blank=True)
    kind = models.SmallIntegerField(default=0)
    start_ns = models.BigIntegerField()
    end_ns = models.BigIntegerField()
    status_code = models.SmallIntegerField(default=0)  # 0 unset, 1 ok, 2 error
    status_message = models.TextField(blank=True)
    attributes = models.JSONField(default=dict)
    resource = models.JSONField(default=dict)
    scope = models.CharField(max_length=200, blank=True)
    events = models.JSONField(default=list)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "trace_id", "span_id"], name="received_span_unique"
            )
        ]


class CompactedSpans(models.Model):
    """The packed spans of a settled trace (``otel.compaction``). ``created_at``
    is its product trace's (for a trace never derived, when its first span
    arrived): on PostgreSQL this table is partitioned by it like the traces
    (``agents.partitions``), so retention drops the packed spans of a day with
    the day's traces."""

    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    trace_id = models.CharField(max_length=32)
    created_at = models.DateTimeField()
    packed = models.BinaryField()

    class Meta:
        indexes = [models.Index(fields=["organisation", "trace_id"], name="compacted_spans_trace")]
