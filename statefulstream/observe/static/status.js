// The statefulstream status page: polls api/status and draws it with uPlot (vendored, no network).
// Every figure comes from the server (observe/status.py); this file only lays it out.
"use strict";

(function () {
  const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh_ms")) || 2000;
  const PHASES = ["plan", "read", "decode", "handler", "sink", "commit"];
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const TABLE_ROWS = 15;

  // One entry per chart: its id, title and the [label, values] pairs of a status document's series.
  const CHARTS = [
    { id: "rates", title: "Rows per second (input, processed)",
      series: (s) => [["input rows/s", s.input_rows_per_second], ["processed rows/s", s.processed_rows_per_second]] },
    { id: "durations", title: "Batch duration by phase (ms, stacked)", stacked: true,
      series: (s) => PHASES.map((p) => [p, s.duration_ms[p]]) },
    { id: "state_rows", title: "State rows", series: (s) => [["rows", s.state_keys]] },
    { id: "state_bytes", title: "State bytes on disk", series: (s) => [["bytes", s.state_bytes]] },
    { id: "timers", title: "Timers pending and fired",
      series: (s) => [["pending", s.timers_pending], ["fired", s.timers_fired]] },
    { id: "watermark", title: "Watermark lag behind processing time (s)",
      series: (s) => [["watermark lag s", s.watermark_lag_s]] },
    { id: "late", title: "Late and dead-lettered rows",
      series: (s) => [["late dropped", s.late], ["dead-lettered", s.dead_lettered]] },
    { id: "source_lag", title: "Source lag per partition (records)", series: (s) => Object.entries(s.source_lag) },
    { id: "sink_retries", title: "Sink retries per sink", series: (s) => Object.entries(s.sink_retries) },
  ];

  const BATCH_COLUMNS = [
    ["batch", "batch", (s, i) => s.batch_id[i]],
    ["input_rows_per_second", "input rows/s", (s, i) => s.input_rows_per_second[i]],
    ["processed_rows_per_second", "processed rows/s", (s, i) => s.processed_rows_per_second[i]],
    ["duration_ms", "duration ms", (s, i) => PHASES.reduce((sum, p) => sum + s.duration_ms[p][i], 0)],
    ["state_keys", "state rows", (s, i) => s.state_keys[i]],
    ["timers_pending", "timers pending", (s, i) => s.timers_pending[i]],
    ["timers_fired", "timers fired", (s, i) => s.timers_fired[i]],
    ["watermark_lag_s", "watermark lag s", (s, i) => s.watermark_lag_s[i]],
    ["late", "late", (s, i) => s.late[i]],
    ["dead_lettered", "dead-lettered", (s, i) => s.dead_lettered[i]],
  ];

  const charts = {};

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(2);
    if (typeof value === "object") {
      const entries = Object.entries(value);
      return entries.length ? entries.map(([k, v]) => `${k}: ${fmt(v)}`).join(", ") : "none";
    }
    return String(value);
  }

  // Axis ticks: 12.5k rather than 12,500 so wide numbers fit, with as many decimals as the tick step needs.
  function ticks(u, splits, axis, space, incr) {
    const top = Math.max(...splits.map(Math.abs));
    const [unit, size] = top >= 1e9 ? ["G", 1e9] : top >= 1e6 ? ["M", 1e6] : top >= 1e4 ? ["k", 1e3] : ["", 1];
    const decimals = Math.max(0, Math.min(6, Math.ceil(-Math.log10(incr / size) - 1e-9)));
    return splits.map((v) => (v === 0 ? "0" : (v / size).toFixed(decimals) + unit));
  }

  function chartWidth(box) {
    return Math.max(300, box.clientWidth - 14);
  }

  function drawChart(spec, doc) {
    const pairs = spec.series(doc.series);
    const x = doc.series.batch_id;
    let box = document.getElementById("chart-" + spec.id);
    if (!box) {
      box = el("div", { id: "chart-" + spec.id, class: "chart", "data-points": "0" });
      box.appendChild(el("h3", {}, spec.title));
      document.getElementById("charts").appendChild(box);
    }
    const labels = pairs.map((p) => p[0]).join("|");
    let entry = charts[spec.id];
    if (!pairs.length) {
      if (entry) { entry.plot.destroy(); delete charts[spec.id]; }
      if (!box.querySelector(".empty")) box.appendChild(el("div", { class: "empty" }, "nothing to show for this app"));
      box.dataset.points = String(x.length);
      box.dataset.series = "0";
      return;
    }
    const empty = box.querySelector(".empty");
    if (empty) empty.remove();
    // Stacked: each series is drawn as the running total up to it, top first, so the fills stack.
    let columns = pairs.map((p) => p[1]);
    const raw = columns;
    if (spec.stacked) {
      let sum = x.map(() => 0);
      columns = columns.map((col) => (sum = sum.map((v, i) => v + (col[i] || 0))));
      columns = columns.slice().reverse();
    }
    const order = spec.stacked ? pairs.map((_, i) => pairs.length - 1 - i) : pairs.map((_, i) => i);
    if (entry && entry.labels !== labels) { entry.plot.destroy(); delete charts[spec.id]; entry = undefined; }
    if (!entry) {
      const series = [{ label: "batch" }].concat(order.map((k) => ({
        label: pairs[k][0],
        stroke: COLORS[k % COLORS.length],
        fill: spec.stacked ? COLORS[k % COLORS.length] + "99" : undefined,
        width: 1.5,
        points: { show: x.length < 40 },
        value: spec.stacked ? (u, v, si, i) => (i == null ? "–" : fmt(raw[k][i])) : (u, v) => fmt(v),
      })));
      const plot = new uPlot({
        width: chartWidth(box), height: 180, series: series,
        scales: { x: { time: false } },
        axes: [{ label: "batch", values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? String(v) : "")) },
          { values: ticks, size: 74 }],
        legend: { live: true },
      }, [x].concat(columns), box);
      entry = charts[spec.id] = { plot: plot, labels: labels };
    } else {
      entry.plot.setData([x].concat(columns));
    }
    if (x.length) entry.plot.setLegend({ idx: x.length - 1 });  // the legend shows the last batch until hovered
    box.dataset.points = String(x.length);
    box.dataset.series = String(pairs.length);
    box.dataset.lastBatch = x.length ? String(x[x.length - 1]) : "";
  }

  function fillSummary(doc) {
    const body = document.querySelector("#summary-table tbody");
    body.replaceChildren(...doc.summary.map((row) => {
      const tr = el("tr", { "data-key": row.key });
      tr.appendChild(el("th", {}, row.label));
      tr.appendChild(el("td", { class: "value", "data-raw": JSON.stringify(row.value) }, fmt(row.value)));
      return tr;
    }));
  }

  function fillBatches(doc) {
    const s = doc.series;
    const head = document.querySelector("#batch-table thead tr");
    if (!head.children.length) BATCH_COLUMNS.forEach(([, label]) => head.appendChild(el("th", {}, label)));
    const n = s.batch_id.length;
    const rows = [];
    for (let i = n - 1; i >= Math.max(0, n - TABLE_ROWS); i--) {
      const tr = el("tr", { "data-batch": String(s.batch_id[i]) });
      BATCH_COLUMNS.forEach(([field, , pick]) => tr.appendChild(el("td", { class: "num", "data-field": field },
        fmt(pick(s, i)))));
      rows.push(tr);
    }
    document.querySelector("#batch-table tbody").replaceChildren(...rows);
  }

  function fillConfig(doc) {
    const body = document.querySelector("#config-table tbody");
    body.replaceChildren(...Object.entries(doc.config).map(([key, value]) => {
      const tr = el("tr", { "data-key": key });
      tr.appendChild(el("th", {}, key));
      tr.appendChild(el("td", {}, typeof value === "object" && value !== null
        ? JSON.stringify(value, null, 1) : fmt(value)));
      return tr;
    }));
  }

  function fillLoop(doc) {
    document.getElementById("app").textContent = doc.app;
    document.title = doc.app + " · statefulstream";
    const badge = document.getElementById("loop-status");
    badge.textContent = doc.loop.status;
    badge.className = "badge " + doc.loop.status;
    badge.title = doc.loop.reason || "";
    document.getElementById("trigger").textContent = doc.loop.trigger;
    document.getElementById("current-batch").textContent = fmt(doc.loop.current_batch);
  }

  function render(doc) {
    fillLoop(doc);
    fillSummary(doc);
    CHARTS.forEach((spec) => drawChart(spec, doc));
    fillBatches(doc);
    fillConfig(doc);
    document.body.dataset.batches = String(doc.series.batch_id.length);
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.getElementById("error").textContent = "";
  }

  async function poll() {
    try {
      const response = await fetch("api/status", { cache: "no-store" });
      if (!response.ok) throw new Error("api/status answered " + response.status);
      render(await response.json());
    } catch (err) {
      document.getElementById("error").textContent = "(" + err.message + ")";
    } finally {
      setTimeout(poll, REFRESH_MS);
    }
  }

  window.addEventListener("resize", () => Object.keys(charts).forEach((id) => {
    const box = document.getElementById("chart-" + id);
    charts[id].plot.setSize({ width: chartWidth(box), height: 180 });
  }));
  poll();
})();
