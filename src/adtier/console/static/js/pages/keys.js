// API keys (admin) and batch provenance look-up by id.
import { api, ApiError } from "../api.js";
import { card, el, errorBox, table } from "../ui.js";

export async function keysPage(target) {
  const keys = await api("/v1/keys");
  const result = el("div", { id: "batch-result", "aria-live": "polite" });
  const input = el("input", { id: "batch-id", name: "batch_id", required: true, size: 40 });
  const form = el("form", { class: "inline", id: "batch-form" },
    el("div", {}, el("label", { for: "batch-id" }, "Batch id"), input),
    el("button", { type: "submit" }, "Look up"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.dataset.ready = "false";
    try {
      const batch = await api(`/v1/ingest/batches/${encodeURIComponent(input.value.trim())}`);
      const rows = Object.entries(batch).map(([field, value]) => ({ field, value }));
      result.replaceChildren(table({ caption: `Batch ${batch.batch_id}`, id: "batch-table",
        csv: "batch.csv", rows, columns: ["field", "value"] }));
    } catch (err) {
      result.replaceChildren(err instanceof ApiError && err.status === 404
        ? el("p", { class: "error", role: "alert" }, `No batch "${input.value}".`) : errorBox(err));
    }
    result.dataset.ready = "true";
  });
  target.replaceChildren(el("h1", {}, "Keys and batches"),
    card("Batch provenance", form, result),
    card(`${keys.length} API keys`, table({ caption: "API keys (never their secrets)",
      id: "keys-table", csv: "keys.csv", rows: keys,
      columns: ["key_id", "role", "advertiser_id", "name", "created_at", "revoked_at"] })));
}
