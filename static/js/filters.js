// Filter forms (GET, swapped by HTMX): a filter left empty ("All agents", no
// dates outside a custom range, no search text) is left out of the request, so
// the address bar and bookmarks read ?period=7d rather than ?period=7d&from=&to=.
// Loaded on every page; no inline scripts, the CSP allows only 'self'.
(function () {
  "use strict";

  document.addEventListener("htmx:configRequest", function (event) {
    var detail = event.detail;
    if (!detail || String(detail.verb).toLowerCase() !== "get") return;
    var params = detail.parameters;
    Object.keys(params).forEach(function (name) {
      if (params[name] === "") delete params[name];
    });
  });
})();
