// Sign-in, navigation and routing (by the URL's hash: #/campaigns, #/campaign/<id>, ...).
import { api, ApiError, session } from "./api.js";
import { el, say } from "./ui.js";
import { drawQueued } from "./charts.js";
import { campaignsPage } from "./pages/campaigns.js";
import { campaignPage } from "./pages/campaign.js";
import { forecastPage } from "./pages/forecast.js";
import { segmentsPage } from "./pages/segments.js";
import { opsPage } from "./pages/ops.js";
import { keysPage } from "./pages/keys.js";

const PAGES = {
  campaigns: { title: "Campaigns", render: campaignsPage, roles: ["advertiser", "admin"] },
  campaign: { title: "Campaign", render: campaignPage, roles: ["advertiser", "admin"],
    hidden: true },
  forecast: { title: "Forecast", render: forecastPage, roles: ["advertiser", "admin"] },
  segments: { title: "Segments", render: segmentsPage, roles: ["advertiser", "admin"] },
  ops: { title: "Pipeline", render: opsPage, roles: ["admin"] },
  keys: { title: "Keys & batches", render: keysPage, roles: ["admin"] },
};

let me = null;

async function signIn(key) {
  try {
    return await api("/v1/whoami", { key });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      throw new Error("This key was not accepted: it is unknown or has been revoked. " +
        "Check that you pasted the whole key.");
    }
    if (err instanceof ApiError && err.status === 403) {
      // the API names the roles it serves and this key's role
      throw new Error(`This key cannot use the console: ${err.message}.`);
    }
    throw err;
  }
}

function showNav() {
  const nav = document.getElementById("nav");
  nav.replaceChildren(...Object.entries(PAGES)
    .filter(([, p]) => !p.hidden && p.roles.includes(me.role))
    .map(([name, p]) => el("a", { href: `#/${name}`, "data-page": name }, p.title)));
  nav.hidden = false;
  document.getElementById("who").textContent =
    `${me.role}${me.advertiser_id ? ` · ${me.advertiser_id}` : ""} · ${me.key_id}`;
  document.getElementById("sign-out").hidden = false;
  document.getElementById("sign-in").hidden = true;
}

async function route() {
  if (!me) return;
  const path = location.hash.replace(/^#\/?/, "").split("?")[0];
  const [name = "campaigns", ...rest] = path ? path.split("/") : [];
  const page = PAGES[name] && PAGES[name].roles.includes(me.role) ? PAGES[name] : null;
  const target = document.getElementById("page");
  for (const link of document.querySelectorAll("#nav a")) {
    link.toggleAttribute("aria-current", link.dataset.page === name);
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
  }
  say("");
  if (!page) {
    target.replaceChildren(el("h1", {}, "Not available"),
      el("p", {}, `There is no page "${name}" for ${me.role} keys.`));
    target.dataset.page = name;
    target.dataset.ready = "true";
    return;
  }
  document.title = `${page.title} · adtier console`;
  target.replaceChildren(el("p", { class: "note" }, "Loading…"));
  target.dataset.page = name;
  target.dataset.ready = "false";
  try {
    await page.render(target, { me, args: rest.map(decodeURIComponent) });
    await drawQueued();
  } catch (err) {
    target.replaceChildren(el("h1", {}, page.title), el("p", { class: "error", role: "alert" },
      err.message || String(err)));
  }
  target.dataset.ready = "true";
  document.getElementById("main").focus({ preventScroll: true });
}

async function start() {
  const form = document.getElementById("sign-in-form");
  const error = document.getElementById("sign-in-error");
  const field = document.getElementById("key");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const key = field.value.trim();
    try {
      me = await signIn(key);
    } catch (err) {
      error.textContent = err.message;
      field.focus();
      return;
    }
    session.set(key);
    form.reset();
    showNav();
    if (!location.hash) location.hash = me.role === "admin" ? "#/ops" : "#/campaigns";
    else await route();
  });
  document.getElementById("sign-out").addEventListener("click", () => {
    session.clear();
    location.hash = "";
    location.reload();
  });
  window.addEventListener("hashchange", route);
  const saved = session.key();
  if (saved) {
    try {
      me = await signIn(saved);
      showNav();
      await route();
    } catch {
      session.clear();
    }
  }
  document.body.dataset.started = "true";
}

start();
