// Forecast planner: impressions -> reach for chosen segments, cap and days. The curve is the
// API's forecast at five budgets up to the one asked (five audited calls, no interpolation).
import { api } from "../api.js";
import { chartBox, draw, drawQueued, frequencyLayout } from "../charts.js";
import { card, el, errorBox, kpis, table } from "../ui.js";

const STEPS = [0.2, 0.4, 0.6, 0.8, 1];

export async function forecastPage(target) {
  const segments = (await api("/v1/segments")).filter((s) => s.status === "ready");
  const result = el("div", { id: "forecast-result", "aria-live": "polite" });
  const form = el("form", { class: "card", id: "forecast-form", "aria-label": "Plan" },
    el("h2", {}, "Plan"),
    el("fieldset", {}, el("legend", {}, "Segments (none: every eligible profile)"),
      segments.length ? segments.map((s) => el("label", {},
        el("input", { type: "checkbox", name: "segment", value: s.segment_id }),
        ` ${s.name} (${s.size.toLocaleString("en")} profiles)`))
        : el("p", { class: "note" }, "No built segments yet.")),
    el("div", { class: "inline" },
      field("impressions", "Impressions", 20000, 1),
      field("frequency_cap", "Frequency cap per day (0 = none)", 3, 0),
      field("days", "Days", 7, 1),
      el("button", { type: "submit" }, "Forecast")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.replaceChildren(el("p", { class: "note" }, "Forecasting…"));
    result.dataset.ready = "false";
    try {
      await showForecast(result, planOf(form));
    } catch (err) {
      result.replaceChildren(errorBox(err));
    }
    result.dataset.ready = "true";
  });
  target.replaceChildren(el("h1", {}, "Forecast planner"), form, result);
}

function field(name, text, value, min) {
  return el("div", {}, el("label", { for: `f-${name}` }, text),
    el("input", { id: `f-${name}`, name, type: "number", min, value, required: true }));
}

function planOf(form) {
  return {
    segment_ids: [...form.querySelectorAll("input[name=segment]:checked")].map((i) => i.value),
    impressions: Number(form.impressions.value),
    frequency_cap: Number(form.frequency_cap.value),
    days: Number(form.days.value),
  };
}

async function showForecast(result, plan) {
  const budgets = [...new Set(STEPS.map((s) => Math.max(1, Math.round(plan.impressions * s))))];
  const answers = await Promise.all(budgets.map((impressions) =>
    api("/v1/forecast/reach", { method: "POST", body: { ...plan, impressions } })));
  const last = answers[answers.length - 1];
  const curve = chartBox();
  const dist = chartBox();
  draw(curve, { id: "chart-forecast-curve", kind: "line", title: "Forecast reach by impressions",
    x: budgets, series: { reach: answers.map((a) => a.reach) },
    xTitle: "impressions", yTitle: "profiles reached",
    extra: { xaxis: { type: "linear", title: { text: "impressions" } } } });
  draw(dist, { id: "chart-forecast-frequency", title: "Forecast frequency distribution",
    x: last.distribution.map((d) => d.frequency),
    series: { profiles: last.distribution.map((d) => d.profiles) },
    yTitle: "profiles", extra: frequencyLayout(last.suppressed?.frequencies) });
  const rows = answers.map((a) => ({ impressions: a.impressions, reach: a.reach,
    reach_share: a.reach_share, avg_frequency: a.avg_frequency,
    deliverable_impressions: a.deliverable_impressions, backtest_error: a.backtest_error }));
  const distRows = [...last.distribution];
  if (last.suppressed) {
    distRows.push({ frequency: `suppressed (${last.suppressed.frequencies.join(", ")})`,
      profiles: last.suppressed.profiles, _suppressed: true });
  }
  result.replaceChildren(
    kpis([["reach", last.reach], ["reach_share", last.reach_share],
      ["avg_frequency", last.avg_frequency], ["deliverable_impressions",
        last.deliverable_impressions], ["backtest_error", last.backtest_error]]),
    el("p", { class: "note", id: "forecast-model" }, `Model: ${last.model}; backtest error ` +
      `${last.backtest_error ?? "—"} (mean relative error of reach on past campaigns; ` +
      `${last.backtest?.method || ""}).`),
    el("div", { class: "grid" },
      card("Reach curve", curve, table({ caption: "Reach by impressions", id: "forecast-table",
        csv: "forecast-curve.csv", rows, columns: Object.keys(rows[0]) })),
      card("Frequency at the full budget", dist, table({ caption: "Forecast frequency",
        csv: "forecast-frequency.csv", rows: distRows, columns: ["frequency", "profiles"] }))));
  await drawQueued();
}
