// The Things Stack telemetry dashboard: plain JS, no build step. Reads the panel APIs (docs/dashboard.md)
// and draws with the vendored Chart.js (/static/vendor/chart.umd.min.js).
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const charts = {};
  const PALETTE = ["#0d6efd", "#e8590c", "#2b8a3e", "#ae3ec9", "#1098ad", "#c92a2a", "#5c940d", "#d6336c",
    "#495057", "#f08c00", "#364fc7", "#087f5b", "#862e9c", "#a61e4d", "#74b816", "#0b7285"];
  const DAY_TICKS = { maxRotation: 0, autoSkipPadding: 14 };
  let generation = 0; // a newer load supersedes an older one still in flight

  // JSON with exact 64-bit integers: a number beyond 2^53 becomes a BigInt (from its source text).
  function parseJSON(text) {
    return JSON.parse(text, function (key, value, context) {
      if (typeof value === "number" && !Number.isSafeInteger(value) && context &&
          typeof context.source === "string" && /^-?\d+$/.test(context.source)) {
        return BigInt(context.source);
      }
      return value;
    });
  }

  const fmt = (n) => (n === null || n === undefined ? "–" : n.toLocaleString("en-US"));
  const num = (n) => (n === null || n === undefined ? null : Number(n));
  const pct = (x, digits) => (x === null || x === undefined ? "–" : (Number(x) * 100).toFixed(digits === undefined ? 1 : digits) + "%");

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children || []) e.append(c);
    return e;
  }

  function addDays(iso, n) {
    const d = new Date(iso + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }

  function daysBetween(a, b) {
    const out = [];
    for (let d = a; d <= b && out.length < 4000; d = addDays(d, 1)) out.push(d);
    return out;
  }

  // A 503 with Retry-After (every analyst slot busy, docs/dashboard.md) is tried again after the delay the server
  // asks for (at most 10 s) plus up to as much again at random, so that the panels turned away together do not all
  // come back together; up to BUSY_RETRIES times. Any other answer is final.
  const BUSY_RETRIES = 4;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function getJSON(path, params) {
    const qs = new URLSearchParams(params || {});
    const url = path + (qs.toString() ? "?" + qs : "");
    let res = await fetch(url, { headers: { Accept: "application/json" } });
    for (let tries = 0; res.status === 503 && res.headers.has("Retry-After") && tries < BUSY_RETRIES; tries++) {
      const wait = Math.min(Math.max(Number(res.headers.get("Retry-After")) || 1, 0.1), 10);
      await res.body?.cancel();
      await sleep(wait * (1 + Math.random()) * 1000);
      res = await fetch(url, { headers: { Accept: "application/json" } });
    }
    const text = await res.text();
    let body;
    try { body = parseJSON(text); } catch (e) { throw new Error(path + ": HTTP " + res.status); }
    if (!res.ok) throw new Error(body.message || body.error || "HTTP " + res.status);
    return body;
  }

  function draw(id, config) {
    if (charts[id]) charts[id].destroy();
    const canvas = document.getElementById(id);
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
    charts[id] = new Chart(canvas, config);
  }

  function fillTable(id, rows) {
    const tbody = $("#" + id + " tbody");
    tbody.replaceChildren(...rows);
  }

  // A panel lists its first keys and sums the rest in one row: its key is null and `others` says how many keys it
  // stands for (docs/dashboard.md, "Bounded answers"). Such a row is shown as "other (n)".
  const isRest = (r) => Number(r.others || 0) > 0;
  const restLabel = (r, what) => "other (" + fmt(r.others) + " " + what + ")";

  function td(value, attrs) {
    return el("td", Object.assign({ class: "num", "data-value": value === null ? "" : String(value), text: fmt(value) }, attrs || {}));
  }

  function setPanel(panel, state, day) {
    const section = typeof panel === "string" ? $(panel) : panel;
    section.dataset.state = state;
    if (day !== undefined) {
      section.dataset.day = day || "";
      $$(".panel-day", section).forEach((s) => { s.textContent = day || "no day with data"; });
    }
  }

  function setCsvLinks(range) {
    const carried = new URLSearchParams(location.search).get("fleet") === "carried";
    $$("a[data-csv]").forEach((a) => {
      const qs = new URLSearchParams({ from: range.from, to: range.to, format: "csv" });
      if (a.dataset.table) qs.set("table", a.dataset.table);
      const panel = carried && (a.dataset.csv === "summary" || a.dataset.csv === "fleet") ? a.dataset.csv + "-carried" : a.dataset.csv;
      a.href = "/api/" + panel + "?" + qs;
    });
  }

  // -- panels ---------------------------------------------------------------------------------------------

  function renderSummary(data) {
    const cards = $("#cards");
    $("#summary-day").textContent = data.day || "no day with data";
    $("#summary-day").dataset.day = data.day || "";
    $("#summary-week-before-day").textContent = data.week_before_day || "–";
    if (!data.rows.length) {
      cards.replaceChildren(el("p", { class: "empty", text: "No telemetry in this range." }));
      setPanel("#panel-summary", "empty", null);
      return;
    }
    cards.replaceChildren(...data.rows.map((r) => {
      let cls = "change", text = "no figures a week before";
      if (r.change !== null) {
        const c = Number(r.change);
        cls += c > 0 ? " up" : c < 0 ? " down" : "";
        const sign = c > 0 ? "+" : c < 0 ? "−" : "±";
        const abs = typeof r.change === "bigint" ? (r.change < 0n ? -r.change : r.change) : Math.abs(r.change);
        text = sign + fmt(abs) + (r.change_pct !== null ? " (" + (r.change_pct > 0 ? "+" : "") + r.change_pct.toFixed(1) + "%)" : "") +
          " in a week";
      }
      return el("div", { class: "card", "data-metric": r.metric, title: r.metric }, [
        el("span", { class: "label", text: r.label }),
        el("span", { class: "value", "data-value": String(r.value), text: fmt(r.value) }),
        el("span", { class: cls, "data-change": r.change === null ? "" : String(r.change),
          "data-week-before": r.week_before === null ? "" : String(r.week_before), text: text }),
      ]);
    }));
    setPanel("#panel-summary", data.complete ? "ready" : "partial", data.day);
  }

  function renderGateways(data) {
    const rows = data.rows;
    const label = (r) => (isRest(r) ? restLabel(r, "plans") : r.frequency_plan_id);
    draw("chart-gateways", {
      type: "bar",
      data: { labels: rows.map(label),
        datasets: [{ label: "Gateways", data: rows.map((r) => num(r.gateways)), backgroundColor: PALETTE[0], maxBarThickness: 26 }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true } } },
    });
    fillTable("table-gateways", rows.map((r) => el("tr", isRest(r) ? { "data-other": r.others } : { "data-plan": r.frequency_plan_id }, [
      el("td", { text: label(r) }), td(r.gateways)])));
    setPanel("#panel-gateways", rows.length ? "ready" : "empty", data.day);
  }

  function lineChart(id, labels, series, scales) {
    draw(id, {
      type: "line",
      data: { labels, datasets: series.map((s, i) => ({ label: s.label, data: s.data, borderColor: PALETTE[i],
        backgroundColor: PALETTE[i], pointRadius: labels.length > 60 ? 0 : 2, tension: 0.15, spanGaps: false,
        yAxisID: s.axis || "y" })) },
      options: { interaction: { mode: "index", intersect: false }, plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
        scales: Object.assign({ x: { ticks: DAY_TICKS } }, scales || { y: { beginAtZero: true } }) },
    });
  }

  function renderFleet(data, axis) {
    const byDay = new Map(data.rows.map((r) => [r.day, r]));
    const col = (name) => axis.map((d) => (byDay.has(d) ? num(byDay.get(d)[name]) : null));
    lineChart("chart-active", axis, [
      { label: "Active last day", data: col("active_last_day") },
      { label: "Active last week", data: col("active_last_week") },
      { label: "Active last month", data: col("active_last_month") },
    ]);
    lineChart("chart-deployments", axis, [
      { label: "Deployments", data: col("deployments") },
      { label: "CLI installs", data: col("cli_installs") },
    ]);
    const entities = [
      { label: "End devices", data: col("end_devices") },
      { label: "Gateways", data: col("gateways") },
      { label: "Applications", data: col("applications") },
      { label: "Users", data: col("users") },
      { label: "Organizations", data: col("organizations") },
    ];
    lineChart("chart-entities", axis, entities, { y: { type: "logarithmic" } });
    const newest = data.rows.slice().reverse();
    fillTable("table-active", newest.map((r) => el("tr", { "data-day": r.day }, [el("td", { text: r.day }),
      td(r.active_last_day, { "data-metric": "active_last_day" }), td(r.active_last_week, { "data-metric": "active_last_week" }),
      td(r.active_last_month, { "data-metric": "active_last_month" })])));
    fillTable("table-deployments", newest.map((r) => el("tr", { "data-day": r.day }, [el("td", { text: r.day }),
      td(r.deployments, { "data-metric": "deployments" }), td(r.cli_installs, { "data-metric": "cli_installs" })])));
    const state = data.rows.length ? "ready" : "empty";
    ["#panel-active", "#panel-deployments", "#panel-entities"].forEach((p) => setPanel(p, state));
  }

  function renderVersions(data, axis) {
    renderVersionsReadable(data, axis); // the top versions and "other", share or number (the switch), counts on hover
    const adoption = data.tables.adoption.rows;
    fillTable("table-versions", adoption.map((r) => el("tr", isRest(r) ? { "data-other": r.others } : { "data-version": r.version }, [
      el("td", { text: isRest(r) ? restLabel(r, "versions") : r.version }),
      td(r.deployments), el("td", { class: "num", text: pct(r.share) })])));
    setPanel("#panel-versions", data.rows.length ? "ready" : "empty", data.day);
  }

  function renderOs(data) {
    const part = (dim) => data.rows.filter((r) => r.dimension === dim);
    [["chart-os", "operating_system", "Operating system"], ["chart-arch", "arch", "Architecture"]].forEach(([id, dim, title], k) => {
      const rows = part(dim);
      draw(id, {
        type: "bar",
        data: { labels: rows.map((r) => (isRest(r) ? restLabel(r, "values") : r.value || "(empty)")),
          datasets: [{ label: "Deployments", data: rows.map((r) => num(r.deployments)), backgroundColor: PALETTE[k + 1],
            maxBarThickness: 26 }] },
        options: { indexAxis: "y", plugins: { legend: { display: false }, title: { display: true, text: title } },
          scales: { x: { beginAtZero: true } } },
      });
    });
    fillTable("table-os", data.rows.map((r) => el("tr", Object.assign({ "data-dimension": r.dimension },
      isRest(r) ? { "data-other": r.others } : { "data-key": r.value }), [
      el("td", { text: r.dimension === "arch" ? "architecture" : "operating system" }),
      el("td", { text: isRest(r) ? restLabel(r, "values") : r.value }),
      td(r.deployments), el("td", { class: "num", text: pct(r.share) })])));
    setPanel("#panel-os", data.rows.length ? "ready" : "empty", data.day);
  }

  function renderRejected(data, axis) {
    const byReason = data.tables.by_reason.rows;
    const count = new Map(byReason.map((r) => [r.day + "|" + r.reason, num(r.messages)]));
    const rate = new Map(data.rows.map((r) => [r.day, r.rate === null ? null : r.rate * 100]));
    const datasets = data.reasons.map((reason, i) => ({ type: "bar", label: reason, yAxisID: "y", stack: "rejected", maxBarThickness: 48,
      backgroundColor: PALETTE[(i + 4) % PALETTE.length], data: axis.map((d) => count.get(d + "|" + reason) || 0) }));
    datasets.push({ type: "line", label: "Rejected rate (%)", yAxisID: "rate", borderColor: "#212529", backgroundColor: "#212529",
      pointRadius: axis.length > 60 ? 0 : 2, data: axis.map((d) => (rate.has(d) ? rate.get(d) : null)), order: -1 });
    draw("chart-rejected", {
      data: { labels: axis, datasets },
      options: { interaction: { mode: "index", intersect: false }, plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
        scales: { x: { stacked: true, ticks: DAY_TICKS }, y: { stacked: true, beginAtZero: true, title: { display: true, text: "messages" } },
          rate: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
            ticks: { callback: (v) => v + "%" } } } },
    });
    fillTable("table-rejected", data.rows.slice().reverse().map((r) => el("tr", { "data-day": r.day }, [
      el("td", { text: r.day }), td(r.rejected, { "data-metric": "rejected" }),
      el("td", { class: "num", "data-rate": r.rate === null ? "" : String(r.rate), text: pct(r.rate, 2) })])));
    setPanel("#panel-rejected", data.rows.length ? "ready" : "empty");
  }

  // -- the fleet over time (docs/dashboard.md) -----------------------------------------------------------------

  // Distinct colours for the top series (no two alike), and grey for "other".
  const DISTINCT = ["#1f6feb", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0c8599", "#e67700", "#5c940d",
    "#862e9c", "#364fc7"];
  const OTHER_COLOUR = "#adb5bd";
  const TOP_N = 8;
  const modes = {}; // switch name -> mode
  const cache = {}; // panel -> last response, to re-render when a switch changes
  const renderers = {}; // switch name -> function re-rendering its panel from the cache

  function mode(name, fallback) {
    if (!(name in modes)) {
      const pressed = $('[data-switch="' + name + '"] button[aria-pressed="true"]');
      modes[name] = pressed ? pressed.dataset.mode : fallback;
    }
    return modes[name];
  }

  function fleetMode() {
    return new URLSearchParams(location.search).get("fleet") === "carried" ? "carried" : "reported";
  }

  // Stacked bars over the day axis: the TOP_N keys with the largest totals over the range, the rest as "other", with
  // the rows the API already summed as the rest (isRest). `order` (optional) fixes the order of keys (e.g. size
  // buckets) instead of largest first. Hover: count and share.
  function stackedBars(id, axis, allRows, keyOf, valueOf, switchName, order) {
    const totals = new Map();
    const perDay = new Map();
    const apiRest = new Map(); // day -> what the API summed as the rest
    let apiRestKeys = 0;
    allRows.filter(isRest).forEach((r) => {
      const v = num(valueOf(r)) || 0;
      apiRest.set(r.day, (apiRest.get(r.day) || 0) + v);
      perDay.set(r.day, (perDay.get(r.day) || 0) + v);
      apiRestKeys = Math.max(apiRestKeys, Number(r.others));
    });
    const rows = allRows.filter((r) => !isRest(r));
    rows.forEach((r) => {
      const k = keyOf(r), v = num(valueOf(r)) || 0;
      totals.set(k, (totals.get(k) || 0) + v);
      perDay.set(r.day, (perDay.get(r.day) || 0) + v);
    });
    let keys = Array.from(totals.keys()).filter((k) => totals.get(k) > 0);
    keys.sort((a, b) => totals.get(b) - totals.get(a) || String(a).localeCompare(String(b)));
    let top = keys.slice(0, TOP_N);
    const rest = new Set(keys.slice(TOP_N));
    if (order) top = order(top);
    const value = new Map(rows.map((r) => [r.day + "|" + keyOf(r), num(valueOf(r)) || 0]));
    const series = top.map((k) => ({ label: String(k), counts: axis.map((d) => value.get(d + "|" + k) || 0) }));
    if (rest.size || apiRest.size) {
      series.push({ label: "other (" + (rest.size + apiRestKeys) + (apiRestKeys ? "+" : "") + ")", other: true, counts: axis.map((d) => {
        let n = apiRest.get(d) || 0;
        rest.forEach((k) => { n += value.get(d + "|" + k) || 0; });
        return n;
      }) });
    }
    const share = mode(switchName, "absolute") === "share";
    draw(id, {
      type: "bar",
      data: { labels: axis, datasets: series.map((s, i) => ({
        label: s.label, counts: s.counts, backgroundColor: s.other ? OTHER_COLOUR : DISTINCT[i % DISTINCT.length],
        data: s.counts.map((n, j) => {
          const t = perDay.get(axis[j]) || 0;
          return share ? (t ? n * 100 / t : null) : n;
        }) })) },
      options: { interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } },
          tooltip: { callbacks: { label: (c) => {
            const n = c.dataset.counts[c.dataIndex], t = perDay.get(axis[c.dataIndex]) || 0;
            return c.dataset.label + ": " + fmt(n) + (t ? " (" + (n * 100 / t).toFixed(1) + "%)" : "");
          } } } },
        scales: { x: { stacked: true, ticks: DAY_TICKS },
          y: share ? { stacked: true, min: 0, max: 100, ticks: { callback: (v) => v + "%" } } : { stacked: true, beginAtZero: true } } },
    });
    return { top, rest };
  }

  function renderVersionsReadable(data, axis) {
    cache.versions = { data, axis };
    stackedBars("chart-versions", axis, data.rows, (r) => r.version, (r) => r.deployments, "versions",
      (top) => top.slice().sort((a, b) => {
        const ka = a.split(".").map(Number), kb = b.split(".").map(Number);
        return (kb[0] - ka[0]) || (kb[1] - ka[1]) || String(a).localeCompare(String(b));
      }));
  }
  renderers.versions = () => cache.versions && renderVersionsReadable(cache.versions.data, cache.versions.axis);

  // The first days of data: every sender is "new" there (the data starts, not the senders), and the bars of the
  // later days would be flat next to them. The chart leaves "new" out for these days (hover and the table keep it).
  const WARM_UP_DAYS = 7; // the gap of returning and churned: the same week of history
  let dataStart = null; // the first day with data (/api/days)

  function renderLifecycle(data, axis) {
    cache.lifecycle = { data, axis };
    const kind = mode("lifecycle-kind", "is");
    const byDay = new Map(data.rows.filter((r) => r.kind === kind).map((r) => [r.day, r]));
    const col = (name) => axis.map((d) => (byDay.has(d) ? num(byDay.get(d)[name]) : null));
    const warmUp = (d) => dataStart !== null && d < addDays(dataStart, WARM_UP_DAYS);
    const lines = [["active_1d", "Active, last day"], ["active_7d", "Active, last 7 days"], ["active_30d", "Active, last 30 days"]];
    // CLI installs: an install upgraded to the 2025 CLI starts a new UID, so their new ones are split by CLI
    const bars = kind === "cli"
      ? [["new_2025_cli", "New, 2025 CLI"], ["new_older_cli", "New, older CLI"], ["returning", "Returning"], ["churned", "Churned"]]
      : [["new", "New"], ["returning", "Returning"], ["churned", "Churned"]];
    draw("chart-lifecycle", {
      data: { labels: axis, datasets: [
        ...lines.map(([k, label], i) => ({ type: "line", label, data: col(k), counts: col(k), borderColor: DISTINCT[i],
          backgroundColor: DISTINCT[i], pointRadius: axis.length > 60 ? 0 : 2, yAxisID: "y", order: -1 })),
        ...bars.map(([k, label], i) => ({ type: "bar", label, counts: col(k), backgroundColor: DISTINCT[i + 3], yAxisID: "events",
          data: col(k).map((n, j) => (k === "new" && warmUp(axis[j]) ? null : n)), maxBarThickness: 14 })),
      ] },
      options: { interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } },
          tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + fmt(c.dataset.counts[c.dataIndex]) +
            (c.dataset.label === "New" && warmUp(axis[c.dataIndex]) ? " (first week of data: not drawn)" : "") } } },
        scales: { x: { ticks: DAY_TICKS }, y: { beginAtZero: true, title: { display: true, text: "active" } },
          events: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, ticks: { precision: 0 },
            title: { display: true, text: "per day" } } } },
    });
    fillTable("table-lifecycle", data.rows.slice().reverse().map((r) => el("tr", { "data-day": r.day, "data-kind": r.kind }, [
      el("td", { text: r.day }), el("td", { text: r.kind === "is" ? "deployments" : "CLI" }),
      ...LIFECYCLE.map((m) => td(r[m], { "data-metric": m }))])));
    setPanel("#panel-lifecycle", data.rows.length ? "ready" : "empty");
  }
  const LIFECYCLE = ["active_1d", "active_7d", "active_30d", "new", "returning", "churned"];
  renderers["lifecycle-kind"] = () => cache.lifecycle && renderLifecycle(cache.lifecycle.data, cache.lifecycle.axis);

  function renderRetention(data) {
    cache.retention = data;
    const kind = mode("retention-kind", "is");
    const rows = data.rows.filter((r) => r.kind === kind);
    const cohorts = Array.from(new Set(rows.map((r) => r.cohort))).sort();
    const maxSince = rows.reduce((m, r) => Math.max(m, r.periods_since), 0);
    const cell = new Map(rows.map((r) => [r.cohort + "|" + r.periods_since, r]));
    $("#table-retention thead").replaceChildren(el("tr", {}, [el("th", { text: "First seen (week of)" }), el("th", { text: "Size" }),
      ...Array.from({ length: maxSince + 1 }, (_, i) => el("th", { text: "+" + i + "w" }))]));
    fillTable("table-retention", cohorts.map((c) => {
      const size = (cell.get(c + "|0") || {}).cohort_size || 0;
      return el("tr", { "data-cohort": c, "data-kind": kind }, [el("td", { text: c }), td(size, { "data-metric": "cohort_size" }),
        ...Array.from({ length: maxSince + 1 }, (_, i) => {
          const r = cell.get(c + "|" + i);
          if (!r) return el("td", { text: "" });
          const share = Number(r.retention);
          const e = el("td", { "data-since": i, "data-value": String(r.active), title: fmt(r.active) + " of " + fmt(r.cohort_size),
            text: (share * 100).toFixed(0) + "%" });
          e.style.background = "rgba(31, 111, 235, " + (0.08 + 0.8 * share).toFixed(3) + ")";
          if (share > 0.55) e.style.color = "#fff";
          return e;
        })]);
    }));
    setPanel("#panel-retention", rows.length ? "ready" : "empty");
  }
  renderers["retention-kind"] = () => cache.retention && renderRetention(cache.retention);

  function renderShape(data, axis) {
    cache.shape = { data, axis };
    const dim = mode("shape-dimension", "gateways");
    const value = fleetMode() === "carried" ? "deployments_carried" : "deployments";
    const rows = data.rows.filter((r) => r.dimension === dim);
    const order = (data.buckets && data.buckets[dim]) || [];
    stackedBars("chart-shape", axis, rows, (r) => r.bucket, (r) => r[value], "shape",
      (top) => order.filter((b) => top.includes(b)));
    const last = axis.length ? rows.filter((r) => r.day === rows.reduce((m, x) => (x.day > m ? x.day : m), "")) : [];
    fillTable("table-shape", last.map((r) => el("tr", { "data-bucket": r.bucket, "data-dimension": dim }, [el("td", { text: r.bucket }),
      td(r[value], { "data-measure": value })])));
    setPanel("#panel-shape", data.rows.length ? "ready" : "empty");
  }
  renderers["shape-dimension"] = renderers.shape = () => cache.shape && renderShape(cache.shape.data, cache.shape.axis);

  function renderRegions(data, axis) {
    cache.regions = { data, axis };
    const measure = mode("regions-measure", "gateways");
    const value = measure + (fleetMode() === "carried" ? "_carried" : "");
    stackedBars("chart-regions", axis, data.rows, (r) => r.region, (r) => r[value], "regions");
    const lastDay = data.rows.reduce((m, x) => (x.day > m ? x.day : m), "");
    const suffix = fleetMode() === "carried" ? "_carried" : "";
    fillTable("table-regions", data.rows.filter((r) => r.day === lastDay)
      .sort((a, b) => Number(b["gateways" + suffix]) - Number(a["gateways" + suffix]) || a.region.localeCompare(b.region))
      .map((r) => el("tr", { "data-region": r.region, "data-day": r.day }, [el("td", { text: r.region }),
        td(r["deployments" + suffix], { "data-measure": "deployments" }), td(r["gateways" + suffix], { "data-measure": "gateways" })])));
    setPanel("#panel-regions", data.rows.length ? "ready" : "empty");
  }
  renderers["regions-measure"] = renderers.regions = () => cache.regions && renderRegions(cache.regions.data, cache.regions.axis);

  function renderAdoption(data, axis) {
    const newest = data.versions.filter((v) => v !== "unknown").slice(-5).reverse();
    const share = new Map(data.rows.map((r) => [r.day + "|" + r.version, r]));
    draw("chart-adoption", {
      type: "line",
      data: { labels: axis, datasets: newest.map((v, i) => ({ label: v + " or newer", borderColor: DISTINCT[i], backgroundColor: DISTINCT[i],
        pointRadius: axis.length > 60 ? 0 : 2, spanGaps: true,
        data: axis.map((d) => { const r = share.get(d + "|" + v); return r ? Number(r.share_at_or_above) * 100 : null; }),
        counts: axis.map((d) => { const r = share.get(d + "|" + v); return r ? r.deployments_at_or_above : null; }) })) },
      options: { interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } },
          tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + (c.parsed.y === null ? "–" : c.parsed.y.toFixed(1) + "%") +
            " (" + fmt(c.dataset.counts[c.dataIndex]) + ")" } } },
        scales: { x: { ticks: DAY_TICKS }, y: { min: 0, max: 100, ticks: { callback: (v) => v + "%" } } } },
    });
    fillTable("table-adoption", data.tables.speed.rows.slice().reverse().map((r) => isRest(r)
      ? el("tr", { "data-other": r.others }, [el("td", { text: fmt(r.others) + " older versions not listed" })])
      : el("tr", { "data-version": r.version }, [
      el("td", { text: r.version }), el("td", { text: r.first_seen + (r.seen_on_first_day ? " or before" : "") }),
      el("td", { text: r.half_on || "not yet" }),
      el("td", { class: "num", "data-value": r.days_to_half === null ? "" : String(r.days_to_half), text: r.days_to_half === null ? "–" : String(r.days_to_half) })])));
    setPanel("#panel-adoption", data.rows.length ? "ready" : "empty");
  }

  function renderBehind(data, axis) {
    cache.behind = { data, axis };
    const label = (b) => (b === 0 ? "current" : b + " behind");
    stackedBars("chart-behind", axis, data.rows, (r) => label(r.behind), (r) => r.deployments, "behind",
      (top) => top.slice().sort((a, b) => (parseInt(a, 10) || 0) - (parseInt(b, 10) || 0)));
    fillTable("table-behind", data.tables.deployments.rows.map((r) => el("tr", { "data-uid": r.uid }, [
      el("td", { class: "uid", text: r.uid.slice(0, 12) + "…", title: r.uid }), el("td", { text: r.version }),
      td(r.behind, { "data-metric": "behind" }), td(r.end_devices, { "data-metric": "end_devices" })])));
    setPanel("#panel-behind", data.rows.length ? "ready" : "empty", data.day);
  }
  renderers.behind = () => cache.behind && renderBehind(cache.behind.data, cache.behind.axis);

  function renderCli(data, axis) {
    cache.cli = { data, axis };
    const dim = mode("cli-dimension", "version");
    stackedBars("chart-cli", axis, data.rows.filter((r) => r.dimension === dim), (r) => r.value || "(empty)", (r) => r.installs, "cli");
    fillTable("table-cli", data.tables.commands.rows.map((r) => el("tr", isRest(r) ? { "data-other": r.others } : { "data-command": r.command_path }, [
      el("td", { text: isRest(r) ? restLabel(r, "commands") : r.command_path }), td(r.installs, { "data-metric": "installs" }), td(r.executions, { "data-metric": "executions" })])));
    fillTable("table-cli-new", data.tables.new_installs.rows.slice().reverse().map((r) => el("tr", { "data-day": r.day, "data-cli-new": "" }, [
      el("td", { text: r.day }), td(r.new, { "data-metric": "new" }), td(r.new_2025_cli, { "data-metric": "new_2025_cli" }),
      td(r.new_older_cli, { "data-metric": "new_older_cli" })])));
    setPanel("#panel-cli", data.rows.length ? "ready" : "empty", data.day);
  }

  // The aliases of the panel's day, most used first: a horizontal bar per alias ("dev (end-devices)"), uses.
  function renderCliAliases(data) {
    const rows = data.rows;
    draw("chart-cli-aliases", {
      type: "bar",
      data: { labels: rows.map((r) => (isRest(r) ? restLabel(r, "aliases") : r.alias + " (" + r.command_name + ")")),
        datasets: [{ label: "Uses", data: rows.map((r) => num(r.uses)), backgroundColor: PALETTE[4], maxBarThickness: 26 }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true } } },
    });
    fillTable("table-cli-aliases", rows.map((r) => el("tr", isRest(r) ? { "data-other": r.others } : { "data-alias": r.alias, "data-command-name": r.command_name }, [
      el("td", { text: isRest(r) ? restLabel(r, "aliases") : r.alias }), el("td", { text: isRest(r) ? "" : r.command_name }), td(r.installs, { "data-metric": "installs" }),
      td(r.uses, { "data-metric": "uses" })])));
    setPanel("#panel-cli-aliases", rows.length ? "ready" : "empty", data.day);
  }
  renderers["cli-dimension"] = renderers.cli = () => cache.cli && renderCli(cache.cli.data, cache.cli.axis);

  function renderQuality(data, axis) {
    const byDay = new Map(data.rows.map((r) => [r.day, r]));
    const col = (name) => axis.map((d) => (byDay.has(d) ? num(byDay.get(d)[name]) : null));
    lineChart("chart-quality", axis, [
      { label: "Default-UID deployments", data: col("default_uid_deployments") },
      { label: "Inconsistent deployments", data: col("inconsistent_deployments") },
      { label: "Deployments with a jump", data: col("jumping_deployments") },
    ]);
    const jumps = data.tables.jumps.rows;
    fillTable("table-quality", jumps.filter((r) => !isRest(r)).reverse().map((r) => el("tr", { "data-day": r.day, "data-uid": r.uid, "data-jump": r.metric }, [
      el("td", { text: r.day }), el("td", { class: "uid", text: r.uid.slice(0, 12) + "…", title: r.uid }), el("td", { text: r.metric }),
      td(r.previous, { "data-metric": "previous" }), td(r.current, { "data-metric": "current" })])).concat(
      jumps.filter(isRest).map((r) => el("tr", { "data-other": r.others }, [
        el("td", { colspan: 5, text: "and " + fmt(r.others) + " smaller jumps (the largest " + fmt(data.top) + " are listed)" })]))));
    setPanel("#panel-quality", data.rows.length ? "ready" : "empty");
  }

  function wireSwitches() {
    $$("[data-switch]").forEach((group) => {
      group.addEventListener("click", (ev) => {
        const button = ev.target.closest("button[data-mode]");
        if (!button) return;
        $$("button", group).forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
        modes[group.dataset.switch] = button.dataset.mode;
        const render = renderers[group.dataset.switch];
        if (render) render();
      });
    });
    $$("#fleet-switch button").forEach((b) => {
      b.setAttribute("aria-pressed", String(b.dataset.fleet === fleetMode()));
      b.addEventListener("click", () => {
        const p = currentParams();
        if (b.dataset.fleet === "carried") p.fleet = "carried"; else delete p.fleet;
        $$("#fleet-switch button").forEach((x) => x.setAttribute("aria-pressed", String(x === b)));
        navigate(p);
      });
    });
  }

  // -- loading --------------------------------------------------------------------------------------------

  function status(text, isError) {
    const s = $("#status");
    s.textContent = text;
    s.classList.toggle("error", !!isError);
  }

  async function load(params) {
    const mine = ++generation;
    document.body.dataset.state = "loading";
    status("Loading…");
    let days;
    try {
      days = await getJSON("/api/days", params);
    } catch (e) {
      status("Cannot load: " + e.message, true);
      document.body.dataset.state = "error";
      return;
    }
    if (mine !== generation) return;
    const info = days.rows[0];
    dataStart = info.first_day || null;
    const range = { from: days.from, to: days.to };
    $("#from").value = range.from;
    $("#to").value = range.to;
    document.body.dataset.from = range.from;
    document.body.dataset.to = range.to;
    if (info.first_day) {
      $("#days-available").textContent = "Data from " + info.first_day + " to " + info.last_day + " (" + info.days + " days).";
    } else {
      $("#days-available").textContent = "No data yet.";
    }
    $("#reset").dataset.from = info.default_from;
    $("#reset").dataset.to = info.default_to;
    setCsvLinks(range);
    // The time axis: every day of the range that can have data (gaps stay gaps).
    const lo = info.first_day && info.first_day > range.from ? info.first_day : range.from;
    const hi = info.last_day && info.last_day < range.to ? info.last_day : range.to;
    const axis = info.first_day ? daysBetween(lo, hi) : [];

    const carried = fleetMode() === "carried";
    document.body.dataset.fleet = fleetMode();
    // the notes of the panels the switch changes say which fleet they count
    $$("[data-note-carried]").forEach((n) => { n.textContent = carried ? n.dataset.noteCarried : n.dataset.noteReported; });
    const jobs = [
      [carried ? "summary-carried" : "summary", "#panel-summary", renderSummary],
      [carried ? "fleet-carried" : "fleet", null, (d) => renderFleet(d, axis)],
      ["gateways-by-frequency-plan", "#panel-gateways", renderGateways],
      ["versions", "#panel-versions", (d) => renderVersions(d, axis)],
      ["os", "#panel-os", renderOs],
      ["rejected", "#panel-rejected", (d) => renderRejected(d, axis)],
      ["lifecycle", "#panel-lifecycle", (d) => renderLifecycle(d, axis)],
      ["retention", "#panel-retention", renderRetention],
      ["fleet-shape", "#panel-shape", (d) => renderShape(d, axis)],
      ["regions", "#panel-regions", (d) => renderRegions(d, axis)],
      ["version-adoption", "#panel-adoption", (d) => renderAdoption(d, axis)],
      ["versions-behind", "#panel-behind", (d) => renderBehind(d, axis)],
      ["cli", "#panel-cli", (d) => renderCli(d, axis)],
      ["cli-aliases", "#panel-cli-aliases", renderCliAliases],
      ["data-quality", "#panel-quality", (d) => renderQuality(d, axis)],
    ];
    const fresh = getJSON("/api/freshness", range);
    const results = await Promise.allSettled(jobs.map(([name]) => getJSON("/api/" + name, range)));
    if (mine !== generation) return;
    showFreshness(await fresh.catch(() => null));
    const failed = [];
    results.forEach((res, i) => {
      const [name, panel, render] = jobs[i];
      const panels = panel ? [panel] : ["#panel-active", "#panel-deployments", "#panel-entities"];
      try {
        if (res.status !== "fulfilled") throw res.reason;
        render(res.value);
      } catch (e) {
        failed.push(name + ": " + e.message);
        panels.forEach((p) => {
          setPanel(p, "error");
          const note = $(p + " .note");
          if (note) note.textContent = "Could not load this panel: " + e.message;
        });
      }
    });
    const summaryDay = results[0].status === "fulfilled" ? results[0].value.day : null;
    if (failed.length) {
      status("Some panels failed: " + failed.join("; "), true);
      document.body.dataset.state = "error";
    } else {
      status("Showing " + range.from + " to " + range.to + (summaryDay ? "; figures for " + summaryDay : "; no data in this range") + ".");
      document.body.dataset.state = "ready";
    }
  }

  // "Figures as of T: ..." when a refresh of the fleet over time is failing or late (/api/freshness); as text.
  function showFreshness(data) {
    const banner = $("#freshness");
    const behind = Boolean(data && data.behind);
    banner.hidden = !behind;
    banner.textContent = behind ? data.message : "";
    banner.dataset.asOf = behind && data.as_of ? data.as_of : "";
    document.body.dataset.freshness = data ? (behind ? "behind" : "current") : "unknown";
  }

  function currentParams() {
    const q = new URLSearchParams(location.search);
    const p = {};
    if (q.get("from")) p.from = q.get("from");
    if (q.get("to")) p.to = q.get("to");
    if (q.get("fleet") === "carried") p.fleet = "carried";
    return p;
  }

  function navigate(params) {
    const qs = new URLSearchParams(params).toString();
    history.pushState(params, "", qs ? "?" + qs : location.pathname);
    load(params);
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (typeof Chart === "undefined") {
      status("The chart library did not load (/static/vendor/chart.umd.min.js).", true);
      document.body.dataset.state = "error";
      return;
    }
    Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
    Chart.defaults.color = "#5d6b7e";
    $("#range").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const p = { from: $("#from").value, to: $("#to").value };
      if (fleetMode() === "carried") p.fleet = "carried";
      navigate(p);
    });
    $("#reset").addEventListener("click", () => navigate(fleetMode() === "carried" ? { fleet: "carried" } : {}));
    window.addEventListener("popstate", () => load(currentParams()));
    wireSwitches();
    load(currentParams());
  });
})();
