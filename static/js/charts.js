// Draws every Plotly figure on the page from its json_script data: at load,
// after HTMX swaps a panel in, and after Back/Forward restores a page. A click
// on a point, bar or slice that carries an address (its customdata) opens that
// list. No inline scripts: the CSP allows only 'self'.
//
// Back/Forward: base.html keeps no HTMX history snapshot (historyCacheSize 0),
// so HTMX fetches the page again and swaps it in; nothing Plotly drew (its SVG
// carries inline styles, which the CSP refuses) is ever put back from a copy.
// The new page arrives with its own filter form and figure data, and is drawn
// here like any swapped panel.
(function () {
  "use strict";

  var NARROW = "(max-width: 640px)";

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

  function config() {
    var narrow = window.matchMedia && window.matchMedia(NARROW).matches;
    return {
      displaylogo: false,
      responsive: true,
      // On a phone the mode bar would sit on the legend; pinch-zoom does its job.
      displayModeBar: narrow ? false : "hover",
      modeBarButtonsToRemove: ["lasso2d", "select2d"],
    };
  }

  function draw(root) {
    if (!window.Plotly) return;
    (root || document).querySelectorAll("[data-chart]").forEach(function (el) {
      var data = document.getElementById(el.getAttribute("data-chart"));
      if (!data || el.dataset.drawn) return;
      var figure = JSON.parse(data.textContent);
      window.Plotly.react(el, figure.data || [], themed(figure.layout || {}), config());
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

  // Plots about to leave the page are purged, so Plotly forgets them (and
  // their resize listeners) instead of keeping detached nodes alive.
  function purge(root) {
    if (!window.Plotly || !root || !root.querySelectorAll) return;
    root.querySelectorAll(".js-plotly-plot").forEach(function (el) {
      window.Plotly.purge(el);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.shouldSwap !== false) purge(event.detail.target);
  });
  document.addEventListener("htmx:historyCacheMissLoad", function () { purge(document.body); });
  document.addEventListener("htmx:afterSettle", function (event) { draw(event.target); });
  document.addEventListener("htmx:historyRestore", function () { draw(document); });
  window.thinnestCharts = { draw: draw };
})();
