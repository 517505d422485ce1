"""Every feature export (HTTP) and computation writes an audit record: who, what, when, row
count and the SHA-256 of exactly what was answered."""

from __future__ import annotations

import hashlib
import json

import pytest

from adtier.features import batch as features_batch
from tests.conftest import wait_until
from tests.integration.test_features_http import ad_play, seed, send


def audit_rows(ch, endpoint: str) -> list[dict]:
    return list(ch.query(
        "SELECT key_id, role, endpoint, method, parameters, status, row_count, answer_sha256, ts "
        "FROM audit_log WHERE endpoint = {e:String} ORDER BY ts",
        parameters={"e": endpoint}).named_results())


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_http_export_is_audited_with_the_hash_of_the_body(api, flush, ch, rds, fmt):
    created = api.client.post("/v1/keys", json={"role": "recs", "name": "recs"},
                              headers=api.admin).json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    seed(api)
    send(api, ad_play("pf-1", "as-1") + ad_play("pf-2", "as-2"))
    flush()
    features_batch.compute(ch, redis_client=rds)
    answer = api.client.get("/v1/features/export", params={"format": fmt, "columns": "ctr"},
                            headers=headers)
    assert answer.status_code == 200
    rows = wait_until(lambda: audit_rows(ch, "features_export"))
    assert len(rows) == 1
    row = rows[0]
    assert (row["key_id"], row["role"], row["status"]) == (created["key_id"], "recs", 200)
    assert row["row_count"] == int(answer.headers["x-adtier-rows"]) == 2
    assert row["answer_sha256"] == hashlib.sha256(answer.content).hexdigest()
    params = json.loads(row["parameters"])
    assert params == {"since": 0, "watermark": int(answer.headers["x-adtier-watermark"]),
                      "format": fmt, "columns": "ctr"}


def test_compute_is_audited_whoever_starts_it(api, flush, ch, rds):
    seed(api)
    send(api, ad_play("pf-1", "as-1"))
    flush()
    assert api.client.post("/v1/features/compute", headers=api.admin).status_code == 202
    rows = wait_until(lambda: audit_rows(ch, "features_compute"))
    status = wait_until(lambda: (s := api.client.get("/v1/features/compute",
                                                     headers=api.admin).json())
                        and not s["running"] and s)
    row = rows[0]
    assert (row["key_id"], row["role"], row["method"], row["status"]) == \
        ("admin-env", "admin", "POST", 200)
    assert row["row_count"] == status["last"]["written"] == 1
    assert len(row["answer_sha256"]) == 64
    assert json.loads(row["parameters"])["watermark"] == status["last"]["watermark"]
