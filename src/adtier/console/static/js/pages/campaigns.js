// Campaigns this key may measure, and the privacy budget where the server keeps one.
import { api, hasEndpoint, optional } from "../api.js";
import { card, el, fmt, label, table } from "../ui.js";

export async function campaignsPage(target, { me }) {
  // the budget is an advertiser's own; an admin key would have to name one
  const [list, budget] = await Promise.all([api("/v1/campaigns"),
    me.role === "advertiser" ? privacyBudget() : ""]);
  const rows = list.items.map((c) => ({ ...c, _link: `#/campaign/${encodeURIComponent(c.campaign_id)}` }));
  const links = el("ul", { class: "campaign-links", "aria-label": "Open a campaign" },
    rows.map((c) => el("li", {}, el("a", { href: c._link, "data-campaign": c.campaign_id },
      `${c.name} (${c.campaign_id})`))));
  target.replaceChildren(
    el("h1", {}, "Campaigns"),
    budget,
    card(`${rows.length} campaigns`, links, table({
      caption: "Campaigns", id: "campaigns-table", csv: "campaigns.csv", rows,
      columns: ["campaign_id", "name", "advertiser_id", "ad_category", "start_date", "end_date",
        "frequency_cap", "holdout_percent", "promoted_title_id", "promoted_genre"],
    })),
  );
}

// GET /v1/privacy/budget, shown as the server answers it (any fields); nothing where the
// server has no such endpoint.
async function privacyBudget() {
  let budget;
  if (!(await hasEndpoint("/v1/privacy/budget"))) return "";
  try {
    budget = await optional("/v1/privacy/budget");
  } catch (err) {
    return card("Privacy budget", el("p", { class: "note" },
      `The privacy budget could not be read: ${err.message}`));
  }
  if (!budget || typeof budget !== "object") return "";
  const flat = Object.entries(budget).filter(([, v]) => typeof v !== "object" || v === null);
  const nested = Object.entries(budget).filter(([, v]) => Array.isArray(v));
  return el("section", { class: "card", id: "privacy-budget", "aria-label": "Privacy budget",
    "data-budget": JSON.stringify(budget) },
  el("h2", {}, "Privacy budget"),
  el("div", { class: "kpis" }, flat.map(([k, v]) => el("div", { class: "kpi" },
    el("div", { class: "v" }, fmt(v, k)), el("div", { class: "k" }, label(k))))),
  nested.map(([k, rows]) => table({ caption: label(k), csv: `privacy-${k}.csv`, rows,
    columns: Object.keys(rows[0] || {}) })));
}
