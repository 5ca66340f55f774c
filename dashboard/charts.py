"""Plotly figures for the dashboard, built in Python and drawn by static/js/charts.js.

A view puts ``chart(...)`` dicts in its context; the template includes
``dashboard/_chart.html``, which shows the title as the figure's caption (so
Plotly's mode bar never covers it) and passes the figure with ``json_script``.
Numbers on axes and in hover labels use the formats of
``thinnest_analytics.formatting``; every value axis names its unit.
"""

from collections.abc import Sequence
from datetime import datetime

import plotly.graph_objects as go

from thinnest_analytics import formatting

PALETTE = ["#2f5bea", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2"]


def _layout(
    y_title: str,
    y_format: str,
    *,
    y_hover: str | None = None,
    x_title: str = "",
    stacked: bool = False,
    y_suffix: str = "",
) -> dict:
    layout = {
        "margin": {"l": 56, "r": 12, "t": 8, "b": 8},
        "height": 260,
        "colorway": PALETTE,
        # Above the plot: two-line date ticks below never run into it.
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
        "hovermode": "x unified",
        "xaxis": {"showgrid": False, "automargin": True, "title": {"text": x_title, "standoff": 4}},
        "yaxis": {
            "title": {"text": y_title},
            "rangemode": "tozero",
            "zeroline": False,
            "automargin": True,
            "tickformat": y_format,
            "hoverformat": y_hover or y_format,
            "ticksuffix": y_suffix,
        },
    }
    if stacked:
        layout["barmode"] = "stack"
    return layout


def _time_title(x: Sequence) -> str:
    """Day or hour buckets are in UTC: the axis says so."""
    return "Time (UTC)" if x and isinstance(x[0], datetime) else ""


def chart(chart_id: str, title: str, figure: go.Figure, empty: bool = False) -> dict:
    """What ``dashboard/_chart.html`` needs: an id, a title and the figure as JSON data."""
    return {"id": chart_id, "title": title, "figure": figure.to_plotly_json(), "empty": empty}


def lines(
    chart_id: str,
    title: str,
    x: Sequence[datetime],
    series: dict[str, Sequence[float | None]],
    y_title: str,
    y_format: str = formatting.NUMBER_FORMAT,
    y_hover: str | None = None,
    y_suffix: str = "",
) -> dict:
    layout = _layout(y_title, y_format, y_hover=y_hover, x_title=_time_title(x), y_suffix=y_suffix)
    fig = go.Figure(layout=layout)
    for name, values in series.items():
        fig.add_trace(
            go.Scatter(x=list(x), y=list(values), name=name, mode="lines+markers", connectgaps=False)
        )
    empty = not any(v for values in series.values() for v in values if v is not None)
    return chart(chart_id, title, fig, empty)


def usd_bars(
    chart_id: str,
    title: str,
    x: Sequence,
    series: dict[str, Sequence[float]],
) -> dict:
    """Stacked money bars: the axis keeps enough decimals for the largest stack,
    hover labels enough for the smallest part."""
    largest = max((sum(v or 0 for v in column) for column in zip(*series.values(), strict=True)), default=0)
    smallest = min((v for values in series.values() for v in values if v), default=0)
    return bars(
        chart_id,
        title,
        x,
        series,
        y_title="USD",
        y_format=formatting.usd_axis_format(largest),
        y_hover=formatting.usd_axis_format(smallest),
    )


def bars(
    chart_id: str,
    title: str,
    x: Sequence,
    series: dict[str, Sequence[float]],
    y_title: str,
    y_format: str = formatting.NUMBER_FORMAT,
    y_hover: str | None = None,
    stacked: bool = True,
) -> dict:
    layout = _layout(y_title, y_format, y_hover=y_hover, x_title=_time_title(x), stacked=stacked)
    fig = go.Figure(layout=layout)
    for name, values in series.items():
        fig.add_trace(go.Bar(x=list(x), y=list(values), name=name))
    empty = not any(v for values in series.values() for v in values)
    return chart(chart_id, title, fig, empty)


def donut(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    value_format: str = formatting.COUNT_FORMAT,
) -> dict:
    """Shares of a whole. Slices with nothing in them are left out: a 0 % slice
    has no width and its label would sit on its neighbour's."""
    layout = {
        "margin": {"l": 8, "r": 8, "t": 8, "b": 8},
        "height": 260,
        "colorway": PALETTE,
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
        "hovermode": "closest",
    }
    kept = [(label, value) for label, value in zip(labels, values, strict=True) if value]
    fig = go.Figure(
        go.Pie(
            labels=[label for label, _ in kept],
            values=[value for _, value in kept],
            hole=0.55,
            sort=False,
            textinfo="percent",
            texttemplate="%{percent:.1%}",
            textposition="inside",
            insidetextorientation="horizontal",
            hovertemplate=f"%{{label}}: %{{value:{value_format}}} (%{{percent:.1%}})<extra></extra>",
        ),
        layout=layout,
    )
    return chart(chart_id, title, fig, not kept)
