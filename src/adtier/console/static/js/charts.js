// Charts through plotly.js (shipped in the `plotly` wheel, served from the installed package).
// Every chart writes the exact numbers it draws into `data-series` (JSON), so a test, a
// screen reader user (the table beside it) and the API all see the same figures.

// Okabe-Ito: distinguishable with the common colour-vision deficiencies.
export const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
  "#F0E442", "#000000"];

const CONFIG = { displaylogo: false, responsive: true,
  modeBarButtonsToRemove: ["lasso2d", "select2d"] };

function layout(extra) {
  return {
    margin: { l: 60, r: 20, t: 20, b: 50 }, font: { family: "system-ui, sans-serif", size: 13 },
    colorway: PALETTE, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    legend: { orientation: "h", y: -0.2 }, hovermode: "x unified", ...extra,
  };
}

const queue = [];

// series: {name: values} drawn against x; the data attribute holds {x, ...series} at once,
// the drawing waits for `drawQueued` (after the page is in the document, so it has a size).
export function draw(node, spec) {
  const { id, title, x, series } = spec;
  node.id = id;
  node.classList.add("chart");
  node.setAttribute("role", "img");
  node.setAttribute("aria-label", title);
  node.dataset.series = JSON.stringify({ x, ...series });
  queue.push([node, spec]);
}

export async function drawQueued() {
  const pending = queue.splice(0);
  await Promise.all(pending.map(([node, spec]) => plot(node, spec)));
}

// plotly reads tags in its text (<a href>, <b>, <br> ...): a name from the API (a segment's,
// a title's) is escaped so it is drawn as the text it is, never as a link or markup.
function plain(value) {
  if (Array.isArray(value)) return value.map(plain);
  return typeof value === "string"
    ? value.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;") : value;
}

function plainTrace(trace) {
  const out = { ...trace };
  for (const field of ["x", "y", "name", "text"]) {
    if (field in out) out[field] = plain(out[field]);
  }
  return out;
}

function plot(node, { x, series, kind = "bar", xTitle, yTitle, extra = {}, traces }) {
  const data = (traces || Object.entries(series).map(([name, values], i) => ({
    type: kind === "line" ? "scatter" : "bar", mode: kind === "line" ? "lines+markers" : undefined,
    name, x, y: values, marker: { color: PALETTE[i % PALETTE.length] },
  }))).map(plainTrace);
  return window.Plotly.newPlot(node, data, layout({
    xaxis: { title: { text: xTitle || "" }, automargin: true, type: "category" },
    yaxis: { title: { text: yTitle || "" }, automargin: true, rangemode: "tozero" }, ...extra,
  }), CONFIG);
}

const BUCKETS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10+"];

// A frequency chart's axis shows every bucket 1..10+; those the API folded into its
// suppressed remainder are marked "suppressed" (their counts are never shown apart).
export function frequencyLayout(suppressed = []) {
  return {
    xaxis: { type: "category", categoryorder: "array", categoryarray: BUCKETS,
      range: [-0.5, BUCKETS.length - 0.5], title: { text: "impressions per profile" } },
    // by position: plotly would read the label "1" as the category at index 1
    annotations: suppressed.map((label) => ({ x: BUCKETS.indexOf(label), y: 0, yref: "paper", yanchor: "bottom",
      text: "suppressed", textangle: -90, showarrow: false, font: { color: "#8a4b00" } })),
  };
}

export function chartBox() {
  return document.createElement("div");
}
