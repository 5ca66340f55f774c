"""The time range filter every analytics page shares: Last 24 hours, Last 7 days,
Last 30 days, or a custom range of whole UTC days (both days included). A link
from a number to the list behind it carries the exact window it was counted in
(``period=range&start=…&end=…``, instants in ISO 8601), so the list counts the
same rows even while new ones arrive."""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from django.http import QueryDict

from metrics.windows import Window, WindowError, parse_window

PERIODS = [
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("custom", "Custom range"),
]
DEFAULT_PERIOD = "24h"
RANGE = "range"


def instant(at: datetime) -> str:
    """An instant as it travels in a link: ISO 8601 in UTC."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def range_params(start: datetime, end: datetime) -> dict[str, str]:
    """The query parameters of the exact window ``[start, end)``."""
    return {"period": RANGE, "start": instant(start), "end": instant(end)}


@dataclass
class WindowFilter:
    window: Window
    period: str
    start: str = ""  # custom range, YYYY-MM-DD
    end: str = ""
    error: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # other filters kept in links

    @property
    def choices(self) -> list[tuple[str, str]]:
        if self.period == RANGE:
            return [*PERIODS, (RANGE, "The range of the number clicked")]
        return PERIODS

    @property
    def range(self) -> dict[str, str]:
        """``start`` and ``end`` of an exact window, for hidden form fields."""
        if self.period != RANGE:
            return {}
        return {"start": instant(self.window.start), "end": instant(self.window.end)}

    def query(self, **changes: str | None) -> str:
        """The query string of this filter (plus extras), with ``changes`` applied."""
        params: dict[str, str] = {"period": self.period}
        if self.period == "custom":
            params.update({"from": self.start, "to": self.end})
        params.update(self.range)
        params.update(self.extra)
        for key, value in changes.items():
            if value is None or value == "":
                params.pop(key, None)
            else:
                params[key] = value
        return urlencode({k: v for k, v in params.items() if v != ""})


def days_filter(first: date, last: date, *, extra: dict[str, str] | None = None) -> WindowFilter:
    """A custom range of whole UTC days, both included (a page's own default)."""
    window = parse_window(start=first.isoformat(), end=(last + timedelta(days=1)).isoformat())
    return WindowFilter(window, "custom", first.isoformat(), last.isoformat(), extra=extra or {})


def has_window(params: QueryDict) -> bool:
    """Whether the query string chooses a window itself."""
    return any(params.get(name) for name in ("period", "from", "to"))


def window_filter(params: QueryDict, *, keep: tuple[str, ...] = ()) -> WindowFilter:
    """Parse ``period`` / ``from`` / ``to`` from a page's query string. A bad
    value falls back to the default window with an error to show, never a crash."""
    extra = {k: params[k] for k in keep if params.get(k)}
    period = params.get("period") or DEFAULT_PERIOD
    try:
        if period == RANGE:
            start, end = params.get("start", ""), params.get("end", "")
            if not start or not end:
                raise WindowError("a range needs a start and an end time")
            return WindowFilter(parse_window(start=start, end=end), RANGE, extra=extra)
        if period == "custom":
            start, end = params.get("from", ""), params.get("to", "")
            try:
                first, last = date.fromisoformat(start), date.fromisoformat(end)
            except ValueError:
                raise WindowError("pick a start and an end date for a custom range") from None
            if last < first:
                raise WindowError("the end date is before the start date")
            if last >= date.max:
                raise WindowError(f"the end date {end} is out of range")
            return days_filter(first, last, extra=extra)
        if period not in dict(PERIODS):
            raise WindowError(f"unknown period {period!r}; choose 24h, 7d, 30d or a custom range")
        return WindowFilter(parse_window(period=period), period, extra=extra)
    except WindowError as exc:
        return WindowFilter(parse_window(period=DEFAULT_PERIOD), DEFAULT_PERIOD, error=str(exc), extra=extra)
