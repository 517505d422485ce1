// Small DOM helpers: elements, numbers, tables with a CSV download, messages.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const INT = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
const DEC = new Intl.NumberFormat("en", { maximumFractionDigits: 3 });

export function fmt(value, name = "") {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") {
    if (isRate(name)) return `${(value * 100).toFixed(1)}%`;
    return Number.isInteger(value) ? INT.format(value) : DEC.format(value);
  }
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function isRate(name) {
  return /(_rate|_share|^vcr$|^ctr$)/.test(name);
}

export function label(name) {
  const words = { vcr: "VCR", ctr: "CTR", avg_frequency: "avg frequency" };
  return words[name] || name.replaceAll("_", " ");
}

export function kpis(entries) {
  return el("div", { class: "kpis" }, entries.map(([name, value]) =>
    el("div", { class: "kpi", "data-kpi": name, "data-value": JSON.stringify(value ?? null) },
      el("div", { class: "v" }, fmt(value, name)), el("div", { class: "k" }, label(name)))));
}

function csvCell(value) {
  let text = value === null || value === undefined ? ""
    : typeof value === "object" ? JSON.stringify(value) : String(value);
  // A spreadsheet runs a text cell starting with = + - @ (or tab, CR) as a formula: a name
  // anyone can set ("=HYPERLINK(...)") would act in the reader's spreadsheet. The leading
  // apostrophe (OWASP's advice) keeps it text; numbers stay numbers.
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export function toCsv(columns, rows) {
  const lines = [columns.map(csvCell).join(",")];
  for (const row of rows) lines.push(columns.map((c) => csvCell(row[c])).join(","));
  return lines.join("\n") + "\n";
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// columns: field names (a header is derived) or [field, header] pairs. A row with
// `_suppressed: true` is drawn as suppressed (its numbers are what the API released, if any).
export function table({ caption, columns, rows, csv, id }) {
  const cols = columns.map((c) => (Array.isArray(c) ? c : [c, label(c)]));
  const fields = cols.map(([f]) => f);
  const body = rows.map((row) => el("tr", { class: row._suppressed ? "suppressed" : null,
    "data-suppressed": row._suppressed ? "true" : null },
  fields.map((f, i) => (i === 0 ? el("th", { scope: "row" }, fmt(row[f], f))
    : el("td", {}, fmt(row[f], f))))));
  const tableNode = el("table", { id, "data-rows": JSON.stringify(rows.length) },
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, cols.map(([, h]) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, body));
  const button = el("button", { type: "button", class: "secondary", "data-csv": csv,
    onclick: () => download(csv, toCsv(fields, rows)) }, `Download CSV`);
  button.setAttribute("aria-label", `Download ${caption} as CSV`);
  return el("div", {}, el("div", { class: "tools" }, button),
    el("div", { class: "table-wrap" }, tableNode));
}

export function card(title, ...children) {
  return el("section", { class: "card", "aria-label": title }, el("h2", {}, title), children);
}

export function say(text, kind = "note") {
  const box = document.getElementById("status");
  box.replaceChildren(text ? el("p", { class: kind }, text) : "");
}

export function errorBox(err) {
  return el("p", { class: "error", role: "alert" }, err.message || String(err));
}

export function columnsOf(rows, first = []) {
  const seen = new Set(first);
  const out = [...first];
  for (const row of rows) {
    for (const name of Object.keys(row)) {
      if (!seen.has(name) && !name.startsWith("_")) { seen.add(name); out.push(name); }
    }
  }
  return out;
}
