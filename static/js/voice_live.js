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

  var NUMBER = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  var PERCENT = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  var SVG = "http://www.w3.org/2000/svg";

  // The project's number style (thinnest_analytics/formatting.py): 1,234 ms, 91.6%.
  function show(el, value) {
    if (value === null || value === undefined) {
      el.textContent = "—";
    } else if (el.hasAttribute("data-percent")) {
      el.textContent = PERCENT.format(value * 100) + "%";
    } else if (el.hasAttribute("data-unit")) {
      el.textContent = NUMBER.format(Math.round(value)) + el.getAttribute("data-unit");
    } else {
      el.textContent = NUMBER.format(value);
    }
  }

  // One bar per minute in ten equal slots across the panel: the chart always
  // spans its ten minutes, and minutes without turns stay visibly empty.
  function sparkline(root, history) {
    var bars = root.querySelector("[data-spark-bars]");
    var range = root.querySelector("[data-spark-range]");
    if (!bars || !history || !history.length) return;
    var known = history.map(function (m) { return m.avg_latency_ms; }).filter(function (v) { return v !== null; });
    var peak = known.length ? Math.max.apply(null, known) : 0;
    var top = peak * 1.15; // headroom: the highest bar does not touch the frame
    var slot = 200 / history.length;
    while (bars.firstChild) bars.removeChild(bars.firstChild);
    history.forEach(function (minute, i) {
      var v = minute.avg_latency_ms;
      if (v === null || top <= 0) return;
      var height = Math.max(1, (v / top) * 38);
      var bar = document.createElementNS(SVG, "rect");
      bar.setAttribute("x", (i * slot + slot * 0.15).toFixed(2));
      bar.setAttribute("width", (slot * 0.7).toFixed(2));
      bar.setAttribute("y", (40 - height).toFixed(2));
      bar.setAttribute("height", height.toFixed(2));
      var title = document.createElementNS(SVG, "title");
      var at = new Date(minute.minute);
      title.textContent = at.toISOString().slice(11, 16) + " UTC: " + NUMBER.format(Math.round(v)) + " ms over " +
        NUMBER.format(minute.turns) + " turn" + (minute.turns === 1 ? "" : "s");
      bar.appendChild(title);
      bars.appendChild(bar);
    });
    if (range) range.textContent = known.length ? "(peak " + NUMBER.format(Math.round(peak)) + " ms)" : "(no turns)";
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
      if (!self.root.isConnected) return self.stop(); // the page moved on (Back/Forward)
      self.retries = 0;
      self.render(JSON.parse(event.data));
      self.state("live", "live");
      self.watch();
    };
    socket.onclose = function (event) {
      clearTimeout(self.watchdog);
      if (self.stopped) return;
      if (REFUSED[event.code]) {
        self.state("refused", REFUSED[event.code]);
        return;
      }
      var delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * Math.pow(2, self.retries));
      delay = delay / 2 + Math.random() * delay / 2; // jitter: restarted servers are not stampeded
      self.retries += 1;
      self.state("reconnecting", "reconnecting in " + Math.ceil(delay / 1000) + " s");
      setTimeout(function () { if (!self.stopped) self.connect(); }, delay);
    };
    this.watch();
  };

  Panel.prototype.stop = function () {
    this.stopped = true;
    clearTimeout(this.watchdog);
    if (this.socket) this.socket.close();
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
  // Back/Forward: HTMX fetches the page again and swaps it in; the panels it
  // replaces hang up, the new ones connect.
  document.addEventListener("htmx:historyCacheMissLoad", function () {
    document.querySelectorAll("[data-voice-live]").forEach(function (root) {
      if (root.voiceLive) root.voiceLive.stop();
    });
  });
  document.addEventListener("htmx:historyRestore", function () { init(document); });
  window.thinnestVoiceLive = { init: init };
})();
