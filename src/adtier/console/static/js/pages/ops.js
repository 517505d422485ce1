// The pipeline (admin): ingest rate by type, rejects by reason, buffer and flushers, catalog.
import { api, query } from "../api.js";
import { chartBox, draw, PALETTE } from "../charts.js";
import { card, el, kpis, table } from "../ui.js";

export async function opsPage(target, { args }) {
  const hours = Number(args[0]) || 24;
  const [rate, rejects, pipeline, catalog] = await Promise.all([
    api(`/v1/ops/ingest${query({ hours })}`), api(`/v1/ops/rejects${query({ hours })}`),
    api("/v1/ops/pipeline"), api("/v1/ops/catalog")]);
  target.replaceChildren(el("h1", {}, "Pipeline"), windowPicker(hours),
    kpis([["buffer_lag_events", pipeline.lag_events],
      ["oldest_buffered_seconds", pipeline.lag_seconds],
      ["stream_entries", pipeline.stream_entries],
      [`events_stored_last_${hours}h`, Object.values(rate.by_type).reduce((a, b) => a + b, 0)],
      [`rejected_last_${hours}h`, rejects.total]]),
    ingestCard(rate), el("div", { class: "grid" }, rejectsCard(rejects), flushersCard(pipeline)),
    el("div", { class: "grid" }, catalogCard(catalog), countersCard(pipeline)));
}

function windowPicker(hours) {
  return el("nav", { class: "card", "aria-label": "Window" }, "Window: ",
    [1, 24, 168].map((h) => el("a", { href: `#/ops/${h}`, style: "margin-right:.8rem",
      "aria-current": h === hours ? "true" : null }, h === 168 ? "7 days" : `${h} h`)));
}

function ingestCard(rate) {
  const times = [...new Set(rate.points.map((p) => p.at))].sort();
  const families = Object.keys(rate.by_family).sort();
  const series = {};
  for (const f of families) {
    const byTime = new Map();
    for (const p of rate.points.filter((q) => q.family === f)) {
      byTime.set(p.at, (byTime.get(p.at) || 0) + p.events);
    }
    series[f] = times.map((at) => byTime.get(at) || 0);
  }
  const node = chartBox();
  const step = rate.bucket_seconds === 60 ? "minute" : "hour";
  draw(node, { id: "chart-ingest", title: `Stored events per ${step} by family`, x: times, series,
    traces: families.map((f, i) => ({ type: "bar", name: f, x: times, y: series[f],
      width: rate.bucket_seconds * 1000 * 0.9, marker: { color: PALETTE[i % PALETTE.length] } })),
    // the whole window, whatever its first and last events: an hour of data reads as such
    extra: { barmode: "stack", legend: { orientation: "h", y: -0.3 },
      xaxis: { type: "date", range: [rate.since, new Date().toISOString()],
        title: { text: `received (per ${step}, UTC)` } },
      yaxis: { title: { text: "events" }, rangemode: "tozero" } } });
  const rows = Object.keys(rate.by_type).sort().map((t) => ({ type: t,
    family: rate.points.find((p) => p.type === t)?.family, events: rate.by_type[t] }));
  return card("Ingest rate", node, table({ caption: "Events by type", id: "ingest-table",
    csv: "ingest-by-type.csv", rows, columns: ["type", "family", "events"] }));
}

function rejectsCard(rejects) {
  const node = chartBox();
  draw(node, { id: "chart-rejects", title: "Rejected events by reason",
    x: rejects.reasons.map((r) => r.reason), series: { rejected: rejects.reasons.map((r) => r.count) },
    yTitle: "events" });
  const rows = rejects.reasons.map((r) => ({ reason: r.reason, count: r.count }));
  const examples = rejects.reasons.map((r) => el("details", {}, el("summary", {},
    `${r.reason}: ${r.examples.length} recent examples`), r.examples.map((e) =>
    el("div", {}, el("p", { class: "note" }, `${e.received_at} · ${e.source} · batch ` +
      `${e.batch_id}: ${e.detail}`), el("pre", {}, e.raw)))));
  return card("Rejects by reason", node, table({ caption: "Rejects", id: "rejects-table",
    csv: "rejects.csv", rows, columns: ["reason", "count"] }), examples);
}

function flushersCard(pipeline) {
  const rows = pipeline.consumers.map((c) => ({ ...c,
    local: pipeline.local_flushers.find((f) => f.name === c.name)?.alive ?? "other process" }));
  return card("Flushers", el("p", { class: "note" }, "Consumers of the buffer's group (every " +
    "process): entries read and not yet acknowledged, and time since each last read."),
  table({ caption: "Flusher consumers", id: "flushers-table", csv: "flushers.csv", rows,
    columns: ["name", "pending", "idle_ms", ["local", "alive here"]] }));
}

function catalogCard(catalog) {
  const rows = Object.entries(catalog.counts).map(([kind, count]) => ({ kind, count }));
  const node = chartBox();
  draw(node, { id: "chart-catalog", title: "Catalog counts", x: rows.map((r) => r.kind),
    series: { count: rows.map((r) => r.count) } });
  return card("Catalog", node, table({ caption: "Catalog counts", id: "catalog-table",
    csv: "catalog.csv", rows, columns: ["kind", "count"] }));
}

function countersCard(pipeline) {
  const rows = [];
  for (const [name, value] of Object.entries(pipeline.counters)) {
    if (value && typeof value === "object") {
      for (const [labelValue, n] of Object.entries(value)) rows.push({ counter: `${name}{${labelValue}}`, value: n });
    } else rows.push({ counter: name, value });
  }
  return card("This process's counters", table({ caption: "Counters (since start)",
    csv: "counters.csv", rows, columns: ["counter", "value"] }));
}
