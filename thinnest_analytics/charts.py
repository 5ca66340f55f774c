"""Plotly figures for the pages (dashboard and billing), built in Python and drawn by static/js/charts.js.

A view puts ``chart(...)`` dicts in its context; the template includes
``dashboard/_chart.html``, which shows the title as the figure's caption (so
Plotly's mode bar never covers it) and passes the figure with ``json_script``.
Numbers on axes and in hover labels use the formats of
``thinnest_analytics.formatting``; every value axis names its unit.

Figures are written as the plain ``{"data": [...], "layout": {...}}`` dicts of
plotly's JSON schema rather than through ``plotly.graph_objects``: validating
and deep-copying graph objects cost about 70 ms for the Overview's five
figures, and their default template added 7 kB of JSON to each. A point's
``customdata`` is the address of the list behind it; charts.js follows it on a
click.
"""

from collections.abc import Sequence
from datetime import datetime

from thinnest_analytics import formatting

PALETTE = ["#2f5bea", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2"]

# Above the plot: two-line date ticks below never run into it.
LEGEND = {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"}


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
        "legend": dict(LEGEND),
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
        "hoverlabel": {"align": "left"},
        "autotypenumbers": "strict",
    }
    if stacked:
        layout["barmode"] = "stack"
    return layout


def _time_title(x: Sequence) -> str:
    """Day or hour buckets are in UTC: the axis says so."""
    return "Time (UTC)" if x and isinstance(x[0], datetime) else ""


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
    y_title: str,
    y_format: str = formatting.NUMBER_FORMAT,
    y_hover: str | None = None,
    y_suffix: str = "",
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
    layout = _layout(y_title, y_format, y_hover=y_hover, x_title=_time_title(x), y_suffix=y_suffix)
    return chart(chart_id, title, {"data": data, "layout": _click_mode(layout, links)}, empty)


def usd_bars(
    chart_id: str,
    title: str,
    x: Sequence,
    series: dict[str, Sequence[float]],
    links: dict[str, Sequence[str]] | None = None,
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
        links=links,
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
    links: dict[str, Sequence[str]] | None = None,
) -> dict:
    links = links or {}
    layout = _layout(y_title, y_format, y_hover=y_hover, x_title=_time_title(x), stacked=stacked)
    data = [
        _links({"type": "bar", "x": list(x), "y": list(values), "name": name}, links.get(name))
        for name, values in series.items()
    ]
    empty = not any(v for values in series.values() for v in values)
    return chart(chart_id, title, {"data": data, "layout": _click_mode(layout, links)}, empty)


def donut(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    value_format: str = formatting.COUNT_FORMAT,
    links: Sequence[str] | None = None,
) -> dict:
    """Shares of a whole. Slices with nothing in them are left out: a 0 % slice
    has no width and its label would sit on its neighbour's (and nothing to open)."""
    layout = {
        "margin": {"l": 8, "r": 8, "t": 8, "b": 8},
        "height": 260,
        "colorway": PALETTE,
        "legend": dict(LEGEND),
        "hovermode": "closest",
    }
    addresses = list(links) if links else [None] * len(labels)
    kept = [
        (label, value, address)
        for label, value, address in zip(labels, values, addresses, strict=True)
        if value
    ]
    pie = {
        "type": "pie",
        "labels": [label for label, _, _ in kept],
        "values": [value for _, value, _ in kept],
        "hole": 0.55,
        "sort": False,
        "automargin": True,
        "textinfo": "percent",
        "texttemplate": "%{percent:.1%}",
        "textposition": "inside",
        "insidetextorientation": "horizontal",
        "hovertemplate": f"%{{label}}: %{{value:{value_format}}} (%{{percent:.1%}})<extra></extra>",
    }
    if links:
        _links(pie, [address for _, _, address in kept])
    return chart(chart_id, title, {"data": [pie], "layout": layout}, not kept)
