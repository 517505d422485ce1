"""The console's server side: its page and assets are all local, the read endpoints it added
(campaign list, operator views) keep the API's rules, and the API docs are complete offline."""

from __future__ import annotations

import re

import pytest

from tests.helpers import ad_event, batch, content_event


def _advertiser(api, advertiser_id: str) -> dict[str, str]:
    key = api.client.post("/v1/keys", headers=api.admin, json={
        "role": "advertiser", "advertiser_id": advertiser_id}).json()["key"]
    return {"Authorization": f"Bearer {key}"}


def _catalog(api) -> None:
    put = api.client.put
    assert put("/v1/catalog/advertisers", headers=api.admin, json={"items": [
        {"advertiser_id": "adv-a", "name": "A"}, {"advertiser_id": "adv-b", "name": "B"}]}
               ).status_code == 200
    campaigns = [{"campaign_id": cid, "advertiser_id": adv, "name": cid, "ad_category": "IAB2",
                  "start_date": "2026-01-01", "end_date": "2026-12-31", "frequency_cap": 0,
                  "holdout_percent": 0} for cid, adv in
                 (("cmp-a1", "adv-a"), ("cmp-a2", "adv-a"), ("cmp-b1", "adv-b"))]
    answer = put("/v1/catalog/campaigns", headers=api.admin, json={"items": campaigns})
    assert answer.status_code == 200, answer.text


def test_campaign_list_is_scoped_to_the_keys_advertiser(api):
    _catalog(api)
    own = api.client.get("/v1/campaigns", headers=_advertiser(api, "adv-a"))
    assert own.status_code == 200, own.text
    assert sorted(c["campaign_id"] for c in own.json()["items"]) == ["cmp-a1", "cmp-a2"]
    everything = api.client.get("/v1/campaigns", headers=api.admin).json()["items"]
    assert sorted(c["campaign_id"] for c in everything) == ["cmp-a1", "cmp-a2", "cmp-b1"]
    refused = api.client.get("/v1/campaigns", headers=api.ingest)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert api.client.get("/v1/campaigns").status_code == 401


def test_whoami_names_the_console_roles_key(api):
    me = api.client.get("/v1/whoami", headers=_advertiser(api, "adv-a")).json()
    assert me["role"] == "advertiser" and me["advertiser_id"] == "adv-a"
    assert me["key_id"].startswith("key_") and "key" not in me
    assert api.client.get("/v1/whoami", headers=api.admin).json()["role"] == "admin"
    refused = api.client.get("/v1/whoami", headers=api.ingest)
    assert refused.status_code == 403
    assert refused.json()["detail"] == ("this endpoint needs an advertiser or admin key, "
                                        "not an ingest key")
    wrong = api.client.get("/v1/whoami", headers={"Authorization": "Bearer adt_nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"


def test_operator_views_count_what_was_ingested_and_rejected(api, flush):
    events = [ad_event("impression"), ad_event("impression"), ad_event("start"),
              content_event("content_start")]
    bad = ad_event("impression", device="toaster")
    answer = api.post_events(batch([*events, bad])).json()
    assert answer["accepted"] == 4 and len(answer["rejected"]) == 1
    flush()
    rate = api.client.get("/v1/ops/ingest?hours=1", headers=api.admin)
    assert rate.status_code == 200, rate.text
    body = rate.json()
    assert body["bucket_seconds"] == 60
    assert body["by_type"] == {"impression": 2, "start": 1, "content_start": 1}
    assert body["by_family"] == {"impressions": 2, "quartiles": 1, "viewing": 1}
    assert sum(p["events"] for p in body["points"]) == 4
    rejects = api.client.get("/v1/ops/rejects?hours=1", headers=api.admin).json()
    assert rejects["total"] == 1
    (reason,) = rejects["reasons"]
    assert reason["count"] == 1 and reason["reason"] == answer["rejected"][0]["reason"]
    assert "toaster" in reason["examples"][0]["raw"]
    assert reason["examples"][0]["batch_id"] == answer["batch_id"]
    pipeline = api.client.get("/v1/ops/pipeline", headers=api.admin).json()
    assert pipeline["lag_events"] == 0
    assert any(c["name"] == "test-flusher" for c in pipeline["consumers"])
    assert pipeline["counters"]["accepted"]["impression"] >= 2
    _catalog(api)
    counts = api.client.get("/v1/ops/catalog", headers=api.admin).json()["counts"]
    assert counts["advertisers"] == 2 and counts["campaigns"] == 3
    for path in ("/v1/ops/ingest", "/v1/ops/rejects", "/v1/ops/pipeline", "/v1/ops/catalog"):
        refused = api.client.get(path, headers=_advertiser(api, "adv-a"))
        assert refused.status_code == 403, path


def test_pipeline_before_any_flusher_shows_the_buffered_entry_and_no_consumer(api):
    """No flusher has read the stream yet (no consumer group): the entry is counted, and the
    consumer list is empty rather than an error."""
    answer = api.post_events(batch([ad_event("impression"), ad_event("start")]))
    assert answer.status_code == 200, answer.text
    pipeline = api.client.get("/v1/ops/pipeline", headers=api.admin)
    assert pipeline.status_code == 200, pipeline.text
    body = pipeline.json()
    assert body["lag_events"] == 2 and body["stream_entries"] == 1
    assert body["consumers"] == []


def _local_urls(html: str) -> list[str]:
    urls = [u for u in re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
            if not u.startswith("#")]
    assert urls, html[:500]
    for url in urls:
        assert url.startswith("/"), f"{url} is not served by adtier"
    return urls


def test_console_page_loads_only_local_assets(api):
    page = api.client.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for url in _local_urls(page.text):
        assert api.client.get(url).status_code == 200, url
    plotly = api.client.get("/console/vendor/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000


def test_swagger_docs_are_served_offline(api):
    page = api.client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    for url in _local_urls(page.text):
        assert api.client.get(url).status_code == 200, url


@pytest.fixture
def openapi(api) -> dict:
    return api.client.get("/docs/openapi.json").json()


def test_openapi_documents_bodies_auth_errors_and_the_pixel(openapi):
    assert openapi["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "an API key (`adtier keys create`)"}
    assert openapi["security"] == [{"bearer": []}]
    no_body = {("post", "/v1/segments/{segment_id}/build"), ("post", "/v1/features/compute")}
    writes = [(m, p) for p, item in openapi["paths"].items() for m in item
              if m in ("post", "put")]
    assert len(writes) >= 12
    for method, path in writes:
        if (method, path) not in no_body:
            assert "requestBody" in openapi["paths"][path][method], (method, path)
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert openapi["components"]["schemas"]["ErrorBody"]["required"] == ["error", "detail"]
    for path, item in openapi["paths"].items():
        for method, op in item.items():
            for code, answer in op["responses"].items():
                if int(code) >= 400:
                    assert answer["content"]["application/json"]["schema"] == error, (
                        method, path, code)
            if int(next(iter(op["responses"]))) < 300 and path != "/metrics":
                first = op["responses"][next(iter(op["responses"]))]
                assert "content" in first or method == "delete", (method, path)
    pixel = openapi["paths"]["/v1/px"]["get"]
    assert {p["name"] for p in pixel["parameters"]} >= {"k", "e", "asid", "cmp", "bp", "ts"}
    assert pixel["security"] == [{"pixel_key": []}]
    assert openapi["paths"]["/healthz"]["get"]["security"] == []
    report = openapi["paths"]["/v1/campaigns/{campaign_id}/report"]["get"]
    ref = report["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    answer = openapi["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"rows", "totals", "suppressed_rows", "suppressed"} <= set(answer["properties"])
    assert set(report["responses"]) >= {"200", "400", "401", "403", "404", "503"}
    feed = openapi["paths"]["/v1/campaigns/{campaign_id}/log-level"]["get"]["responses"]["200"]
    assert list(feed["content"]) == ["application/vnd.apache.parquet"]
