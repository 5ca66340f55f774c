// Live voice panels (templates/dashboard/_voice_live.html): each opens the
// WebSocket named by its data-ws-path, shows every frame, draws the latency
// sparkline, and reconnects by itself with exponential backoff after a server
// restart or a lost network. No inline scripts: the CSP allows only 'self'.
(function () {
  "use strict";
  if (window.thinnestVoiceLive) return; // the partial may be included more than once

  var FIRST_RETRY_MS = 1000;
  var MAX_RETRY_MS = 30000;
  var SILENCE_MS = 15000; // heartbeats come every few seconds: this much silence means a dead link
  var REFUSED = { 4401: "sign in again", 4403: "not allowed", 4404: "agent not found" };

  function show(el, value) {
    if (value === null || value === undefined) {
      el.textContent = "—";
    } else if (el.hasAttribute("data-percent")) {
      el.textContent = (value * 100).toFixed(1) + " %";
    } else if (el.hasAttribute("data-unit")) {
      el.textContent = Math.round(value).toLocaleString() + el.getAttribute("data-unit");
    } else {
      el.textContent = Number(value).toLocaleString();
    }
  }

  function sparkline(root, history) {
    var line = root.querySelector("[data-spark-line]");
    var range = root.querySelector("[data-spark-range]");
    if (!line || !history || !history.length) return;
    var values = history.map(function (m) { return m.avg_latency_ms; });
    var known = values.filter(function (v) { return v !== null; });
    var peak = known.length ? Math.max.apply(null, known) : 0;
    var top = peak * 1.25; // headroom: a steady latency draws a line, not the frame's edge
    var step = history.length > 1 ? 200 / (history.length - 1) : 0;
    var points = [];
    values.forEach(function (v, i) {
      if (v === null) return; // a minute without turns leaves a gap in the data, not a zero
      var y = top > 0 ? 38 - (v / top) * 36 : 38;
      points.push((i * step).toFixed(1) + "," + y.toFixed(1));
    });
    line.setAttribute("points", points.join(" "));
    if (range) range.textContent = known.length ? "(peak " + Math.round(peak) + " ms)" : "(no turns)";
  }

  function Panel(root) {
    this.root = root;
    this.status = root.querySelector("[data-live-status]");
    this.retries = 0;
    this.socket = null;
    this.watchdog = null;
    this.connect();
  }

  Panel.prototype.state = function (state, text) {
    this.root.setAttribute("data-state", state);
    if (this.status) this.status.textContent = text;
  };

  Panel.prototype.connect = function () {
    var self = this;
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + this.root.getAttribute("data-ws-path"));
    this.socket = socket;
    socket.onmessage = function (event) {
      self.retries = 0;
      self.render(JSON.parse(event.data));
      self.state("live", "live");
      self.watch();
    };
    socket.onclose = function (event) {
      clearTimeout(self.watchdog);
      if (REFUSED[event.code]) {
        self.state("refused", REFUSED[event.code]);
        return;
      }
      var delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * Math.pow(2, self.retries));
      delay = delay / 2 + Math.random() * delay / 2; // jitter: restarted servers are not stampeded
      self.retries += 1;
      self.state("reconnecting", "reconnecting in " + Math.ceil(delay / 1000) + " s");
      setTimeout(function () { self.connect(); }, delay);
    };
    this.watch();
  };

  Panel.prototype.watch = function () {
    var socket = this.socket;
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(function () { socket.close(); }, SILENCE_MS);
  };

  Panel.prototype.render = function (frame) {
    this.root.querySelectorAll("[data-field]").forEach(function (el) {
      show(el, frame[el.getAttribute("data-field")]);
    });
    sparkline(this.root, frame.latency_history);
  };

  function init(scope) {
    (scope || document).querySelectorAll("[data-voice-live]").forEach(function (root) {
      if (root.voiceLive) return;
      root.voiceLive = new Panel(root);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  } else {
    init(document); // loaded after the page, e.g. with a panel swapped in by HTMX
  }
  document.addEventListener("htmx:afterSettle", function (event) { init(event.target); });
  window.thinnestVoiceLive = { init: init };
})();
