"""How numbers read, everywhere: pages (through the ``formatting`` template
library), chart axes and hover labels (the Plotly formats below), CSV files and
the JSON the API and the live sockets send.

One style: thousands separators; a fixed number of decimals per kind of number,
so a column never mixes ``$0.0714`` with ``$8.26``; a positive amount too small
for its column's precision reads ``< $0.01`` rather than a misleading ``$0.00``;
no value reads ``—``. Money is ``Decimal`` and is rounded half up, as a person
would round it.
"""

import math
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MISSING = "—"
MINUS = "\u2212"  # a real minus sign: it lines up with "+" in a column

# Decimals of money: totals and balances in cents; a single trace or step, and
# per-conversation costs, in hundredths of a cent.
USD_PLACES = 2
UNIT_USD_PLACES = 4


def _decimal(value) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _is_missing(value) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def format_usd(value, places: int = USD_PLACES) -> str:
    """``$1,234.57``; ``< $0.01`` for a positive amount under one unit of the
    last decimal (``> −$0.01`` below zero); ``—`` for no value."""
    amount = _decimal(value)
    if amount is None:
        return MISSING
    unit = Decimal(1).scaleb(-places)
    if amount and abs(amount) < unit:
        return f"< ${unit}" if amount > 0 else f"> {MINUS}${unit}"
    rounded = amount.quantize(unit, rounding=ROUND_HALF_UP)
    return f"{MINUS if rounded < 0 else ''}${abs(rounded):,.{places}f}"


def format_usd_exact(value) -> str:
    """Every stored decimal, for a title attribute: ``0.00002175 USD``."""
    amount = _decimal(value)
    if amount is None:
        return ""
    return f"{amount.normalize() if amount else Decimal(0):f} USD"


def format_usd_plain(value, places: int = USD_PLACES) -> str:
    """Money for CSV files: a plain number a spreadsheet reads (``1234.50``),
    no currency sign, no separators, rounded half up; empty for no value."""
    amount = _decimal(value)
    if amount is None:
        return ""
    rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{abs(rounded) if rounded == 0 else rounded:f}"  # never "-0.00"


def csv_cell(value) -> str:
    """Text for one CSV cell; a leading = + - @ (or tab, carriage return) is
    quoted so a spreadsheet never runs the cell as a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def json_value(value):
    """``json.dumps(..., default=json_value)``: money (``Decimal``) leaves as a JSON
    number (up to 15 significant digits print exactly), times as ISO 8601 with
    ``Z`` for UTC."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def format_count(value) -> str:
    """Whole numbers: ``12,345``."""
    if _is_missing(value):
        return MISSING
    return f"{round(value):,}"


def format_number(value, places: int = 1) -> str:
    """A measured quantity that is not a count: ``1,190.1``."""
    if _is_missing(value):
        return MISSING
    return f"{float(value):,.{places}f}"


def format_ms(value) -> str:
    """Durations of replies and steps, always in milliseconds: ``1,457 ms``."""
    if _is_missing(value):
        return MISSING
    return f"{float(value):,.0f} ms"


def format_seconds(value, places: int = 1) -> str:
    if _is_missing(value):
        return MISSING
    return f"{float(value):,.{places}f} s"


def format_duration(value) -> str:
    """A conversation's length (a ``timedelta``): ``42 s``, ``3 min 05 s``, ``2 h 03 min``."""
    if value is None:
        return MISSING
    seconds = round(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600:,} h {seconds % 3600 // 60:02d} min"


def format_minutes(value) -> str:
    if _is_missing(value):
        return MISSING
    return f"{float(value):,.1f} min"


def format_percent(rate, places: int = 1) -> str:
    """A rate 0..1 as a percentage: ``95.3%``."""
    if _is_missing(rate):
        return MISSING
    return f"{float(rate) * 100:,.{places}f}%"


def format_score(value) -> str:
    if _is_missing(value):
        return MISSING
    return f"{float(value):,.2f}"


def format_relative_change(relative: float) -> str:
    """A relative change (0.053 for +5.3 %) with its sign: ``+5.3%``, ``−5.3%``."""
    text = f"{abs(relative) * 100:,.1f}%"
    return f"{'+' if relative >= 0 else MINUS}{text}"


def format_point_change(delta: float) -> str:
    """A change of a rate (0..1) in percentage points: ``+1.2 pp``, ``−6.6 pp``."""
    text = f"{abs(delta) * 100:,.1f} pp"
    return f"{'+' if delta >= 0 else MINUS}{text}"


def format_tokens(input_tokens, output_tokens) -> str:
    """``1,738 in · 217 out``."""
    return f"{format_count(input_tokens or 0)} in · {format_count(output_tokens or 0)} out"


# --- Plotly (d3-format) ----------------------------------------------------------
# The same style on chart axes and in hover labels.

COUNT_FORMAT = ",d"
MS_FORMAT = ",.0f"
NUMBER_FORMAT = ",.1f"
PERCENT_FORMAT = ",.0f"  # ticks of values already multiplied by 100; the axis says "%"
PERCENT_HOVER_FORMAT = ",.1f"


def usd_axis_format(largest) -> str:
    """A d3 format for a money axis whose largest value is ``largest``: cents
    when the axis reaches ten cents, else enough decimals that neighbouring
    ticks differ (never ``$0.00 $0.00 $0.00``)."""
    largest = abs(float(largest or 0))
    if largest >= 0.1 or largest == 0:
        return f"$,.{USD_PLACES}f"
    places = min(8, 1 - math.floor(math.log10(largest)))
    return f"$,.{places}f"
