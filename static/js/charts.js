// Draws every Plotly figure on the page from its json_script data, and again
// after HTMX swaps a panel in; a click on a point that carries an address (its
// customdata) opens that list. No inline scripts: the CSP allows only 'self'.
(function () {
  "use strict";

  function themed(layout) {
    var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    var fg = dark ? "#e7e9ee" : "#16181d";
    var grid = dark ? "#2b303a" : "#e6e9ee";
    layout.paper_bgcolor = "rgba(0,0,0,0)";
    layout.plot_bgcolor = "rgba(0,0,0,0)";
    layout.font = Object.assign({ color: fg, family: "system-ui, sans-serif" }, layout.font || {});
    ["xaxis", "yaxis"].forEach(function (axis) {
      if (layout[axis]) layout[axis].gridcolor = grid;
    });
    return layout;
  }

  function draw(root) {
    if (!window.Plotly) return;
    (root || document).querySelectorAll("[data-chart]").forEach(function (el) {
      var data = document.getElementById(el.getAttribute("data-chart"));
      if (!data || el.dataset.drawn) return;
      var figure = JSON.parse(data.textContent);
      window.Plotly.react(el, figure.data || [], themed(figure.layout || {}), {
        displaylogo: false,
        responsive: true,
        modeBarButtonsToRemove: ["lasso2d", "select2d"],
      });
      el.dataset.drawn = "1";
      if ((figure.data || []).some(function (trace) { return trace.customdata; })) {
        el.classList.add("clickable");
        el.on("plotly_click", follow);
      }
    });
  }

  // A point, bar or slice carries the address of the list behind it.
  function follow(event) {
    var point = event && event.points && event.points[0];
    var url = point && point.customdata;
    if (Array.isArray(url)) url = url[0]; // a pie slice reports its points' data as a list
    if (typeof url === "string" && url.charAt(0) === "/" && url.charAt(1) !== "/") {
      window.location.assign(url);
    }
  }

  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (event) { draw(event.target); });
  window.thinnestCharts = { draw: draw };
})();
