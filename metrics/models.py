from django.db import models

MONEY = {"max_digits": 24, "decimal_places": 10, "default": 0}


class Rollup(models.Model):
    """Counters and sums for one (organisation, agent, channel, deployment
    version, bucket). Trace facts count in the trace's bucket; conversation facts
    in the bucket where the conversation started; voice facts where the call
    ended. Every column is additive, so buckets merge by summing."""

    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="+", db_index=False)
    channel = models.CharField(max_length=16)
    deployment_version = models.CharField(max_length=64)
    bucket_start = models.DateTimeField()

    traces = models.BigIntegerField(default=0)
    messages = models.BigIntegerField(default=0)  # non-empty inputs + non-empty outputs
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    latency_count = models.BigIntegerField(default=0)  # traces with a latency
    latency_sum_ms = models.BigIntegerField(default=0)
    tool_call_traces = models.BigIntegerField(default=0)  # traces with >= 1 tool call
    error_traces = models.BigIntegerField(default=0)
    llm_cost_usd = models.DecimalField(**MONEY)  # priced traces only
    unpriced_traces = models.BigIntegerField(default=0)
    score_count = models.BigIntegerField(default=0)
    score_sum = models.DecimalField(max_digits=24, decimal_places=6, default=0)
    conversations = models.BigIntegerField(default=0)  # conversations started
    failed_conversations = models.BigIntegerField(default=0)  # of those, with a failed trace
    voice_calls_ended = models.BigIntegerField(default=0)
    voice_seconds = models.DecimalField(max_digits=20, decimal_places=3, default=0)
    voice_cost_usd = models.DecimalField(**MONEY)
    other_cost_usd = models.DecimalField(**MONEY)  # scraping and other usage events
    latency_sketch = models.JSONField(default=dict)

    class Meta:
        abstract = True


class HourlyRollup(Rollup):
    class Meta:
        db_table = "dashboard_hourlyrollup"  # the table predates the metrics app
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "agent", "channel", "deployment_version", "bucket_start"],
                name="hourly_rollup_key",
            )
        ]
        indexes = [
            models.Index(fields=["organisation", "bucket_start"], name="hourly_org_time"),
            models.Index(fields=["agent", "bucket_start"], name="hourly_agent_time"),
        ]


class DailyRollup(Rollup):
    """The same counters per UTC day, so a 30-day window reads a few thousand rows."""

    class Meta:
        db_table = "dashboard_dailyrollup"  # the table predates the metrics app
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "agent", "channel", "deployment_version", "bucket_start"],
                name="daily_rollup_key",
            )
        ]
        indexes = [
            models.Index(fields=["organisation", "bucket_start"], name="daily_org_time"),
            models.Index(fields=["agent", "bucket_start"], name="daily_agent_time"),
        ]


# The additive columns, in one list for the upserts and the selectors.
COUNTERS = [
    "traces",
    "messages",
    "input_tokens",
    "output_tokens",
    "latency_count",
    "latency_sum_ms",
    "tool_call_traces",
    "error_traces",
    "llm_cost_usd",
    "unpriced_traces",
    "score_count",
    "score_sum",
    "conversations",
    "failed_conversations",
    "voice_calls_ended",
    "voice_seconds",
    "voice_cost_usd",
    "other_cost_usd",
]
KEY_FIELDS = ["organisation", "agent", "channel", "deployment_version", "bucket_start"]
