"""Plotly figures for the dashboard, built in Python and drawn by static/js/charts.js.

A view puts ``chart(...)`` dicts in its context; the template includes
``dashboard/_chart.html``, which passes the figure with ``json_script``.
"""

from collections.abc import Sequence
from datetime import datetime

import plotly.graph_objects as go

PALETTE = ["#2f5bea", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2"]


def _layout(title: str, y_title: str = "", y_format: str | None = None, stacked: bool = False) -> dict:
    layout = {
        "title": {"text": title, "font": {"size": 14}, "x": 0, "xanchor": "left"},
        "margin": {"l": 48, "r": 12, "t": 36, "b": 36},
        "height": 260,
        "colorway": PALETTE,
        "legend": {"orientation": "h", "y": -0.2},
        "hovermode": "x unified",
        "xaxis": {"showgrid": False},
        "yaxis": {"title": {"text": y_title}, "rangemode": "tozero", "zeroline": False},
    }
    if y_format:
        layout["yaxis"]["tickformat"] = y_format
    if stacked:
        layout["barmode"] = "stack"
    return layout


def chart(chart_id: str, title: str, figure: go.Figure, empty: bool = False) -> dict:
    """What ``dashboard/_chart.html`` needs: an id, a title and the figure as JSON data."""
    return {"id": chart_id, "title": title, "figure": figure.to_plotly_json(), "empty": empty}


def lines(
    chart_id: str,
    title: str,
    x: Sequence[datetime],
    series: dict[str, Sequence[float | None]],
    y_title: str = "",
    y_format: str | None = None,
) -> dict:
    fig = go.Figure(layout=_layout(title, y_title, y_format))
    for name, values in series.items():
        fig.add_trace(
            go.Scatter(x=list(x), y=list(values), name=name, mode="lines+markers", connectgaps=False)
        )
    empty = not any(v for values in series.values() for v in values if v is not None)
    return chart(chart_id, title, fig, empty)


def bars(
    chart_id: str,
    title: str,
    x: Sequence,
    series: dict[str, Sequence[float]],
    y_title: str = "",
    y_format: str | None = None,
    stacked: bool = True,
) -> dict:
    fig = go.Figure(layout=_layout(title, y_title, y_format, stacked=stacked))
    for name, values in series.items():
        fig.add_trace(go.Bar(x=list(x), y=list(values), name=name))
    empty = not any(v for values in series.values() for v in values)
    return chart(chart_id, title, fig, empty)


def donut(chart_id: str, title: str, labels: Sequence[str], values: Sequence[float]) -> dict:
    layout = _layout(title)
    layout.pop("xaxis")
    layout.pop("yaxis")
    layout["hovermode"] = "closest"
    fig = go.Figure(go.Pie(labels=list(labels), values=list(values), hole=0.55, sort=False), layout=layout)
    return chart(chart_id, title, fig, not any(values))
