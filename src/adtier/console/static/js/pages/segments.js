// Segments this key can see, their build state and their exact pairwise overlaps.
import { api } from "../api.js";
import { chartBox, draw } from "../charts.js";
import { card, el, table } from "../ui.js";

const MAX_OVERLAP = 20;

export async function segmentsPage(target) {
  const segments = await api("/v1/segments");
  const rows = segments.map((s) => ({ ...s, owner: s.advertiser_id || "platform" }));
  target.replaceChildren(el("h1", {}, "Segments"), card(`${rows.length} segments`, table({
    caption: "Segments", id: "segments-table", csv: "segments.csv", rows,
    columns: ["segment_id", "name", "kind", "owner", "status", "size", "version", "built_at",
      "data_through", "error"] })));
  const ready = segments.filter((s) => s.status === "ready").slice(0, MAX_OVERLAP);
  if (ready.length < 2) {
    target.append(card("Overlap", el("p", { class: "note" }, "Two built segments are needed.")));
    return;
  }
  const overlap = await api(`/v1/segments/overlap?ids=${ready.map((s) =>
    encodeURIComponent(s.segment_id)).join(",")}`);
  target.append(overlapCard(overlap, new Map(segments.map((s) => [s.segment_id, s.name]))));
}

function overlapCard(overlap, names) {
  const ids = overlap.segments.map((s) => s.segment_id);
  const cell = new Map();
  for (const p of overlap.pairs) {
    cell.set(`${p.a}|${p.b}`, p);
    cell.set(`${p.b}|${p.a}`, p);
  }
  // null where the API suppressed an intersection (under k profiles): drawn as a gap
  const z = ids.map((a) => ids.map((b) => cell.get(`${a}|${b}`)?.intersection ?? null));
  const label = (id) => `${names.get(id) || id}`;
  const node = chartBox();
  draw(node, { id: "chart-overlap", title: "Pairwise overlap of segments (profiles)",
    x: ids, series: { z }, traces: [{ type: "heatmap", x: ids.map(label), y: ids.map(label),
      z, colorscale: "Viridis", hoverongaps: false, texttemplate: "%{z}" }],
    extra: { xaxis: { type: "category", automargin: true }, hovermode: "closest",
      margin: { l: 140, r: 20, t: 10, b: 90 } } });
  const rows = overlap.pairs.map((p) => ({ a: label(p.a), b: label(p.b),
    intersection: p.suppressed ? "suppressed" : p.intersection, _suppressed: p.suppressed }));
  return card("Overlap", node, table({ caption: "Pairwise intersections", id: "overlap-table",
    csv: "segment-overlap.csv", rows, columns: ["a", "b", "intersection"] }));
}
