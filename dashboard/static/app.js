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

  async function getJSON(path, params) {
    const qs = new URLSearchParams(params || {});
    const res = await fetch(path + (qs.toString() ? "?" + qs : ""), { headers: { Accept: "application/json" } });
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
    $$("a[data-csv]").forEach((a) => {
      const qs = new URLSearchParams({ from: range.from, to: range.to, format: "csv" });
      if (a.dataset.table) qs.set("table", a.dataset.table);
      a.href = "/api/" + a.dataset.csv + "?" + qs;
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
    draw("chart-gateways", {
      type: "bar",
      data: { labels: rows.map((r) => r.frequency_plan_id),
        datasets: [{ label: "Gateways", data: rows.map((r) => num(r.gateways)), backgroundColor: PALETTE[0], maxBarThickness: 26 }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true } } },
    });
    fillTable("table-gateways", rows.map((r) => el("tr", { "data-plan": r.frequency_plan_id }, [
      el("td", { text: r.frequency_plan_id }), td(r.gateways)])));
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
    const versions = data.versions;
    const share = new Map(data.rows.map((r) => [r.day + "|" + r.version, r.share]));
    draw("chart-versions", {
      type: "bar",
      data: { labels: axis, datasets: versions.map((v, i) => ({ label: v, backgroundColor: PALETTE[i % PALETTE.length],
        data: axis.map((d) => { const s = share.get(d + "|" + v); return s === undefined || s === null ? null : s * 100; }) })) },
      options: { plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } },
        tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + c.parsed.y.toFixed(1) + "%" } } },
        scales: { x: { stacked: true, ticks: DAY_TICKS }, y: { stacked: true, min: 0, max: 100, ticks: { callback: (v) => v + "%" } } } },
    });
    const adoption = data.tables.adoption.rows;
    fillTable("table-versions", adoption.map((r) => el("tr", { "data-version": r.version }, [el("td", { text: r.version }),
      td(r.deployments), el("td", { class: "num", text: pct(r.share) })])));
    setPanel("#panel-versions", data.rows.length ? "ready" : "empty", data.day);
  }

  function renderOs(data) {
    const part = (dim) => data.rows.filter((r) => r.dimension === dim);
    [["chart-os", "operating_system", "Operating system"], ["chart-arch", "arch", "Architecture"]].forEach(([id, dim, title], k) => {
      const rows = part(dim);
      draw(id, {
        type: "bar",
        data: { labels: rows.map((r) => r.value || "(empty)"),
          datasets: [{ label: "Deployments", data: rows.map((r) => num(r.deployments)), backgroundColor: PALETTE[k + 1],
            maxBarThickness: 26 }] },
        options: { indexAxis: "y", plugins: { legend: { display: false }, title: { display: true, text: title } },
          scales: { x: { beginAtZero: true } } },
      });
    });
    fillTable("table-os", data.rows.map((r) => el("tr", { "data-dimension": r.dimension, "data-key": r.value }, [
      el("td", { text: r.dimension === "arch" ? "architecture" : "operating system" }), el("td", { text: r.value }),
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

    const jobs = [
      ["summary", "#panel-summary", renderSummary],
      ["fleet", null, (d) => renderFleet(d, axis)],
      ["gateways-by-frequency-plan", "#panel-gateways", renderGateways],
      ["versions", "#panel-versions", (d) => renderVersions(d, axis)],
      ["os", "#panel-os", renderOs],
      ["rejected", "#panel-rejected", (d) => renderRejected(d, axis)],
    ];
    const results = await Promise.allSettled(jobs.map(([name]) => getJSON("/api/" + name, range)));
    if (mine !== generation) return;
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

  function currentParams() {
    const q = new URLSearchParams(location.search);
    const p = {};
    if (q.get("from")) p.from = q.get("from");
    if (q.get("to")) p.to = q.get("to");
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
      navigate({ from: $("#from").value, to: $("#to").value });
    });
    $("#reset").addEventListener("click", () => navigate({}));
    window.addEventListener("popstate", () => load(currentParams()));
    load(currentParams());
  });
})();
