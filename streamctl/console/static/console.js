/* streamctl console: charts (uPlot) and the live debugger (server-sent events).
   Served as a static file (the page's CSP allows no inline script); the report
   inlines it. htmx does the rest of the live parts from HTML attributes. */
(function () {
  "use strict";

  var COLORS = {
    received: "#3b82f6", delivered: "#16a34a", filtered: "#94a3b8", failed: "#f59e0b",
    archived: "#dc2626", p50: "#16a34a", p95: "#f59e0b", p99: "#dc2626",
    "error rate": "#dc2626", queue: "#6366f1", open: "#0ea5e9"
  };

  function seriesOf(name, values) {
    return {label: name, stroke: COLORS[name] || "#333", width: 2, spanGaps: false,
            points: {show: values.length < 80}};
  }

  function drawCharts(root) {
    var holder = (root || document).querySelector("#chart-data") || document.querySelector("#chart-data");
    if (!holder || typeof uPlot === "undefined") return;
    var data = JSON.parse(holder.textContent);
    document.querySelectorAll("figure.chart[data-chart]").forEach(function (figure) {
      var name = figure.dataset.chart;
      var group = data[name];  // [[series name, values], ...] in drawing order
      var names = group.map(function (pair) { return pair[0]; });
      var columns = group.map(function (pair) { return pair[1]; });
      var plotted = figure.querySelector(".uplot");
      if (plotted) plotted.remove();
      var width = Math.max(320, figure.clientWidth - 16);
      var options = {
        width: width, height: 200,
        series: [{}].concat(names.map(function (n, i) { return seriesOf(n, columns[i]); })),
        axes: [{}, {size: 56}],
        scales: {y: {range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; }}},
        legend: {live: false}
      };
      new uPlot(options, [data.x].concat(columns), figure);
      var points = 0;
      columns.forEach(function (c) { c.forEach(function (v) { if (v !== null && v > 0) points++; }); });
      figure.dataset.points = String(points);
      figure.dataset.drawn = "true";
    });
  }

  // -- debugger --------------------------------------------------------------------------

  function text(value) { return value === undefined || value === null ? "" : String(value); }

  function Debugger(root) {
    this.root = root;
    this.body = root.querySelector("#live-events tbody");
    this.detail = root.querySelector("#event-detail");
    this.rows = {};
    this.paused = false;
    this.held = [];
    this.events = {};
    var self = this;
    var pause = document.getElementById("pause");
    pause.addEventListener("click", function () {
      self.paused = !self.paused;
      pause.textContent = self.paused ? "resume" : "pause";
      pause.classList.toggle("on", self.paused);
      if (!self.paused) { var held = self.held; self.held = []; held.forEach(function (r) { self.show(r); }); }
      self.state();
    });
    ["f-source", "f-type", "f-event", "f-user"].forEach(function (id) {
      var input = document.getElementById(id);
      input.addEventListener("input", function () { self.refilter(); });
      input.addEventListener("change", function () { self.refilter(); });
    });
    this.connect();
  }

  Debugger.prototype.connect = function () {
    var self = this;
    var stream = new EventSource(this.root.dataset.stream);
    stream.onopen = function () { self.connected = true; self.state(); };
    stream.onerror = function () { self.connected = false; self.state(); };
    stream.onmessage = function (message) {
      var record = JSON.parse(message.data);
      if (self.paused) { self.held.push(record); self.state(); return; }
      self.show(record);
    };
  };

  Debugger.prototype.state = function () {
    var label = document.getElementById("stream-state");
    var words = this.connected ? "live" : "reconnecting…";
    if (this.paused) words = "paused (" + this.held.length + " waiting)";
    label.textContent = words;
    label.dataset.state = this.connected ? (this.paused ? "paused" : "live") : "down";
  };

  Debugger.prototype.show = function (record) {
    if (record.kind === "event") this.addEvent(record);
    else if (record.kind === "outcome") this.addOutcome(record);
  };

  Debugger.prototype.addEvent = function (record) {
    var event = record.event || {};
    var row = document.createElement("tr");
    row.className = "live-event";
    row.dataset.messageId = text(record.message_id);
    row.dataset.source = text(record.source);
    row.dataset.type = text(event.type);
    row.dataset.event = text(event.event || event.name);
    row.dataset.user = text(event.userId || event.anonymousId);
    [text(record.at).slice(11, 23), record.source, event.type, event.event || event.name || "",
     event.userId || event.anonymousId || "", record.message_id].forEach(function (value) {
      var cell = document.createElement("td");
      cell.textContent = text(value);
      row.appendChild(cell);
    });
    var outcomes = document.createElement("td");
    outcomes.className = "outcomes";
    row.appendChild(outcomes);
    var self = this;
    row.addEventListener("click", function () { self.open(record); });
    this.events[record.message_id] = record;
    this.rows[record.message_id] = row;
    this.body.insertBefore(row, this.body.firstChild);
    this.filterRow(row);
    while (this.body.children.length > 500) {
      var last = this.body.lastChild;
      delete this.rows[last.dataset.messageId];
      delete this.events[last.dataset.messageId];
      last.remove();
    }
  };

  Debugger.prototype.addOutcome = function (record) {
    var row = this.rows[record.message_id];
    if (!row) return;
    var cell = row.querySelector(".outcomes");
    var badge = cell.querySelector('[data-sync="' + CSS.escape(text(record.sync)) + '"]');
    if (!badge) {
      badge = document.createElement("span");
      badge.dataset.sync = text(record.sync);
      cell.appendChild(badge);
    }
    badge.className = "badge outcome " + text(record.status);
    badge.textContent = text(record.sync) + ": " + text(record.status) +
      (record.status_code ? " " + record.status_code : "");
    badge.title = text(record.error);
  };

  Debugger.prototype.filterRow = function (row) {
    var want = {
      source: document.getElementById("f-source").value,
      type: document.getElementById("f-type").value,
      event: document.getElementById("f-event").value.toLowerCase(),
      user: document.getElementById("f-user").value.toLowerCase()
    };
    var shown = (!want.source || row.dataset.source === want.source) &&
      (!want.type || row.dataset.type === want.type) &&
      (!want.event || row.dataset.event.toLowerCase().indexOf(want.event) >= 0) &&
      (!want.user || row.dataset.user.toLowerCase().indexOf(want.user) >= 0);
    row.hidden = !shown;
  };

  Debugger.prototype.refilter = function () {
    var self = this;
    Array.prototype.forEach.call(this.body.children, function (row) { self.filterRow(row); });
  };

  Debugger.prototype.open = function (record) {
    var detail = this.detail;
    detail.innerHTML = "";
    var head = document.createElement("h2");
    head.textContent = "Payload";
    var payload = document.createElement("pre");
    payload.className = "payload";
    payload.textContent = JSON.stringify(record.event, null, 2);
    var story = document.createElement("div");
    story.id = "event-story";
    story.textContent = "loading what each sync sends…";
    detail.appendChild(head);
    detail.appendChild(payload);
    detail.appendChild(story);
    var url = this.root.dataset.eventUrl + encodeURIComponent(record.message_id);
    fetch(url, {credentials: "same-origin"}).then(function (reply) { return reply.text(); })
      .then(function (html) { story.innerHTML = html; });
  };

  function start() {
    drawCharts(document);
    var root = document.querySelector(".debugger[data-stream]");
    if (root) window.streamctlDebugger = new Debugger(root);
    document.body.addEventListener("htmx:afterSwap", function (e) { drawCharts(e.target); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
