// One campaign: delivery by day, cumulative reach, frequency, the quartile funnel and rates,
// breakdowns, content effects. Every number is the API's answer for this key.
import { api, ApiError, query } from "../api.js";
import { chartBox, draw, frequencyLayout } from "../charts.js";
import { card, columnsOf, el, errorBox, fmt, isRate, kpis, table } from "../ui.js";

const BREAKDOWNS = ["device", "country", "creative", "break_position"];
const FUNNEL = ["impressions", "starts", "first_quartile", "midpoint", "third_quartile",
  "completes"];

export async function campaignPage(target, { args }) {
  const id = args[0];
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const range = { from: params.get("from") || "", to: params.get("to") || "" };
  const base = `/v1/campaigns/${encodeURIComponent(id)}`;
  let day, freq;
  try {
    [day, freq] = await Promise.all([api(`${base}/report${query({ by: "day", ...range })}`),
      api(`${base}/frequency${query(range)}`)]);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      target.replaceChildren(el("h1", {}, "Campaign not found"), el("p", { role: "alert",
        class: "error", id: "not-found" }, `No campaign "${id}" for this key.`));
      return;
    }
    throw err;
  }
  const sections = el("div", { class: "grid" });
  target.replaceChildren(el("h1", {}, `Campaign ${id}`), rangeForm(id, range),
    el("p", { class: "note" }, `Data through ${day.data_through || "—"}; a row is shown when its ` +
      `reach is at least ${threshold(day)} profiles, smaller ones are folded into "suppressed".`),
    totalsKpis(day.totals), sections);
  sections.append(dailyCard(day), cumulativeCard(freq), frequencyCard(freq), funnelCard(day));
  // the breakdowns and the effects are independent queries: ask them together
  const cards = await Promise.all([...BREAKDOWNS.map((by) => breakdownCard(base, by, range)),
    effectsCard(base)]);
  target.append(...cards, totalsCard(day));
}

function rangeForm(id, range) {
  const from = el("input", { type: "date", id: "from", name: "from", value: range.from });
  const to = el("input", { type: "date", id: "to", name: "to", value: range.to });
  return el("form", { class: "inline card", "aria-label": "Date range",
    onsubmit: (event) => {
      event.preventDefault();
      location.hash = `#/campaign/${encodeURIComponent(id)}?${new URLSearchParams(
        { from: from.value, to: to.value })}`;
    } },
  el("div", {}, el("label", { for: "from" }, "From"), from),
  el("div", {}, el("label", { for: "to" }, "To"), to),
  el("button", { type: "submit" }, "Apply"));
}

function totalsKpis(totals) {
  if (!totals) return el("p", { class: "note" }, "Totals are suppressed: the campaign covers " +
    "fewer profiles than the privacy threshold.");
  // every rate the API sends, whatever it is called (new measures appear without a change)
  const rates = Object.keys(totals).filter(isRate);
  return kpis([["impressions", totals.impressions], ["reach", totals.reach],
    ["avg_frequency", totals.avg_frequency], ...rates.map((r) => [r, totals[r]])]);
}

function dailyCard(day) {
  const node = chartBox();
  const x = day.rows.map((r) => r.day);
  const section = card("Daily impressions and reach", node, suppressedNote(day),
    table({ caption: "Daily delivery", id: "daily-table", csv: "daily.csv",
      rows: withSuppressed(day, "day"), columns: columnsOf(day.rows, ["day"]) }));
  draw(node, { id: "chart-daily", title: "Impressions and reach by day",
    x, series: { impressions: day.rows.map((r) => r.impressions),
      reach: day.rows.map((r) => r.reach) }, xTitle: "day", yTitle: "count" });
  return section;
}

function cumulativeCard(freq) {
  const node = chartBox();
  const points = freq.cumulative_reach;
  draw(node, { id: "chart-cumulative", kind: "line",
    title: "Cumulative reach by day", x: points.map((p) => p.day),
    series: { reach: points.map((p) => p.reach) }, xTitle: "day", yTitle: "profiles reached" });
  return card("Cumulative reach", node, el("p", { class: "note" }, "A day is shown once reach " +
    "grew by at least k profiles since the last shown day."),
  table({ caption: "Cumulative reach", csv: "cumulative-reach.csv", rows: points,
    columns: ["day", "reach"] }));
}

function frequencyCard(freq) {
  const node = chartBox();
  const dist = freq.distribution;
  const rows = [...dist];
  if (freq.suppressed) {
    rows.push({ frequency: `suppressed (${freq.suppressed.frequencies.join(", ")})`,
      profiles: freq.suppressed.profiles, impressions: freq.suppressed.impressions,
      _suppressed: true });
  } else if (freq.suppressed_rows) {
    rows.push({ frequency: `suppressed (${freq.suppressed_rows} buckets)`, _suppressed: true });
  }
  draw(node, { id: "chart-frequency", title: "Profiles by frequency",
    x: dist.map((d) => d.frequency), series: { profiles: dist.map((d) => d.profiles) },
    yTitle: "profiles", extra: frequencyLayout(freq.suppressed?.frequencies) });
  return card("Frequency distribution (1…10+)", node,
    table({ caption: "Frequency distribution", id: "frequency-table", csv: "frequency.csv",
      rows, columns: ["frequency", "profiles", "impressions"] }));
}

function funnelCard(day) {
  const node = chartBox();
  const totals = day.totals;
  if (!totals) return card("Quartile funnel", el("p", { class: "note" }, "Suppressed."));
  const values = FUNNEL.map((f) => totals[f]);
  draw(node, { id: "chart-funnel", title: "VAST quartile funnel",
    x: FUNNEL, series: { events: values }, traces: [{ type: "funnel", y: FUNNEL, x: values,
      textinfo: "value+percent initial", marker: { color: "#0072B2" } }],
    extra: { yaxis: { type: "category", automargin: true }, xaxis: { title: { text: "" } },
      hovermode: "closest", margin: { l: 110, r: 20, t: 10, b: 30 } } });
  return card("Quartile funnel", node, kpis([["vcr", totals.vcr],
    ["skip_rate", totals.skip_rate], ["ctr", totals.ctr],
    ["viewable_rate", totals.viewable_rate]]));
}

function withSuppressed(report, key) {
  const rows = [...report.rows];
  if (report.suppressed_rows) {
    rows.push({ ...(report.suppressed || {}), [key]:
      `suppressed (${report.suppressed_rows} ${report.suppressed_rows === 1 ? "row" : "rows"} ` +
      `under ${threshold(report)} profiles` +
      `${report.suppressed ? "" : "; too few to show even together"})`,
    _suppressed: true });
  }
  return rows;
}

// The reach a row needs to be released: an advertiser's noisy answer names its own threshold
// (k raised for the noise, noise.row_threshold); an exact answer's is k.
function threshold(report) {
  return fmt(report.noise?.row_threshold ?? report.k);
}

function suppressedNote(report) {
  return report.suppressed_rows ? el("p", { class: "note" }, `${report.suppressed_rows} ` +
    "rows under the privacy threshold are folded into the suppressed row.") : "";
}

async function breakdownCard(base, by, range) {
  let report;
  try {
    report = await api(`${base}/report${query({ by, ...range })}`);
  } catch (err) {
    return card(`By ${by.replace("_", " ")}`, errorBox(err));
  }
  const node = chartBox();
  const rows = withSuppressed(report, by);
  draw(node, { id: `chart-by-${by}`, title: `Impressions by ${by}`,
    x: report.rows.map((r) => String(r[by])),
    series: { impressions: report.rows.map((r) => r.impressions),
      reach: report.rows.map((r) => r.reach) }, xTitle: by.replace("_", " ") });
  return el("section", { class: "card", "aria-label": `By ${by}`, id: `by-${by}` },
    el("h2", {}, `By ${by.replace("_", " ")}`), el("div", { class: "grid" },
      node, table({ caption: `Report by ${by}`, id: `table-by-${by}`, csv: `report-by-${by}.csv`,
        // the columns of the released rows, or (every row folded) of the remainder or totals
        rows, columns: columnsOf([...report.rows, report.suppressed || {}, report.totals || {}],
          [by]) })));
}

function totalsCard(day) {
  if (!day.totals) return "";
  const rows = Object.entries(day.totals).map(([measure, value]) => ({ measure, value }));
  return card("All measures (totals)", table({ caption: "Totals", id: "totals-table",
    csv: "totals.csv", rows, columns: ["measure", "value"] }));
}

async function effectsCard(base) {
  let effects;
  try {
    effects = await api(`${base}/content-effects`);
  } catch (err) {
    if (err instanceof ApiError && err.code === "not_a_promotion") {
      return card("Content effects", el("p", { class: "note", id: "effects-none" },
        "This campaign promotes no title or genre, so there is no content effect to measure."));
    }
    return card("Content effects", errorBox(err));
  }
  const observational = effects.kind !== "holdout_lift";
  const heading = el("p", {}, el("span", { class: `badge ${observational ? "observational" : "ready"}`,
    id: "effects-kind" }, observational ? "observational: not a causal lift" :
    "randomised holdout: lift"), " ", effects.caveat || "");
  if (effects.suppressed) {
    return card("Content effects", heading, el("p", { class: "note" }, effects.detail ||
      "Suppressed: a compared group is under the privacy threshold."));
  }
  const estimates = effects.lift || effects.difference || [];
  const node = chartBox();
  draw(node, { id: "chart-effects",
    title: observational ? "Difference (observational) with 95% CI" : "Lift with 95% CI",
    x: estimates.map((e) => e.metric), series: { estimate: estimates.map((e) => e.estimate),
      ci_low: estimates.map((e) => e.ci95[0]), ci_high: estimates.map((e) => e.ci95[1]) },
    // one panel per measure: shares and minutes have different scales
    traces: estimates.map((e, i) => ({ type: "scatter", mode: "markers", name: e.metric,
      x: [e.metric.replaceAll("_", " ")], y: [e.estimate], xaxis: `x${i + 1}`, yaxis: `y${i + 1}`,
      marker: { size: 11, color: "#0072B2" }, showlegend: false,
      error_y: { type: "data", symmetric: false, array: [e.ci95[1] - e.estimate],
        arrayminus: [e.estimate - e.ci95[0]], color: "#0072B2", thickness: 2, width: 8 } })),
    extra: effectsLayout(estimates.length) });
  const rows = estimates.map((e) => ({ ...e, ci95_low: e.ci95[0], ci95_high: e.ci95[1] }));
  return card("Content effects", heading, node,
    table({ caption: observational ? "Observational differences" : "Lift", id: "effects-table",
      csv: "content-effects.csv", rows,
      columns: ["metric", "estimate", "ci95_low", "ci95_high", "std_error", "relative"] }),
    table({ caption: "Arms", csv: "content-effects-arms.csv", rows: effects.arms || [],
      columns: columnsOf(effects.arms || [], ["arm"]) }));
}

function effectsLayout(panels) {
  const axes = {};
  for (let i = 1; i <= panels; i += 1) {
    axes[`xaxis${i === 1 ? "" : i}`] = { type: "category", automargin: true };
    axes[`yaxis${i === 1 ? "" : i}`] = { zeroline: true, zerolinecolor: "#59636e", rangemode: "tozero",
      zerolinewidth: 2, automargin: true,
      title: { text: i === 1 ? "treated − comparison (95% CI)" : "" } };
  }
  return { grid: { rows: 1, columns: panels, pattern: "independent" }, hovermode: "closest",
    ...axes };
}
