"""Keeping hourly and daily rollups current. Writers collect deltas for the rows
they touch and apply them in their own transaction, as additive upserts, so
concurrent batches and re-sends never lose or double a count."""

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from django.db.models import CharField, Func

from thinnest_analytics.db import upsert_add

from .models import COUNTERS, DailyRollup, HourlyRollup
from .sketch import Sketch, bucket_of, merge_into


class LatencyBucket(Func):
    """SQL twin of ``sketch.bucket_of`` (see ``sketch.POSTGRES_FUNCTIONS``)."""

    function = "ta_latency_bucket"
    output_field = CharField()


# (organisation pk, agent pk, channel, deployment version, hour start)
RollupKey = tuple[int, int, str, str, datetime]


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def day_of(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


class RollupDeltas:
    """Changes to apply to the rollups, keyed by hour."""

    def __init__(self) -> None:
        self._counters: dict[RollupKey, dict[str, int | Decimal]] = defaultdict(lambda: defaultdict(int))
        self._sketches: dict[RollupKey, Sketch] = defaultdict(dict)

    def __bool__(self) -> bool:
        return bool(self._counters) or bool(self._sketches)

    def _row(self, organisation_id: int, agent_id: int, channel: str, version: str, at: datetime):
        return self._counters[(organisation_id, agent_id, channel, version, hour_of(at))]

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
    ) -> None:
        key = (organisation_id, agent_id, channel, deployment_version, hour_of(created_at))
        row = self._counters[key]
        row["traces"] += 1
        row["messages"] += (input != "") + (output != "")
        row["input_tokens"] += input_tokens
        row["output_tokens"] += output_tokens
        if latency_ms is not None:
            row["latency_count"] += 1
            row["latency_sum_ms"] += latency_ms
            sketch = self._sketches[key]
            bucket = bucket_of(latency_ms)
            sketch[bucket] = sketch.get(bucket, 0) + 1
        row["tool_call_traces"] += tool_call_count > 0
        row["error_traces"] += status == "error"
        if cost_usd is None:
            row["unpriced_traces"] += 1
        else:
            row["llm_cost_usd"] += cost_usd

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
        row = self._row(organisation_id, agent_id, channel, deployment_version, started_at)
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
    ) -> None:
        """A score counts in the bucket of the trace it is attached to."""
        row = self._row(organisation_id, agent_id, channel, deployment_version, created_at)
        row["score_count"] += 1
        row["score_sum"] += value

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
