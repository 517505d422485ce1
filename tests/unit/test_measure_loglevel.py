"""The verification feed's keyed pseudonyms and batch conversion (no stores needed)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pyarrow as pa
import pytest

from adtier.measure import loglevel as LL


def test_pseudonym_is_hmac_sha256_under_the_advertisers_derived_key():
    secret = b"server-secret"
    derived = hmac.new(secret, b"adtier/log-level/v1/adv-1", hashlib.sha256).digest()
    assert LL.advertiser_key(secret, "adv-1") == derived
    expected = hmac.new(derived, b"pf-42", hashlib.sha256).hexdigest()
    assert LL.pseudonymise(derived, "pf-42") == expected
    assert len(expected) == 64
    # never the plain SHA-256 (what feature exports emit) nor the raw id
    assert expected != hashlib.sha256(b"pf-42").hexdigest()


@pytest.mark.parametrize("a,b", [("adv-1", "adv-2"), ("adv-1", "adv-10"), ("a", "A")])
def test_advertisers_get_unrelated_pseudonyms(a, b):
    secret = b"s"
    assert (LL.pseudonymise(LL.advertiser_key(secret, a), "pf-1")
            != LL.pseudonymise(LL.advertiser_key(secret, b), "pf-1"))


def test_a_batch_is_cast_to_the_schema_with_each_profile_hashed_once_per_value():
    key = LL.advertiser_key(b"s", "adv-1")
    n = 4
    ts = [dt.datetime(2026, 1, 2, 3, 4, 5, i * 1000) for i in range(n)]
    columns = [pa.array(ts, pa.timestamp("ms")), pa.array(["impression"] * n),
               pa.array([f"e{i}" for i in range(n)]), pa.array(["cmp"] * n),
               pa.array(["cr"] * n), pa.array([f"as{i}" for i in range(n)]), pa.array([""] * n),
               pa.array([1, None, 2, 3], pa.uint8()), pa.array(["pre", None, "mid", "post"]),
               pa.array([15000] * n, pa.uint32()), pa.array([None] * n, pa.uint32()),
               pa.array(["t"] * n), pa.array([None, None, None, 402], pa.uint16()),
               pa.array(["tv"] * n), pa.array(["US"] * n), pa.array(["batch"] * n),
               pa.array(["pf-a", "pf-b", "pf-a", "pf-c"])]
    batch = pa.RecordBatch.from_arrays(columns, names=[f"c{i}" for i in range(len(columns))])
    out = LL._pseudonymised(batch, key)
    assert out.schema == LL.SCHEMA
    hashed = out.column("hashed_profile_id").to_pylist()
    assert hashed == [LL.pseudonymise(key, p) for p in ("pf-a", "pf-b", "pf-a", "pf-c")]
    assert out.column("ts").type == pa.timestamp("ms", tz="UTC")
    assert out.column("break_position").to_pylist() == ["pre", None, "mid", "post"]
