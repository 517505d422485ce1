"""Key management: created keys work at once, revoked keys stop working, secrets stored hashed;
verifier keys are bound to one advertiser, from the API and from ``adtier keys create``."""

from __future__ import annotations

import json

from adtier import auth, cli
from tests.helpers import ad_event, batch


def test_create_use_revoke(api, ch, monkeypatch):
    monkeypatch.setattr(auth, "CACHE_SECONDS", 0.0)
    created = api.client.post("/v1/keys", json={"role": "ingest", "name": "web"}, headers=api.admin)
    assert created.status_code == 201
    body = created.json()
    assert body["role"] == "ingest" and body["key"].startswith("adt_")
    headers = {"Authorization": f"Bearer {body['key']}"}
    assert api.client.post("/v1/events", json=batch([ad_event()]), headers=headers).status_code == 200
    stored = ch.query("SELECT key_hash FROM api_keys FINAL WHERE key_id = {k:String}",
                      parameters={"k": body["key_id"]}).result_rows
    assert stored == [(auth.hash_key(body["key"]),)]  # never the secret itself
    listed = api.client.get("/v1/keys", headers=api.admin).json()
    assert body["key_id"] in [k["key_id"] for k in listed]
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert api.client.delete(f"/v1/keys/{body['key_id']}", headers=api.admin).status_code == 204
    assert api.client.post("/v1/events", json=batch([]), headers=headers).status_code == 401
    assert api.client.delete(f"/v1/keys/{body['key_id']}", headers=api.admin).status_code == 404


def test_key_requests_are_validated(api):
    bad_role = api.client.post("/v1/keys", json={"role": "root"}, headers=api.admin)
    assert bad_role.status_code == 400
    no_adv = api.client.post("/v1/keys", json={"role": "advertiser"}, headers=api.admin)
    assert no_adv.status_code == 400 and "advertiser_id" in no_adv.json()["detail"]
    adv = api.client.post("/v1/keys", json={"role": "advertiser", "advertiser_id": "adv-1"},
                          headers=api.admin)
    assert adv.status_code == 201 and adv.json()["advertiser_id"] == "adv-1"
    not_admin = api.client.post("/v1/keys", json={"role": "ingest"}, headers=api.ingest)
    assert not_admin.status_code == 403
    assert not_admin.json()["detail"] == "this endpoint needs an admin key, not an ingest key"


def test_verifier_keys_are_bound_to_one_advertiser(api):
    unbound = api.client.post("/v1/keys", json={"role": "verifier"}, headers=api.admin)
    assert unbound.status_code == 400
    assert unbound.json()["detail"] == "a verifier key needs advertiser_id"
    bound_ingest = api.client.post("/v1/keys", json={"role": "ingest", "advertiser_id": "adv-1"},
                                   headers=api.admin)
    assert bound_ingest.status_code == 400 and "advertiser_id" in bound_ingest.json()["detail"]
    made = api.client.post("/v1/keys", headers=api.admin, json={
        "role": "verifier", "advertiser_id": "adv-1", "name": "ias"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["role"] == "verifier" and body["advertiser_id"] == "adv-1"
    listed = {k["key_id"]: k for k in api.client.get("/v1/keys", headers=api.admin).json()}
    assert listed[body["key_id"]]["role"] == "verifier"
    assert listed[body["key_id"]]["advertiser_id"] == "adv-1"
    # only an admin makes one, not the advertiser it verifies
    adv = api.client.post("/v1/keys", json={"role": "advertiser", "advertiser_id": "adv-1"},
                          headers=api.admin).json()["key"]
    own = api.client.post("/v1/keys", json={"role": "verifier", "advertiser_id": "adv-1"},
                          headers={"Authorization": f"Bearer {adv}"})
    assert own.status_code == 403
    assert own.json()["detail"] == "this endpoint needs an admin key, not an advertiser key"


def test_cli_creates_a_verifier_key_the_server_accepts(api, settings, tmp_path, monkeypatch,
                                                       capsys):
    # the CLI in this process, on the test's stores (a server's URLs, as on a fleet)
    monkeypatch.setenv("ADTIER_CLICKHOUSE_URL", settings.clickhouse_url)
    monkeypatch.setenv("ADTIER_REDIS_URL", settings.redis_url)
    parser = cli.build_parser()
    run = lambda *argv: cli.cmd_keys(parser.parse_args(  # noqa: E731
        ["--data-dir", str(tmp_path / "cli"), "keys", *argv]))
    assert run("create", "verifier", "--advertiser-id", "adv-v", "--name", "dv") == 0
    created = json.loads(capsys.readouterr().out)
    assert created["role"] == "verifier" and created["advertiser_id"] == "adv-v"
    assert run("create", "verifier") == 2
    assert "verifier key needs advertiser_id" in capsys.readouterr().err
    assert run("create", "root") == 2
    assert "verifier" in capsys.readouterr().err  # the roles it may be
    # the server knows the key at once: a verifier of adv-v, refused elsewhere by role
    refused = api.client.get("/v1/segments", headers={"Authorization": f"Bearer {created['key']}"})
    assert refused.status_code == 403
    assert refused.json()["detail"] == "this endpoint needs an advertiser or admin key, " \
        "not a verifier key"


def test_ops_endpoints(api):
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["redis"] == "ok" and ready["clickhouse"] == "ok"
    api.post_events(batch([ad_event()]))
    metrics = api.client.get("/metrics").text
    for name in ("adtier_events_accepted_total", "adtier_events_rejected_total",
                 "adtier_events_duplicate_total", "adtier_buffer_lag_events", "adtier_flush_seconds"):
        assert name in metrics
    assert 'adtier_events_accepted_total{type="impression"}' in metrics
    assert api.client.get("/docs/openapi.json").status_code == 200
    missing = api.client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
