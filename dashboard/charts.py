"""Plotly figures for the dashboard, built in Python and drawn by static/js/charts.js.

A view puts ``chart(...)`` dicts in its context; the template includes
``dashboard/_chart.html``, which passes the figure with ``json_script``.

Figures are written as the plain ``{"data": [...], "layout": {...}}`` dicts of
plotly's JSON schema rather than through ``plotly.graph_objects``: validating
and deep-copying graph objects cost about 70 ms for the Overview's five
figures, and their default template added 7 kB of JSON to each. A point's
``customdata`` is the address of the list behind it; charts.js follows it on a
click.
"""

from collections.abc import Sequence
from datetime import datetime

PALETTE = ["#2f5bea", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2"]


def _layout(title: str, y_title: str = "", y_format: str | None = None, stacked: bool = False) -> dict:
    layout = {
        "title": {"text": title, "font": {"size": 14}, "x": 0, "xanchor": "left"},
        "margin": {"l": 48, "r": 12, "t": 36, "b": 36},
        "height": 260,
        "colorway": PALETTE,
        "legend": {"orientation": "h", "y": -0.2},
        "hovermode": "x unified",
        "xaxis": {"showgrid": False, "automargin": True},
        "yaxis": {"title": {"text": y_title}, "rangemode": "tozero", "zeroline": False, "automargin": True},
        "hoverlabel": {"align": "left"},
        "autotypenumbers": "strict",
    }
    if y_format:
        layout["yaxis"]["tickformat"] = y_format
    if stacked:
        layout["barmode"] = "stack"
    return layout


def chart(chart_id: str, title: str, figure: dict, empty: bool = False) -> dict:
    """What ``dashboard/_chart.html`` needs: an id, a title and the figure as JSON data."""
    return {"id": chart_id, "title": title, "figure": figure, "empty": empty}


def _links(trace: dict, links: Sequence[str] | None) -> dict:
    """A trace whose points open ``links`` (one address per point) when clicked."""
    if links:
        trace["customdata"] = list(links)
    return trace


def _click_mode(layout: dict, links: dict[str, Sequence[str]]) -> dict:
    """A click reports every point a unified hover shows; when the series lead to
    different lists, hover (and click) the one point under the pointer instead."""
    if len({tuple(v) for v in links.values()}) > 1:
        layout["hovermode"] = "closest"
    return layout


def lines(
    chart_id: str,
    title: str,
    x: Sequence[datetime],
    series: dict[str, Sequence[float | None]],
    y_title: str = "",
    y_format: str | None = None,
    links: dict[str, Sequence[str]] | None = None,
) -> dict:
    links = links or {}
    data = [
        _links(
            {
                "type": "scatter",
                "x": list(x),
                "y": list(values),
                "name": name,
                "mode": "lines+markers",
                "connectgaps": False,
            },
            links.get(name),
        )
        for name, values in series.items()
    ]
    empty = not any(v for values in series.values() for v in values if v is not None)
    layout = _click_mode(_layout(title, y_title, y_format), links)
    return chart(chart_id, title, {"data": data, "layout": layout}, empty)


def bars(
    chart_id: str,
    title: str,
    x: Sequence,
    series: dict[str, Sequence[float]],
    y_title: str = "",
    y_format: str | None = None,
    stacked: bool = True,
    links: dict[str, Sequence[str]] | None = None,
) -> dict:
    links = links or {}
    layout = _click_mode(_layout(title, y_title, y_format, stacked=stacked), links)
    data = [
        _links({"type": "bar", "x": list(x), "y": list(values), "name": name}, links.get(name))
        for name, values in series.items()
    ]
    empty = not any(v for values in series.values() for v in values)
    return chart(chart_id, title, {"data": data, "layout": layout}, empty)


def donut(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    links: Sequence[str] | None = None,
) -> dict:
    layout = _layout(title)
    layout.pop("xaxis")
    layout.pop("yaxis")
    layout["hovermode"] = "closest"
    pie = {
        "type": "pie",
        "labels": list(labels),
        "values": list(values),
        "hole": 0.55,
        "sort": False,
        "automargin": True,
    }
    return chart(chart_id, title, {"data": [_links(pie, links)], "layout": layout}, not any(values))
