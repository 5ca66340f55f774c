"""The Traces and Conversations lists: filters, sort orders, pages in both
directions and the number of rows the filters match.

Pages are keyset-paginated on (sort value, id) — ties are ordered by id — each
sort order on an index that leads with the organisation and the sort value
(missing latencies and costs sort as -1, below every real value, see
``agents.models.SORT_KEYS``). A page link carries the sort value and id of the
row it continues from, so rows arriving meanwhile cause no gaps or repeats.

How many rows match: when every filter is one the rollups are keyed by (agent,
channel, version, status) and the window is inside retention, the count is read
from the rollups — the very numbers the Overview and an agent's Performance tab
show, so a click on a number lands on a list of exactly that many rows, and it
costs the same at 10 million traces as at a thousand. Otherwise (model, latency
or cost thresholds) the matching rows are counted, up to COUNT_LIMIT; a text
search counts its matches in the search index, up to SEARCH_LIMIT.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from django.db.models import (
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    Field,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.http import QueryDict
from django.utils.dateparse import parse_datetime

from agents.models import SORT_KEYS, Agent, Channel, Session, Trace, TraceStatus
from agents.search import TextMatches, search_words
from metrics.rollups import hour_of
from metrics.windows import Window, retention_horizon
from thinnest_analytics.cursors import cursor_decode, cursor_encode
from thinnest_analytics.errors import ApiError

from .selectors import Totals, collect

PAGE_SIZE = 25
COUNT_LIMIT = 10_000
# A search with more matches than this is a common word: its list is read in
# the list's order (matches are dense there), and its count shown as "more than".
SEARCH_LIMIT = 2_000
# A window with at most this many matching rows (known from the rollups) is
# read by time and sorted in memory; a longer one is read from the sort index.
SORT_IN_MEMORY = 20_000
MAX_TERM = 200
CONVERSATION_STATUSES = ("success", "failed")

Kind = Literal["traces", "conversations"]


@dataclass(frozen=True)
class Order:
    """A sort order: the expression rows are sorted by, and how its value
    travels in a page link."""

    expression: Any
    dump: Callable[[Any], Any]
    load: Callable[[Any], Any]
    field: Field | None = None  # the value's type, for the expression in another form


def _load_time(value) -> datetime:
    at = parse_datetime(value) if isinstance(value, str) else None
    if at is None or at.tzinfo is None:
        raise ValueError(value)
    return at


def _load_int(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(value)
    return value


def _load_float(value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(value)
    return float(value)


def _load_money(value) -> Decimal:
    amount = Decimal(str(value))
    if not amount.is_finite():
        raise ValueError(value)
    return amount


MONEY = DecimalField(max_digits=20, decimal_places=10)
ORDERS: dict[Kind, dict[str, Order]] = {
    "traces": {
        "time": Order(F("created_at"), datetime.isoformat, _load_time),
        "latency": Order(SORT_KEYS["latency_ms"], int, _load_int, IntegerField()),
        "cost": Order(SORT_KEYS["cost_usd"], str, _load_money, MONEY),
    },
    "conversations": {
        "time": Order(F("started_at"), datetime.isoformat, _load_time),
        "latency": Order(SORT_KEYS["latency_avg_ms"], float, _load_float, FloatField()),
        "cost": Order(F("cost_usd"), str, _load_money, MONEY),
    },
}
DEFAULT_SORT = "-time"


@dataclass
class ListFilters:
    """What a list is filtered and sorted by; ``errors`` says which values were
    not understood (those filters are left out, never a server error)."""

    kind: Kind
    agent: Agent | None = None
    channel: str | None = None
    status: str | None = None
    version: str | None = None
    model: str | None = None
    min_latency_ms: int | None = None
    min_cost_usd: Decimal | None = None
    text: str | None = None
    sort: str = DEFAULT_SORT
    after: str | None = None  # continue after this row (older, in the default order)
    before: str | None = None  # the page before this row (newer)
    errors: list[str] = field(default_factory=list)

    @property
    def by_rollup_keys(self) -> bool:
        """Only filters the rollups are keyed by: the count can come from them."""
        return (
            self.model is None and self.min_latency_ms is None and self.min_cost_usd is None and not self.text
        )

    @property
    def sort_key(self) -> str:
        return self.sort.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    # The parameters that keep this list's filters in links (not the page).
    def params(self) -> dict[str, str]:
        out = {
            "agent": self.agent.public_id if self.agent else None,
            "channel": self.channel,
            "status": self.status,
            "version": self.version,
            "model": self.model,
            "latency_min": None if self.min_latency_ms is None else str(self.min_latency_ms),
            "cost_min": None if self.min_cost_usd is None else str(self.min_cost_usd),
            "q": self.text,
            "sort": None if self.sort == DEFAULT_SORT else self.sort,
        }
        return {k: v for k, v in out.items() if v not in (None, "")}


def _text(params: QueryDict, name: str, limit: int = MAX_TERM) -> str | None:
    return (params.get(name) or "").strip()[:limit] or None


def list_filters(params: QueryDict, *, organisation, kind: Kind) -> ListFilters:
    """Parse a list's filters from its query string. A value that cannot be used
    is reported in ``errors`` and left out."""
    f = ListFilters(kind=kind)
    if agent_id := _text(params, "agent"):
        f.agent = Agent.objects.filter(organisation=organisation, public_id=agent_id).first()
        if f.agent is None:
            f.errors.append(f"there is no agent '{agent_id}'")
    if channel := _text(params, "channel"):
        if channel in Channel.values:
            f.channel = channel
        else:
            f.errors.append(f"unknown channel '{channel}'; choose chat, voice or widget")
    statuses = TraceStatus.values if kind == "traces" else CONVERSATION_STATUSES
    if status := _text(params, "status"):
        if status in statuses:
            f.status = status
        else:
            f.errors.append(f"unknown status '{status}'; choose {' or '.join(statuses)}")
    f.version = _text(params, "version", 64)
    if kind == "traces":
        f.model = _text(params, "model")
        if raw := _text(params, "latency_min"):
            try:
                f.min_latency_ms = int(raw)
                if f.min_latency_ms < 0:
                    raise ValueError
            except ValueError:
                f.min_latency_ms = None
                f.errors.append(f"latency ≥ must be a whole number of milliseconds, not '{raw}'")
        if raw := _text(params, "cost_min"):
            try:
                f.min_cost_usd = Decimal(raw.lstrip("$"))
                if not f.min_cost_usd.is_finite() or f.min_cost_usd < 0:
                    raise InvalidOperation
            except InvalidOperation:
                f.min_cost_usd = None
                f.errors.append(f"cost ≥ must be an amount in USD such as 0.01, not '{raw}'")
    if text := _text(params, "q"):
        if search_words(text):
            f.text = text
        else:
            f.errors.append("type a word to search for")
    sort = params.get("sort") or DEFAULT_SORT
    if sort.lstrip("-") in ORDERS[kind] and sort.count("-") <= 1:
        f.sort = sort
    else:
        f.errors.append(f"unknown sort order '{sort[:40]}'; sort by time, latency or cost")
    f.after = params.get("cursor") or None
    f.before = None if f.after else params.get("before") or None
    return f


# --- pages ----------------------------------------------------------------------


@dataclass
class ListPage:
    rows: list
    total: int
    capped: bool = False  # more than ``total`` rows match (COUNT_LIMIT reached)
    older: str | None = None  # cursor of the next page in the list's order
    newer: str | None = None  # cursor of the page before this one
    first: bool = True  # this is the first page
    # From the rollups, when the count came from them (traces only).
    messages: int | None = None
    agents: int | None = None


def _token(order_key: str, order: Order, row) -> str:
    return cursor_encode(order_key, order.dump(row.sort_value), row.pk)


def _untoken(token: str, order_key: str, order: Order) -> tuple[Any, int]:
    """The sort value and id a page link continues from (a 400 ApiError for a
    link this list did not make, or one of another sort order)."""
    values = cursor_decode(token)
    try:
        key, value, pk = values
        if key != order_key or not isinstance(pk, int) or isinstance(pk, bool):
            raise ValueError
        return order.load(value), pk
    except (ValueError, TypeError, ArithmeticError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this list returned") from None


def _keyset_page(qs: QuerySet, f: ListFilters, limit: int, few: bool = False) -> ListPage:
    """The page after (or before) the page link's row. ``few``: the filters
    match few rows (SORT_IN_MEMORY), which are better read through the time
    index and sorted than found by walking the whole sort index."""
    order = ORDERS[f.kind][f.sort_key]
    expression = order.expression
    if few and f.sort_key != "time":
        # The same values, in a form the sort index does not serve.
        expression = ExpressionWrapper(expression + Value(0), output_field=order.field)
    qs = qs.annotate(sort_value=expression)
    token = f.before or f.after
    backwards = f.before is not None
    # Travel towards smaller values for a descending list read forwards, or an
    # ascending one read backwards.
    down = f.descending != backwards
    if token:
        value, pk = _untoken(token, f.sort_key, order)
        if down:
            qs = qs.filter(sort_value__lte=value).filter(
                Q(sort_value__lt=value) | Q(sort_value=value, pk__lt=pk)
            )
        else:
            qs = qs.filter(sort_value__gte=value).filter(
                Q(sort_value__gt=value) | Q(sort_value=value, pk__gt=pk)
            )
    rows = list(qs.order_by(*(("-sort_value", "-pk") if down else ("sort_value", "pk")))[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        if not more:  # back at the top: the first page, full
            return _keyset_page(qs, replace(f, before=None), limit, few)
        rows.reverse()
    page = ListPage(rows=rows, total=0, first=not token)
    if rows:
        page.older = _token(f.sort_key, order, rows[-1]) if (more or backwards) else None
        page.newer = _token(f.sort_key, order, rows[0]) if token else None
    return page


def _rollup_totals(*, organisation, window: Window, f: ListFilters) -> Totals | None:
    """The window's totals for the agent, channel and version filters, from the
    rollups; None when they cannot answer (other filters, or a window reaching
    before the retention horizon, whose raw rows may be gone)."""
    horizon = retention_horizon()
    if not f.by_rollup_keys or (horizon is not None and hour_of(window.start) < horizon):
        return None
    totals = Totals()
    facts = ("traces",) if f.kind == "traces" else ("conversations",)
    by_key = collect(
        organisation=organisation, window=window, agent=f.agent, group=("channel", "version"), facts=facts
    )
    for (channel, version), t in by_key.items():
        if (f.channel is None or channel == f.channel) and (f.version is None or version == f.version):
            totals.merge(t, with_sketch=False)
    return totals


def _count(qs: QuerySet) -> tuple[int, bool]:
    """Matching rows, counted up to COUNT_LIMIT (and whether there are more)."""
    n = qs.order_by()[: COUNT_LIMIT + 1].count()
    return min(n, COUNT_LIMIT), n > COUNT_LIMIT


def _search_page(matching: QuerySet, rows: QuerySet, f: ListFilters, limit: int) -> ListPage:
    """A text search. Its matches, up to SEARCH_LIMIT, come from the search index
    (sort value and id only) and are counted and paged here, so a rare word
    reads only its own rows. More matches than that are a common word: the list
    is then read in its sort order like any other, finding its rows at once."""
    order = ORDERS[f.kind][f.sort_key]
    hits = list(
        matching.annotate(sort_value=order.expression).values_list("sort_value", "pk")[: SEARCH_LIMIT + 1]
    )
    if len(hits) > SEARCH_LIMIT:
        page = _keyset_page(rows, f, limit)
        page.total, page.capped = SEARCH_LIMIT, True
        return page
    hits.sort(reverse=f.descending)
    start = 0
    if token := f.before or f.after:
        mark = _untoken(token, f.sort_key, order)
        if f.after:  # the rows after the mark, in the list's order
            start = len(hits) - sum(1 for hit in hits if (hit < mark if f.descending else hit > mark))
        else:  # the page before the mark; at the top, the first page, full
            start = max(0, sum(1 for hit in hits if (hit > mark if f.descending else hit < mark)) - limit)
    chosen = hits[start : start + limit]
    by_pk = {
        row.pk: row
        for row in rows.filter(pk__in=[pk for _, pk in chosen]).annotate(sort_value=order.expression)
    }
    page = ListPage(rows=[by_pk[pk] for _, pk in chosen if pk in by_pk], total=len(hits), first=start == 0)
    if page.rows:
        if start + limit < len(hits):
            page.older = _token(f.sort_key, order, page.rows[-1])
        if start > 0:
            page.newer = _token(f.sort_key, order, page.rows[0])
    return page


def _page(
    matching: QuerySet, rows: QuerySet, f: ListFilters, limit: int, counted: tuple[int, bool] | None
) -> ListPage:
    """The page of ``rows`` (``matching``, with what a row shows) and the count:
    ``counted`` when the rollups gave it, else the matching rows counted."""
    if f.text:
        return _search_page(matching, rows, f, limit)
    total, capped = counted if counted is not None else _count(matching)
    if total == 0 and not (f.after or f.before):
        return ListPage(rows=[], total=0)
    page = _keyset_page(rows, f, limit, few=counted is not None and total <= SORT_IN_MEMORY)
    page.total, page.capped = total, capped
    return page


def trace_list(*, organisation, window: Window, filters: ListFilters, limit: int = PAGE_SIZE) -> ListPage:
    """A page of the traces created in the window that match ``filters``, in
    their sort order, and how many match. Latency in ms, cost in USD; an
    unpriced trace (cost unknown) sorts below every priced one."""
    f = filters
    qs = Trace.objects.filter(
        organisation=organisation, created_at__gte=window.start, created_at__lt=window.end
    )
    if f.agent:
        qs = qs.filter(agent=f.agent)
    if f.channel:
        qs = qs.filter(channel=f.channel)
    if f.status:
        qs = qs.filter(status=f.status)
    if f.version is not None:
        qs = qs.filter(deployment_version=f.version)
    if f.model:
        qs = qs.filter(model=f.model)
    # Thresholds compare the sort keys, so the sort indexes serve them too.
    if f.min_latency_ms is not None:
        qs = qs.alias(latency_key=SORT_KEYS["latency_ms"]).filter(latency_key__gte=f.min_latency_ms)
    if f.min_cost_usd is not None:
        qs = qs.alias(cost_key=SORT_KEYS["cost_usd"]).filter(cost_key__gte=f.min_cost_usd)
    if f.text:
        qs = qs.filter(TextMatches(f.text))

    totals = _rollup_totals(organisation=organisation, window=window, f=f)
    counted = None
    if totals is not None:
        errors = totals.error_traces
        counted = ({None: totals.traces, "error": errors, "success": totals.traces - errors}[f.status], False)
    rows = qs.defer("reasoning", "output", "tool_calls", "metadata").prefetch_related("agent", "session")
    page = _page(qs, rows, f, limit, counted)
    if totals is not None and f.status is None:
        page.messages, page.agents = totals.messages, len(totals.agents)
    return page


def conversation_list(
    *, organisation, window: Window, filters: ListFilters, limit: int = PAGE_SIZE
) -> ListPage:
    """A page of the conversations that started in the window and match
    ``filters`` (status success or failed; text in any of their traces), in
    their sort order, and how many match. Latency is the conversation's mean
    response time in ms; cost its traces' LLM cost plus its call's minutes (USD)."""
    f = filters
    qs = Session.objects.filter(
        organisation=organisation, started_at__gte=window.start, started_at__lt=window.end
    )
    if f.agent:
        qs = qs.filter(agent=f.agent)
    if f.channel:
        qs = qs.filter(channel=f.channel)
    if f.status == "failed":
        qs = qs.filter(error_count__gt=0)
    elif f.status == "success":
        qs = qs.filter(error_count=0)
    if f.version is not None:
        qs = qs.filter(deployment_version=f.version)
    if f.text:
        # The matching traces come from the search index (a conversation's
        # traces are never older than its start); past SEARCH_LIMIT of them the
        # word is common, and each conversation is checked as the list is read.
        traces = Trace.objects.filter(organisation=organisation, created_at__gte=window.start)
        if f.agent:
            traces = traces.filter(agent=f.agent)
        if f.channel:
            traces = traces.filter(channel=f.channel)
        found = list(
            traces.filter(TextMatches(f.text)).values_list("session_id", flat=True)[: SEARCH_LIMIT + 1]
        )
        if len(found) <= SEARCH_LIMIT:
            qs = qs.filter(pk__in=set(found))
        else:
            qs = qs.filter(
                Exists(
                    Trace.objects.filter(session=OuterRef("pk"), created_at__gte=window.start).filter(
                        TextMatches(f.text)
                    )
                )
            )

    totals = _rollup_totals(organisation=organisation, window=window, f=f)
    counted = None
    if totals is not None:
        failed = totals.failed_conversations
        total = {None: totals.conversations, "failed": failed, "success": totals.conversations - failed}[
            f.status
        ]
        counted = (total, False)
    # A conversation's traces lie between its first trace and its last
    # activity: bounded so, each row reads only its own days' partitions.
    first_input = (
        Trace.objects.filter(
            session=OuterRef("pk"),
            created_at__gte=OuterRef("first_trace_at"),
            created_at__lte=OuterRef("last_activity_at"),
        )
        .exclude(input="")
        .order_by("created_at", "pk")
        .values("input")[:1]
    )
    rows = qs.annotate(first_input=Subquery(first_input)).prefetch_related("agent")
    return _page(qs, rows, f, limit, counted)
