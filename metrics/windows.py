"""Time windows: ``period=<n>h|<n>d`` or a custom ``from``/``to`` range, always
``[start, end)`` in UTC. Every view and endpoint parses windows here."""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

MAX_DAYS = 400
PERIOD_RE = re.compile(r"^(\d{1,5})([hd])$")
ACCEPTED = "period must look like 24h, 7d or 30d (any <n>h or <n>d up to 400d), or give from/to in ISO 8601"


class WindowError(ValueError):
    """A window the caller asked for that cannot be served; the message says why."""


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    period: str | None = None  # "7d" for period windows, None for custom ranges

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def label(self) -> str:
        return self.period or "custom"

    def previous(self) -> "Window":
        """The window of equal length just before this one."""
        return Window(self.start - self.length, self.start, self.period)

    @property
    def is_live(self) -> bool:
        """Period windows end now and move with the clock."""
        return self.period is not None


def parse_instant(value: str, name: str) -> datetime:
    value = value.strip()
    parsed: datetime | date | None
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            parsed = parse_date(value)
            if parsed is not None:
                parsed = datetime.combine(parsed, time.min)
    except ValueError:
        parsed = None
    if parsed is None:
        raise WindowError(f"'{name}' is not an ISO 8601 date or time: {value!r}")
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    if parsed.year < 2000 or parsed.year > 2200:
        raise WindowError(f"'{name}' is out of range: {value!r}")
    return parsed


def parse_window(
    *,
    period: str | None = None,
    start: str | None = None,
    end: str | None = None,
    default: str = "7d",
    now: datetime | None = None,
) -> Window:
    """A window from request parameters. ``period`` and ``from``/``to`` exclude
    each other; ``to`` defaults to now; a date without time is its midnight UTC."""
    now = now or timezone.now()
    if start or end:
        if period:
            raise WindowError("give either 'period' or 'from'/'to', not both")
        if not start:
            raise WindowError("a custom range needs 'from' (and optionally 'to')")
        window_start = parse_instant(start, "from")
        window_end = parse_instant(end, "to") if end else now
        if window_start >= window_end:
            raise WindowError("'from' must be before 'to'")
        if window_end - window_start > timedelta(days=MAX_DAYS):
            raise WindowError(f"a window spans at most {MAX_DAYS} days")
        return Window(window_start, window_end, None)

    period = (period or default).strip()
    match = PERIOD_RE.match(period)
    if not match:
        raise WindowError(f"{ACCEPTED}; got {period!r}")
    amount, unit = int(match.group(1)), match.group(2)
    length = timedelta(hours=amount) if unit == "h" else timedelta(days=amount)
    if amount == 0:
        raise WindowError(f"{ACCEPTED}; a period must be at least 1h")
    if length > timedelta(days=MAX_DAYS):
        raise WindowError(f"{ACCEPTED}; {period} is longer than {MAX_DAYS}d")
    return Window(now - length, now, period)


def retention_horizon(*, days: int | None = None, now: datetime | None = None) -> datetime | None:
    """Raw rows created before this instant may be deleted; None when raw rows
    are kept forever (``RETENTION_DAYS=0``)."""
    days = settings.RETENTION_DAYS if days is None else days
    if days <= 0:
        return None
    return (now or timezone.now()) - timedelta(days=days)
