"""The console in a real headless Chromium (Debian's), against a simulated world: each chart
draws the API's numbers for the same query, tenant rules hold, suppressed rows show as
suppressed, a wrong key is told so, and nothing is fetched from outside the server."""

from __future__ import annotations

import csv
import datetime as dt
import json
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest

from tests.browser.conftest import CHROMIUM, SHOTS, _need_chromium
from tests.browser.world import ServedWorld
from tests.helpers import ad_event, batch

pytestmark = pytest.mark.browser

_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-quic"]


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            args=_ARGS, headless=True, viewport={"width": 1360, "height": 900})
        yield context
        context.close()


class Tab:
    """A page that records console errors and refuses (and records) any request that would
    leave the server: the console must work offline."""

    def __init__(self, context, world: ServedWorld):
        self.world = world
        self.page = context.new_page()
        self.errors: list[str] = []
        self.allowed: set[int] = set()  # refusals a test provokes on purpose
        self.outside: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._only_local)

    def _only_local(self, route) -> None:
        url = urlparse(route.request.url)
        if url.scheme in ("data", "blob") or url.netloc == urlparse(self.world.url).netloc:
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def sign_in(self, key: str) -> None:
        self.page.goto(self.world.url + "/console")
        self.page.wait_for_selector("body[data-started=true]")
        self.page.fill("#key", key)
        self.page.click("#sign-in-form button[type=submit]")

    def open(self, hash_: str) -> None:
        self.unready()
        self.page.evaluate("h => { location.hash = h; }", hash_)
        self.wait_ready()

    def unready(self) -> None:
        """Mark the page not ready before a navigation, so waiting for ready cannot see the
        previous page's mark (hashchange fires after the hash is set)."""
        self.page.evaluate("document.getElementById('page').dataset.ready = 'false'")

    def wait_ready(self) -> None:
        self.page.wait_for_selector("#page[data-ready=true]", timeout=60_000)

    def series(self, chart_id: str) -> dict:
        node = self.page.wait_for_selector(f"#{chart_id}")
        # the chart itself is drawn (plotly's SVG), not only its data attribute
        self.page.wait_for_selector(f"#{chart_id} .main-svg")
        return json.loads(node.get_attribute("data-series"))

    def shot(self, name: str, selector: str | None = None, full_page: bool = True) -> None:
        SHOTS.mkdir(exist_ok=True)
        path = str(SHOTS / f"{name}.png")
        if selector:
            self.page.locator(selector).first.screenshot(path=path)
        else:
            self.page.screenshot(path=path, full_page=full_page)

    def allow(self, status: int) -> None:
        """The browser logs an API refusal as a failed resource load; expect this one."""
        self.allowed.add(status)

    def close(self) -> None:
        self.errors = [e for e in self.errors if not any(
            f"status of {s} " in e for s in self.allowed)]
        assert not self.errors, f"console errors: {self.errors}"
        assert not self.outside, f"requests that left the server: {self.outside}"
        self.page.close()


@pytest.fixture
def tab(chromium, world) -> Iterator[Tab]:
    t = Tab(chromium, world)
    yield t
    t.close()


def test_advertiser_campaign_page_draws_the_apis_numbers(tab, world):
    tab.sign_in(world.advertiser_key)
    tab.wait_ready()
    listed = tab.page.eval_on_selector_all("[data-campaign]", "ns => ns.map(n => n.dataset.campaign)")
    api_list = [c["campaign_id"] for c in world.get("/v1/campaigns")["items"]]
    assert sorted(listed) == sorted(api_list) and world.own_campaign in listed
    assert world.foreign_campaign not in listed
    tab.shot("advertiser-campaigns")

    cid = world.own_campaign
    tab.unready()
    tab.page.click(f"[data-campaign='{cid}']")
    tab.wait_ready()
    day = world.get(f"/v1/campaigns/{cid}/report?by=day")
    daily = tab.series("chart-daily")
    assert daily == {"x": [r["day"] for r in day["rows"]],
                     "impressions": [r["impressions"] for r in day["rows"]],
                     "reach": [r["reach"] for r in day["rows"]]}
    freq = world.get(f"/v1/campaigns/{cid}/frequency")
    assert tab.series("chart-cumulative") == {
        "x": [p["day"] for p in freq["cumulative_reach"]],
        "reach": [p["reach"] for p in freq["cumulative_reach"]]}
    assert tab.series("chart-frequency") == {
        "x": [d["frequency"] for d in freq["distribution"]],
        "profiles": [d["profiles"] for d in freq["distribution"]]}
    funnel = ["impressions", "starts", "first_quartile", "midpoint", "third_quartile", "completes"]
    assert tab.series("chart-funnel") == {"x": funnel,
                                          "events": [day["totals"][m] for m in funnel]}
    for rate in ("vcr", "skip_rate", "ctr", "viewable_rate"):
        shown = tab.page.get_attribute(f"[data-kpi='{rate}']", "data-value")
        assert json.loads(shown) == day["totals"][rate], rate
    for by in ("device", "country", "creative", "break_position"):
        report = world.get(f"/v1/campaigns/{cid}/report?by={by}")
        assert tab.series(f"chart-by-{by}") == {
            "x": [str(r[by]) for r in report["rows"]],
            "impressions": [r["impressions"] for r in report["rows"]],
            "reach": [r["reach"] for r in report["rows"]]}, by
        suppressed = tab.page.query_selector_all(f"#table-by-{by} tr[data-suppressed=true]")
        assert len(suppressed) == (1 if report["suppressed_rows"] else 0), by
        if report["suppressed_rows"]:
            text = suppressed[0].inner_text()
            n = report["suppressed_rows"]
            # the advertiser's rows are released above the answer's own threshold (k raised
            # for the noise), and the page says that number, not k
            under = report["noise"]["row_threshold"]
            assert under > report["k"]
            assert f"suppressed ({n} {'row' if n == 1 else 'rows'} under {under:,} profiles" in text
            if report["suppressed"] is not None:
                assert f"{report['suppressed']['impressions']:,}" in text
    tab.shot("advertiser-campaign")
    tab.page.evaluate("window.scrollTo(0, 0)")
    tab.shot("advertiser-campaign-top", full_page=False)
    tab.shot("advertiser-campaign-effects", selector="section[aria-label='Content effects']")


def test_csv_download_holds_the_tables_rows(tab, world, tmp_path):
    tab.sign_in(world.advertiser_key)
    tab.wait_ready()
    tab.open(f"#/campaign/{world.own_campaign}")
    with tab.page.expect_download() as got:
        tab.page.click("button[data-csv='report-by-country.csv']")
    path = tmp_path / "country.csv"
    got.value.save_as(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header, body = reader.fieldnames, list(reader)
    report = world.get(f"/v1/campaigns/{world.own_campaign}/report?by=country")
    assert header[:3] == ["country", "impressions", "reach"]
    assert [(r["country"], int(r["impressions"])) for r in body[:len(report["rows"])]] == [
        (r["country"], r["impressions"]) for r in report["rows"]]
    # and the suppressed remainder, labelled, with what the API released of it
    assert len(body) == len(report["rows"]) + (1 if report["suppressed_rows"] else 0)
    if report["suppressed_rows"]:
        assert body[-1]["country"].startswith("suppressed (")
        # the remainder's noisy reach may itself fall under k: then nothing of it is released
        released = report["suppressed"]
        assert body[-1]["impressions"] == ("" if released is None
                                           else str(released["impressions"]))


def test_keyboard_alone_signs_in_and_moves_between_pages(tab, world):
    tab.page.goto(world.url + "/console")
    tab.page.wait_for_selector("body[data-started=true]")
    for _ in range(10):  # skip link, then on to the key field
        tab.page.keyboard.press("Tab")
        if tab.page.evaluate("document.activeElement.id") == "key":
            break
    assert tab.page.evaluate("document.activeElement.id") == "key"
    tab.page.keyboard.type(world.advertiser_key)
    tab.page.keyboard.press("Enter")
    tab.wait_ready()
    tab.page.focus("#nav a[data-page=segments]")
    tab.unready()
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_selector("#page[data-page=segments][data-ready=true]")
    assert tab.page.get_attribute("#nav a[data-page=segments]", "aria-current") == "page"


def test_a_date_range_asks_the_api_for_that_range(tab, world):
    cid = world.own_campaign
    # the world's whole span (a report without dates covers the flight only), exact numbers
    today = dt.date.today()
    span = f"from={today - dt.timedelta(days=14)}&to={today}"
    days = [r["day"] for r in
            world.get(f"/v1/campaigns/{cid}/report?by=day&{span}", world.admin_key)["rows"]]
    assert len(days) >= 4, days
    lo, hi = days[1], days[-2]
    tab.sign_in(world.advertiser_key)
    tab.wait_ready()
    tab.open(f"#/campaign/{cid}")
    tab.page.fill("#from", lo)
    tab.page.fill("#to", hi)
    tab.unready()
    tab.page.click("form[aria-label='Date range'] button[type=submit]")
    tab.wait_ready()
    assert f"from={lo}&to={hi}" in tab.page.evaluate("location.hash")
    report = world.get(f"/v1/campaigns/{cid}/report?by=day&from={lo}&to={hi}")
    assert tab.series("chart-daily")["x"] == [r["day"] for r in report["rows"]]
    assert tab.series("chart-daily")["impressions"] == [r["impressions"] for r in report["rows"]]
    device = world.get(f"/v1/campaigns/{cid}/report?by=device&from={lo}&to={hi}")
    assert tab.series("chart-by-device")["impressions"] == [
        r["impressions"] for r in device["rows"]]


def test_country_breakdown_has_suppressed_rows_in_this_world(world):
    """The suppressed-row assertions above are not vacuous: this world has small countries
    (exact counts; an advertiser's noisy rows pass or fold by chance, so they are not used)."""
    report = world.get(f"/v1/campaigns/{world.own_campaign}/report?by=country", world.admin_key)
    assert report["suppressed_rows"] > 0


def test_content_effects_are_labelled_by_kind(tab, world):
    tab.sign_in(world.advertiser_key)
    tab.wait_ready()
    tab.open(f"#/campaign/{world.promoted_campaign}")
    effects = world.get(f"/v1/campaigns/{world.promoted_campaign}/content-effects")
    kind = tab.page.inner_text("#effects-kind")
    if effects["kind"] == "observational":
        assert "observational" in kind and "not a causal lift" in kind
    else:
        assert "lift" in kind and "observational" not in kind
    if not effects["suppressed"]:
        estimates = effects.get("lift") or effects["difference"]
        assert tab.series("chart-effects") == {
            "x": [e["metric"] for e in estimates],
            "estimate": [e["estimate"] for e in estimates],
            "ci_low": [e["ci95"][0] for e in estimates],
            "ci_high": [e["ci95"][1] for e in estimates]}


def test_another_advertisers_campaign_is_not_reachable(tab, world):
    tab.allow(404)
    tab.sign_in(world.advertiser_key)
    tab.wait_ready()
    tab.open(f"#/campaign/{world.foreign_campaign}")
    assert "No campaign" in tab.page.inner_text("#not-found")
    assert tab.page.query_selector("#chart-daily") is None
    # and the operator pages are not offered to an advertiser key
    assert tab.page.query_selector("#nav a[data-page=ops]") is None
    tab.open("#/ops")
    assert "Not available" in tab.page.inner_text("#page h1")


def test_forecast_planner_draws_the_apis_curve(tab, world):
    tab.sign_in(world.advertiser_key)
    tab.wait_ready()
    tab.open("#/forecast")
    segment = world.segment_ids[1]
    tab.page.check(f"input[name=segment][value='{segment}']")
    tab.page.fill("#f-impressions", "2000")
    tab.page.fill("#f-frequency_cap", "3")
    tab.page.fill("#f-days", "7")
    tab.page.click("#forecast-form button[type=submit]")
    tab.page.wait_for_selector("#forecast-result[data-ready=true]", timeout=60_000)
    curve = tab.series("chart-forecast-curve")
    assert curve["x"] == [400, 800, 1200, 1600, 2000]
    for impressions, reach in zip(curve["x"], curve["reach"]):
        answer = httpx.post(world.url + "/v1/forecast/reach", timeout=60,
                            headers=world.headers(world.advertiser_key),
                            json={"segment_ids": [segment], "impressions": impressions,
                                  "frequency_cap": 3, "days": 7}).json()
        assert reach == answer["reach"], impressions
    assert "backtest error" in tab.page.inner_text("#forecast-model")
    tab.shot("advertiser-forecast")


def test_segments_page_and_overlap(tab, world):
    tab.sign_in(world.advertiser_key)
    tab.wait_ready()
    tab.open("#/segments")
    visible = world.get("/v1/segments")
    assert int(tab.page.get_attribute("#segments-table", "data-rows")) == len(visible)
    ids = [s["segment_id"] for s in visible if s["status"] == "ready"]
    overlap = world.get(f"/v1/segments/overlap?ids={','.join(ids)}")
    pairs = {(p["a"], p["b"]): p["intersection"] for p in overlap["pairs"]}
    pairs.update({(b, a): n for (a, b), n in pairs.items()})
    drawn = tab.series("chart-overlap")
    assert drawn["x"] == [s["segment_id"] for s in overlap["segments"]]
    assert drawn["z"] == [[pairs[(a, b)] for b in drawn["x"]] for a in drawn["x"]]
    tab.shot("advertiser-segments")


def test_a_wrong_key_is_told_so(tab, world):
    tab.sign_in("adt_not_a_real_key")
    message = tab.page.wait_for_selector("#sign-in-error:not(:empty)").inner_text()
    assert "not accepted" in message and "unknown or has been revoked" in message
    assert tab.page.is_hidden("#nav")
    tab.allow(401)


def test_a_key_of_another_role_is_told_what_the_console_needs(tab, world):
    key = httpx.post(world.url + "/v1/keys", headers=world.headers(world.admin_key),
                     json={"role": "recs"}).json()["key"]
    tab.sign_in(key)
    message = tab.page.wait_for_selector("#sign-in-error:not(:empty)").inner_text()
    assert "cannot use the console" in message and "advertiser or admin key" in message
    assert "not a recs key" in message
    tab.allow(403)


def test_admin_pipeline_pages_draw_the_apis_numbers(tab, world, valkey, clickhouse_dsn):
    batch_id = _ingest_one_good_one_bad(world, valkey, clickhouse_dsn)
    tab.sign_in(world.admin_key)
    tab.wait_ready()
    assert tab.page.evaluate("location.hash") == "#/ops"
    rate = world.get("/v1/ops/ingest?hours=24", world.admin_key)
    drawn = tab.series("chart-ingest")
    assert {f: sum(v) for f, v in drawn.items() if f != "x"} == rate["by_family"]
    assert drawn["x"] == sorted({p["at"] for p in rate["points"]})
    rejects = world.get("/v1/ops/rejects?hours=24", world.admin_key)
    assert rejects["total"] >= 1
    assert tab.series("chart-rejects") == {"x": [r["reason"] for r in rejects["reasons"]],
                                           "rejected": [r["count"] for r in rejects["reasons"]]}
    counts = world.get("/v1/ops/catalog", world.admin_key)["counts"]
    assert tab.series("chart-catalog") == {"x": list(counts), "count": list(counts.values())}
    for hours in (1, 168):
        tab.open(f"#/ops/{hours}")
        tab.series("chart-ingest")
    tab.shot("admin-pipeline")  # the week: the simulated world's days

    tab.open("#/keys")
    keys = world.get("/v1/keys", world.admin_key)
    assert int(tab.page.get_attribute("#keys-table", "data-rows")) == len(keys)
    tab.page.fill("#batch-id", batch_id)
    tab.page.click("#batch-form button[type=submit]")
    tab.page.wait_for_selector("#batch-result[data-ready=true]")
    assert "stored" in tab.page.inner_text("#batch-table")
    tab.shot("admin-keys")
    # the advertiser pages render for an admin too
    for page in ("campaigns", f"campaign/{world.own_campaign}", "segments", "forecast"):
        tab.open(f"#/{page}")


def _ingest_one_good_one_bad(world: ServedWorld, valkey, dsn: str) -> str:
    """A batch through the API and flushed (the app's flusher is off here), so the pipeline
    pages have a provenance record and a reject to show."""
    import redis

    from adtier.ingest.flusher import Flusher
    from adtier.store import connect

    admin = world.headers(world.admin_key)
    key = httpx.post(world.url + "/v1/keys", headers=admin, json={"role": "ingest"}).json()["key"]
    answer = httpx.post(world.url + "/v1/events", headers=world.headers(key), json=batch(
        [ad_event("impression"), ad_event("impression", device="toaster")])).json()
    assert answer["accepted"] == 1 and len(answer["rejected"]) == 1
    client = connect(dsn)
    try:
        Flusher(client, redis.Redis.from_url(valkey.url), consumer="browser-test").drain()
    finally:
        client.close()
    return answer["batch_id"]


def test_api_docs_render_offline(tab, world):
    tab.page.goto(world.url + "/docs")
    tab.page.wait_for_selector(".swagger-ui .information-container", timeout=30_000)
    tab.page.wait_for_selector(".swagger-ui .btn.authorize")  # the bearer scheme
    assert tab.page.query_selector("#operations-ingest-VastTrackingPixel") is not None
    tab.shot("api-docs", full_page=False)


# What an advertiser (or anyone who can name a catalog row) may write into a name, and what the
# console must show as plain text: never markup (plotly reads tags in its labels), never a
# formula in a downloaded CSV (a spreadsheet runs cells that start with = + - @).
_HOSTILE = ('<a href="https://evil.example/x">click</a><img src=x '
            'onerror="window.__pwned=1"></script>')
_FORMULA = '=HYPERLINK("https://evil.example/x","open")'


def _hostile_catalog(world: ServedWorld) -> tuple[str, str]:
    admin = world.headers(world.admin_key)
    campaign = {"campaign_id": "cmp-hostile", "advertiser_id": world.advertiser_id,
                "name": _FORMULA, "ad_category": "IAB2", "start_date": "2026-01-01",
                "end_date": "2026-12-31", "frequency_cap": 0, "holdout_percent": 0}
    answer = httpx.put(world.url + "/v1/catalog/campaigns", headers=admin,
                       json={"items": [campaign]})
    assert answer.status_code == 200, answer.text
    # the advertiser's own segment, built, so the overlap chart labels it
    mine = world.headers(world.advertiser_key)
    created = httpx.post(world.url + "/v1/segments", headers=mine, timeout=60, json={
        "name": _HOSTILE, "kind": "rule", "rule": {"all": [
            {"feature": "watch_minutes", "window_days": 30, "op": ">=", "value": 60}]}})
    assert created.status_code == 201, created.text
    segment_id = created.json()["segment_id"]
    assert httpx.post(f"{world.url}/v1/segments/{segment_id}/build", headers=mine,
                      timeout=60).status_code == 202
    deadline = time.monotonic() + 120
    while world.get(f"/v1/segments/{segment_id}")["status"] != "ready":
        assert time.monotonic() < deadline, "segment not built"
        time.sleep(0.2)
    return campaign["campaign_id"], segment_id


def _csv_cells(tab, selector: str, path) -> list[str]:
    with tab.page.expect_download() as got:
        tab.page.click(selector)
    got.value.save_as(path)
    with path.open(newline="") as f:
        return [cell for row in csv.reader(f) for cell in row]


@pytest.fixture(scope="module")
def hostile(world) -> tuple[str, str]:
    return _hostile_catalog(world)


def test_a_formula_in_a_name_is_text_in_the_downloaded_csv(tab, world, hostile, tmp_path):
    campaign_id, _ = hostile
    tab.sign_in(world.advertiser_key)
    tab.wait_ready()
    cells = _csv_cells(tab, "button[data-csv='campaigns.csv']", tmp_path / "campaigns.csv")
    assert campaign_id in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")], cells
    assert "'" + _FORMULA in cells  # kept whole, neutralised the way spreadsheets document


def test_markup_in_a_name_is_text_in_charts_and_tables(tab, world, hostile, tmp_path):
    tab.sign_in(world.advertiser_key)
    tab.wait_ready()
    tab.open("#/segments")
    tab.series("chart-overlap")
    chart = tab.page.locator("#chart-overlap")
    assert chart.locator("a").count() == 0  # no link the name smuggled in
    assert chart.locator("img").count() == 0
    assert "evil.example" in chart.text_content()  # drawn, as the text it is
    assert tab.page.evaluate("window.__pwned") is None
    assert _HOSTILE in tab.page.inner_text("#segments-table")
    cells = _csv_cells(tab, "button[data-csv='segment-overlap.csv']", tmp_path / "overlap.csv")
    assert _HOSTILE in cells


def test_the_key_never_reaches_a_url_even_before_the_scripts_run(chromium, world):
    """The sign-in form works without its script (a slow or blocked module, Enter pressed at
    once): a native submit must not put the key in the address, the history or a log."""
    page = chromium.new_page()
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url))
    page.route("**/console/static/js/**", lambda route: route.abort())
    try:
        page.goto(world.url + "/console")
        page.fill("#key", world.advertiser_key)
        page.press("#key", "Enter")
        page.wait_for_load_state()
        assert world.advertiser_key not in page.url
        assert not [u for u in sent if world.advertiser_key in u]
    finally:
        page.close()


def test_hostile_rejected_bytes_are_text_on_the_operator_page(tab, world, valkey, clickhouse_dsn):
    """Rejected pixels keep what the client sent (the query string): on the pipeline page it is
    shown as text, never markup, whatever it holds."""
    import redis

    from adtier.ingest.flusher import Flusher
    from adtier.store import connect

    admin = world.headers(world.admin_key)
    key = httpx.post(world.url + "/v1/keys", headers=admin, json={"role": "ingest"}).json()["key"]
    hostile = "<img src=x onerror=window.__pwned=1></pre><script>window.__pwned=2</script>"
    assert httpx.get(world.url + "/v1/px", params={"k": key, "e": hostile}).status_code == 200
    client = connect(clickhouse_dsn)
    try:
        Flusher(client, redis.Redis.from_url(valkey.url), consumer="browser-hostile").drain()
    finally:
        client.close()
    tab.sign_in(world.admin_key)
    tab.wait_ready()
    tab.open("#/ops/1")
    for details in tab.page.query_selector_all("#page details"):
        details.evaluate("d => { d.open = true; }")
    text = tab.page.inner_text("#page")
    assert "onerror=window.__pwned=1" in text  # the detail names the value, as text
    assert tab.page.query_selector("#page img, #page script") is None
    assert tab.page.evaluate("window.__pwned") is None
