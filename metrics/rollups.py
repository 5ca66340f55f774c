"""The facts of raw rows, and keeping hourly and daily rollups current.

Each rollup counter is defined once, as an aggregate over the raw table it
counts (``trace_facts`` …). Writers count the rows they touch with those
definitions (``Counted``: the rows just written, and the rows about to change,
read before they do) and apply the sums in their own transaction, as additive
upserts, so concurrent batches and re-sends never lose or double a count."""

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.apps import apps
from django.db import connection
from django.db.models import Aggregate, CharField, Count, Func, JSONField, Model, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncHour

from thinnest_analytics.db import Bound, Compiled, OneOf, pipelined, upsert_add

from .models import COUNTERS, DailyRollup, HourlyRollup
from .sketch import Sketch, merge_into


class LatencyBucket(Func):
    """SQL twin of ``sketch.bucket_of`` (see ``sketch.POSTGRES_FUNCTIONS``)."""

    function = "ta_latency_bucket"
    output_field = CharField()


class LatencySketch(Aggregate):
    """The latency sketch of a group of rows, ``{bucket: count}`` over the
    non-null values (``sketch.sketch_of``), as an aggregate: on PostgreSQL the
    groups' latencies counted by ``ta_latency_bucket``; on SQLite the aggregate
    ``metrics.apps`` registers."""

    function = "ta_latency_sketch"
    output_field = JSONField()

    def as_postgresql(self, compiler, connection, **extra):
        template = (
            "(SELECT coalesce(jsonb_object_agg(b, n), '{}'::jsonb) FROM "
            "(SELECT ta_latency_bucket(x) AS b, count(*) AS n FROM unnest(array_agg(%(expressions)s)) AS x "
            "WHERE x IS NOT NULL GROUP BY 1) AS s)"
        )
        return self.as_sql(compiler, connection, template=template, **extra)


# --- the facts of raw rows ----------------------------------------------------
# Each rollup counter, defined once as an aggregate over the raw rows it counts.
# Reading a window's partial hours (``selectors.collect``), rebuilding a day
# (``rebuild``) and keeping rollups current on ingestion (``RollupDeltas.count``
# over the rows just written, or about to change) all aggregate with these.


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


def sketch_facts() -> dict:
    """The latency sketch of traces (in the bucket of ``created_at``), over the traces table."""
    return {"latency_sketch": LatencySketch("latency_ms")}


def usage_facts() -> dict:
    """Other spend (scraping and other usage events, in the bucket of their time),
    over billing's usage events table."""
    return {"other_cost_usd": Sum("cost_usd")}


@dataclass(eq=False)
class Facts:
    """How the rows of one raw table count in the rollups: their counters
    (aggregates over the table, above), the time whose hour is their bucket and,
    for traces, their latency sketch. Calls and usage events have no
    channel column: calls count as voice, usage events under no channel ("")."""

    counters: Callable[[], dict]
    at: str
    sketch: Callable[[], dict] | None = None
    channel: str | None = None


TRACE_FACTS = Facts(trace_facts, "created_at", sketch=sketch_facts)
CONVERSATION_FACTS = Facts(conversation_facts, "started_at")
SCORE_FACTS = Facts(score_facts, "trace_created_at")
VOICE_CALL_FACTS = Facts(voice_call_facts, "ended_at", channel="voice")
USAGE_FACTS = Facts(usage_facts, "at", channel="")


# Per thread, the statements counting rows by their ids, compiled once with
# stand-in ids (no table has such a row) that each count binds to its own.
_compiled = threading.local()
_STAND_IN_IDS = (-7_000_000_003,)
_STAND_IN_TIMES = (datetime(1901, 1, 2, 0, 0, 7, tzinfo=UTC), datetime(1901, 1, 2, 0, 0, 8, tzinfo=UTC))


@dataclass(frozen=True)
class Counted:
    """Raw rows to count into the rollups with their ``facts``: the rows just
    written (sign=1), or (sign=-1) rows about to change or go, read before they
    do. ``rows`` is a queryset of the raw table or, as writers name the rows
    they touch, ``(model, column, ids)``: the rows whose ``column`` is one of
    ``ids``. Those statements are compiled once and run with the ids bound."""

    facts: Facts
    rows: QuerySet | tuple[type[Model], str, list[int]]
    sign: int = 1
    # With ``(model, column, ids)``: the first and last time (the facts' ``at``)
    # of those rows, when the writer knows them. The read then names the days
    # they are in, so on PostgreSQL, where traces and scores are partitioned by
    # that time, it reads those days' partitions instead of every one.
    within: tuple[datetime, datetime] | None = None

    def queries(self) -> list[QuerySet | Bound]:
        if isinstance(self.rows, QuerySet):
            return self._queries(self.rows)
        model, column, ids = self.rows
        at = self.facts.at
        if connection.vendor != "postgresql":
            rows = model.objects.filter(OneOf(column, ids))
            if self.within is not None:
                rows = rows.filter(**{f"{at}__gte": self.within[0], f"{at}__lte": self.within[1]})
            return self._queries(rows)
        templates = _compiled.__dict__.setdefault("templates", {})
        key = (self.facts, self.facts.counters, self.facts.sketch, model, column, self.within is not None)
        if key not in templates:
            stand_in = _STAND_IN_IDS
            stand_ins: dict = {stand_in: "ids"}
            rows = model.objects.filter(OneOf(column, stand_in))
            if self.within is not None:
                first, last = _STAND_IN_TIMES
                stand_ins |= {first: "first", last: "last"}
                rows = rows.filter(**{f"{at}__gte": first, f"{at}__lte": last})
            reads = self._queries(rows)
            templates[key] = [Compiled(q, stand_ins, using=connection.alias) for q in reads]
        values: dict = {"ids": list(ids)}
        if self.within is not None:
            values["first"], values["last"] = self.within
        return [c.bound(values) for c in templates[key]]

    def _key_columns(self) -> list[str]:
        channel = ["channel"] if self.facts.channel is None else []
        return ["organisation_id", "agent_id", *channel, "deployment_version", "hour"]

    def _facts(self) -> dict:
        return self.facts.counters() | (self.facts.sketch() if self.facts.sketch else {})

    def _queries(self, rows: QuerySet) -> list[QuerySet]:
        """The counters (and, for traces, the sketch) per rollup key: one query."""
        at = self.facts.at
        rows = rows.filter(**{f"{at}__isnull": False}).annotate(hour=TruncHour(at, tzinfo=UTC))
        key = self._key_columns()
        facts = self._facts()
        return [rows.values(*key).annotate(**facts).values_list(*key, *facts).order_by()]

    def add_to(self, deltas: "RollupDeltas", results: list[list[tuple]]) -> None:
        names = list(self.facts.counters())
        width = len(self._key_columns())
        for row in results[0] if results else ():
            key = self._key(row)
            deltas.add_counters(
                key, dict(zip(names, row[width : width + len(names)], strict=True)), sign=self.sign
            )
            if self.facts.sketch:
                sketch = row[width + len(names)]
                deltas.add_sketch(key, sketch if self.sign > 0 else {b: -n for b, n in sketch.items()})

    def _key(self, row) -> "RollupKey":
        if self.facts.channel is not None:
            org, agent, version, hour = row[:4]
            return (org, agent, self.facts.channel, version, hour.astimezone(UTC))
        org, agent, channel, version, hour = row[:5]
        return (org, agent, channel, version, hour.astimezone(UTC))


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
    """Changes to apply to the rollups, keyed by hour: the sums of what
    ``count`` read (or a rebuild hook added), applied as upserts. It adds up
    facts; it defines none."""

    def __init__(self) -> None:
        self._counters: dict[RollupKey, dict[str, int | Decimal]] = defaultdict(lambda: defaultdict(int))
        self._sketches: dict[RollupKey, Sketch] = defaultdict(dict)

    def __bool__(self) -> bool:
        return bool(self._counters) or bool(self._sketches)

    def count(self, *items: "Counted | tuple[str, dict]") -> None:
        """Aggregate each ``Counted`` with its facts and add the result; on
        PostgreSQL all in one round trip. A statement (SQL and parameters) among
        them runs in its place, e.g. the update that changes rows between their
        retraction (sign=-1) and their count again."""
        queries = [item.queries() if isinstance(item, Counted) else [item] for item in items]
        results = iter(
            pipelined([query for group in queries for query in group], using=connection.alias, prepare=True)
        )
        for item, group in zip(items, queries, strict=True):
            rows = [next(results) for _ in group]
            if isinstance(item, Counted):
                item.add_to(self, rows)

    def add_sketch(self, key: RollupKey, sketch: Sketch) -> None:
        merge_into(self._sketches[key], sketch)

    def add_counters(self, key: RollupKey, counters: dict, *, sign: int = 1) -> None:
        row = self._counters[key]
        for name, value in counters.items():
            if value:
                row[name] += sign * value

    def apply(self) -> None:
        """Upsert the deltas into hourly and daily rollups (inside the caller's
        transaction). Rows are written in key order so writers never deadlock."""
        hourly = self._rows(lambda at: at)
        daily = self._rows(day_of)
        merge = {"latency_sketch": "ta_sketch_merge"}
        key_fields = ["organisation", "agent", "channel", "deployment_version", "bucket_start"]
        upsert_add(HourlyRollup, key_fields, COUNTERS, hourly, merge)
        upsert_add(DailyRollup, key_fields, COUNTERS, daily, merge)
        if self.retracted:
            self._drop_empty_rows()

    def upsert_rows(self) -> tuple[list[tuple], list[tuple]]:
        """The hourly and daily rows ``apply`` upserts (key, counters, sketch), in
        key order, for a writer that sends them in a statement of its own."""
        return self._rows(lambda at: at), self._rows(day_of)

    def _retracted(self) -> set[RollupKey]:
        """Buckets that lose facts (some count goes down): rows left empty there
        are removed after the upserts. A retraction that the same bucket counts
        again (a trace derived again, unchanged) leaves nothing to remove."""
        lost = {key for key, row in self._counters.items() if any(v < 0 for v in row.values())}
        return lost | {key for key, sketch in self._sketches.items() if any(n < 0 for n in sketch.values())}

    @property
    def retracted(self) -> bool:
        """Whether some bucket lost facts (then call ``drop_empty_rows`` after the upserts)."""
        return bool(self._retracted())

    def drop_empty_rows(self) -> None:
        self._drop_empty_rows()

    def _drop_empty_rows(self) -> None:
        """Delete the rows that retractions left with nothing in them, so the
        rollups equal a rebuild from raw rows (which has no empty rows)."""
        empty = Q(latency_sketch={}, **{name: 0 for name in COUNTERS})
        for model, bucket in ((HourlyRollup, lambda at: at), (DailyRollup, day_of)):
            keys = sorted({(org, agent, ch, v, bucket(at)) for org, agent, ch, v, at in self._retracted()})
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
