"""Keeping hourly and daily rollups current. Writers collect deltas for the rows
they touch and apply them in their own transaction, as additive upserts, so
concurrent batches and re-sends never lose or double a count."""

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from django.apps import apps
from django.db.models import CharField, Count, Func, Q, Sum
from django.db.models.functions import Coalesce

from thinnest_analytics.db import upsert_add

from .models import COUNTERS, DailyRollup, HourlyRollup
from .sketch import Sketch, bucket_of, merge_into


class LatencyBucket(Func):
    """SQL twin of ``sketch.bucket_of`` (see ``sketch.POSTGRES_FUNCTIONS``)."""

    function = "ta_latency_bucket"
    output_field = CharField()


# --- the facts of raw rows ----------------------------------------------------
# Each rollup counter, defined once as an aggregate over the raw rows it counts.
# Reading a window's partial hours (``selectors.collect``) and rebuilding a day
# (``rebuild``) both aggregate with these; ``RollupDeltas`` is their per-row twin.


def trace_facts() -> dict:
    """The counters of traces (in the bucket of ``created_at``), over the traces table."""
    return {
        "traces": Count("id"),
        "messages": Count("id", filter=~Q(input="")) + Count("id", filter=~Q(output="")),
        "input_tokens": Sum("input_tokens"),
        "output_tokens": Sum("output_tokens"),
        "latency_count": Count("latency_ms"),
        "latency_sum_ms": Coalesce(Sum("latency_ms"), 0),
        "tool_call_traces": Count("id", filter=Q(tool_call_count__gt=0)),
        "error_traces": Count("id", filter=Q(status="error")),
        "llm_cost_usd": Coalesce(Sum("cost_usd"), Decimal(0)),  # priced traces only
        "unpriced_traces": Count("id", filter=Q(cost_usd__isnull=True)),
    }


def conversation_facts() -> dict:
    """The counters of conversations (in the bucket of ``started_at``), over the conversations table."""
    return {"conversations": Count("id"), "failed_conversations": Count("id", filter=Q(error_count__gt=0))}


def score_facts() -> dict:
    """The counters of evaluation scores (in the bucket of their trace), over the scores table."""
    return {"score_count": Count("id"), "score_sum": Sum("value")}


def voice_call_facts() -> dict:
    """The counters of voice calls (in the bucket of ``ended_at``), over the calls table."""
    return {
        "voice_calls_ended": Count("id"),
        "voice_seconds": Sum("duration_s"),
        "voice_cost_usd": Sum("cost_usd"),
    }


# (organisation pk, agent pk, channel, deployment version, hour start)
RollupKey = tuple[int, int, str, str, datetime]


def raw_model(label: str):
    """A table of raw rows the rollups are computed from (traces, conversations,
    scores, calls, usage events). Those tables belong to the apps above metrics
    — ingestion and billing — so metrics names them by label, as models name
    each other, and never imports them."""
    return apps.get_model(label)


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def day_of(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


class RollupDeltas:
    """Changes to apply to the rollups, keyed by hour."""

    def __init__(self) -> None:
        self._counters: dict[RollupKey, dict[str, int | Decimal]] = defaultdict(lambda: defaultdict(int))
        self._sketches: dict[RollupKey, Sketch] = defaultdict(dict)
        # Buckets that lost facts: rows left empty there are removed on apply.
        self._retracted: set[RollupKey] = set()

    def __bool__(self) -> bool:
        return bool(self._counters) or bool(self._sketches)

    @staticmethod
    def _key(organisation_id: int, agent_id: int, channel: str, version: str, at: datetime) -> RollupKey:
        return (organisation_id, agent_id, channel, version, hour_of(at))

    def _row(
        self, organisation_id: int, agent_id: int, channel: str, version: str, at: datetime, sign: int = 1
    ):
        """The counters of a bucket; a retraction (sign=-1) marks it for clean-up."""
        key = self._key(organisation_id, agent_id, channel, version, at)
        if sign < 0:
            self._retracted.add(key)
        return self._counters[key]

    def add_trace(
        self,
        *,
        organisation_id: int,
        agent_id: int,
        channel: str,
        deployment_version: str,
        created_at: datetime,
        input: str,
        output: str,
        input_tokens: int,
        output_tokens: int,
        latency_ms: int | None,
        tool_call_count: int,
        status: str,
        cost_usd: Decimal | None,
        sign: int = 1,
    ) -> None:
        """Count (sign=1) or retract (sign=-1) a trace in its bucket. A trace
        derived again from more of its spans retracts its old version first."""
        key = self._key(organisation_id, agent_id, channel, deployment_version, created_at)
        row = self._row(organisation_id, agent_id, channel, deployment_version, created_at, sign)
        row["traces"] += sign
        row["messages"] += sign * ((input != "") + (output != ""))
        row["input_tokens"] += sign * input_tokens
        row["output_tokens"] += sign * output_tokens
        if latency_ms is not None:
            row["latency_count"] += sign
            row["latency_sum_ms"] += sign * latency_ms
            merge_into(self._sketches[key], {bucket_of(latency_ms): sign})
        row["tool_call_traces"] += sign * (tool_call_count > 0)
        row["error_traces"] += sign * (status == "error")
        if cost_usd is None:
            row["unpriced_traces"] += sign
        else:
            row["llm_cost_usd"] += sign * cost_usd

    def add_conversation(
        self,
        *,
        organisation_id: int,
        agent_id: int,
        channel: str,
        deployment_version: str,
        started_at: datetime,
        failed: bool,
        sign: int = 1,
    ) -> None:
        """Count (sign=1) or un-count (sign=-1) a conversation where it started."""
        row = self._row(organisation_id, agent_id, channel, deployment_version, started_at, sign)
        row["conversations"] += sign
        row["failed_conversations"] += sign * failed

    def add_score(
        self,
        *,
        organisation_id: int,
        agent_id: int,
        channel: str,
        deployment_version: str,
        created_at: datetime,
        value: Decimal,
        sign: int = 1,
    ) -> None:
        """A score counts in the bucket of the trace it is attached to (sign=-1
        retracts it, when its trace moves to another bucket)."""
        row = self._row(organisation_id, agent_id, channel, deployment_version, created_at, sign)
        row["score_count"] += sign
        row["score_sum"] += sign * value

    def add_voice_call(
        self,
        *,
        organisation_id: int,
        agent_id: int,
        deployment_version: str,
        ended_at: datetime,
        seconds: Decimal,
        cost_usd: Decimal,
    ) -> None:
        row = self._row(organisation_id, agent_id, "voice", deployment_version, ended_at)
        row["voice_calls_ended"] += 1
        row["voice_seconds"] += seconds
        row["voice_cost_usd"] += cost_usd

    def add_other_cost(
        self,
        *,
        organisation_id: int,
        agent_id: int,
        channel: str,
        deployment_version: str,
        at: datetime,
        cost_usd: Decimal,
    ) -> None:
        self._row(organisation_id, agent_id, channel, deployment_version, at)["other_cost_usd"] += cost_usd

    def add_sketch(self, key: RollupKey, sketch: Sketch) -> None:
        merge_into(self._sketches[key], sketch)

    def add_counters(self, key: RollupKey, counters: dict) -> None:
        row = self._counters[key]
        for name, value in counters.items():
            row[name] += value

    def apply(self) -> None:
        """Upsert the deltas into hourly and daily rollups (inside the caller's
        transaction). Rows are written in key order so writers never deadlock."""
        hourly = self._rows(lambda at: at)
        daily = self._rows(day_of)
        merge = {"latency_sketch": "ta_sketch_merge"}
        key_fields = ["organisation", "agent", "channel", "deployment_version", "bucket_start"]
        upsert_add(HourlyRollup, key_fields, COUNTERS, hourly, merge)
        upsert_add(DailyRollup, key_fields, COUNTERS, daily, merge)
        if self._retracted:
            self._drop_empty_rows()

    def upsert_rows(self) -> tuple[list[tuple], list[tuple]]:
        """The hourly and daily rows ``apply`` upserts (key, counters, sketch), in
        key order, for a writer that sends them in a statement of its own."""
        return self._rows(lambda at: at), self._rows(day_of)

    @property
    def retracted(self) -> bool:
        """Whether some bucket lost facts (then call ``drop_empty_rows`` after the upserts)."""
        return bool(self._retracted)

    def drop_empty_rows(self) -> None:
        self._drop_empty_rows()

    def _drop_empty_rows(self) -> None:
        """Delete the rows that retractions left with nothing in them, so the
        rollups equal a rebuild from raw rows (which has no empty rows)."""
        empty = Q(latency_sketch={}, **{name: 0 for name in COUNTERS})
        for model, bucket in ((HourlyRollup, lambda at: at), (DailyRollup, day_of)):
            keys = sorted({(org, agent, ch, v, bucket(at)) for org, agent, ch, v, at in self._retracted})
            where = Q()
            for org, agent, channel, version, at in keys:
                where |= Q(
                    organisation_id=org,
                    agent_id=agent,
                    channel=channel,
                    deployment_version=version,
                    bucket_start=at,
                )
            model.objects.filter(where, empty).delete()

    def _rows(self, bucket) -> list[tuple]:
        counters: dict[RollupKey, dict] = defaultdict(lambda: defaultdict(int))
        sketches: dict[RollupKey, Sketch] = defaultdict(dict)
        for (org, agent, channel, version, hour), row in self._counters.items():
            target = counters[(org, agent, channel, version, bucket(hour))]
            for name, value in row.items():
                target[name] += value
        for (org, agent, channel, version, hour), sketch in self._sketches.items():
            merge_into(sketches[(org, agent, channel, version, bucket(hour))], sketch)
        rows = []
        for key in sorted(set(counters) | set(sketches)):
            row = counters.get(key, {})
            values = [row.get(name, 0) for name in COUNTERS]
            if not any(values) and not sketches.get(key):
                continue  # e.g. a conversation moved out of and back into the same bucket
            rows.append((*key, *values, sketches.get(key, {})))
        return rows
