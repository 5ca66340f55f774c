"""The one number and money style (thinnest_analytics.formatting)."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from thinnest_analytics import formatting as f


@pytest.mark.parametrize(
    ("value", "places", "text"),
    [
        (Decimal("8.256"), 2, "$8.26"),
        (Decimal("0.0714"), 2, "$0.07"),
        (Decimal("0.0714"), 4, "$0.0714"),
        (Decimal("1234567.891"), 2, "$1,234,567.89"),
        (Decimal("0.004"), 2, "< $0.01"),
        (Decimal("0.00004"), 4, "< $0.0001"),
        (Decimal("-0.004"), 2, "> \u2212$0.01"),
        (Decimal("-1234.565"), 2, "\u2212$1,234.57"),
        (Decimal(0), 2, "$0.00"),
        (None, 2, "—"),
        (0.125, 2, "$0.13"),  # half up, as a person rounds
    ],
)
def test_money_reads_with_separators_a_fixed_precision_and_no_false_zero(value, places, text):
    assert f.format_usd(value, places) == text


def test_money_for_csv_is_a_plain_number():
    assert f.format_usd_plain(Decimal("1234.505")) == "1234.51"
    assert f.format_usd_plain(Decimal("-0.001")) == "0.00"
    assert f.format_usd_plain(None) == ""


def test_counts_durations_and_rates_read_alike_everywhere():
    assert f.format_count(1200) == "1,200"
    assert f.format_count(Decimal("12345")) == "12,345"
    assert f.format_ms(12345.6) == "12,346 ms"
    assert f.format_percent(0.9534) == "95.3%"
    assert f.format_point_change(-0.066) == "\u22126.6 pp"
    assert f.format_relative_change(-0.0525) == "\u22125.2%"
    assert f.format_relative_change(1.838) == "+183.8%"
    assert f.format_tokens(1738, 217) == "1,738 in · 217 out"
    assert f.format_minutes(1234.56) == "1,234.6 min"
    assert f.format_count(None) == f.format_ms(None) == f.format_percent(None) == "—"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(42.4, "42 s"), (185, "3 min 05 s"), (7380, "2 h 03 min"), (None, "—")],
)
def test_a_conversation_length_reads_in_seconds_minutes_or_hours(seconds, text):
    assert f.format_duration(None if seconds is None else timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(
    ("largest", "tickformat"),
    [(12.0, "$,.2f"), (0.1, "$,.2f"), (0.05, "$,.3f"), (0.004, "$,.4f"), (0.0004, "$,.5f"), (0, "$,.2f")],
)
def test_a_money_axis_keeps_enough_decimals_for_distinct_ticks(largest, tickformat):
    assert f.usd_axis_format(largest) == tickformat


@pytest.mark.parametrize(
    ("value", "cell"),
    [("=SUM(A1)", "'=SUM(A1)"), ("+1", "'+1"), ("-2", "'-2"), ("@x", "'@x"), ("plain", "plain"), (None, "")],
)
def test_a_csv_cell_never_starts_a_spreadsheet_formula(value, cell):
    assert f.csv_cell(value) == cell


def test_json_sends_money_as_a_number_and_times_in_utc_with_z():
    text = json.dumps(
        {"cost_usd": Decimal("0.0714"), "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}, default=f.json_value
    )
    assert text == '{"cost_usd": 0.0714, "at": "2026-01-02T03:04:05Z"}'
