"""The feature feed's schema is versioned: changing it must be deliberate."""

from __future__ import annotations

import pyarrow as pa
import pytest

from adtier.features.export import ColumnsError, select_columns
from adtier.features.live import parse_ad_rows
from adtier.features.schema import COLUMNS, EXPORT_SCHEMA, FEATURE_SCHEMA_VERSION

PINNED_V1 = [
    ("profile_id", "string"), ("profile_sha256", "string"), ("deleted", "uint8"),
    ("schema_version", "uint16"), ("as_of", "date32[day]"), ("window_days", "uint16"),
    ("impressions", "uint32"), ("completes", "uint32"), ("skips", "uint32"),
    ("clicks", "uint32"), ("completion_rate", "float"), ("skip_propensity", "float"),
    ("ctr", "float"), ("ad_category_affinity", "map<string, float>"),
    ("watch_minutes", "float"), ("genre_affinity", "map<string, float>"),
    ("ratings", "uint32"), ("rating_sentiment", "float"), ("ad_fatigue", "float"),
    ("computed_at", "timestamp[ms, tz=UTC]"), ("watermark", "uint64"),
]


def test_schema_v1_is_pinned():
    assert FEATURE_SCHEMA_VERSION == 1, "bump PINNED with the version"
    assert [(f.name, str(f.type)) for f in EXPORT_SCHEMA] == PINNED_V1
    assert EXPORT_SCHEMA.metadata == {b"adtier.schema_version": b"1"}
    assert all(definition for _, _, definition in COLUMNS)


def test_migration_columns_match_the_schema():
    from adtier.store.migrate import sql_dir

    text = (sql_dir() / "0006_features.sql").read_text()
    for name, _, _ in COLUMNS:
        assert f"\n    {name} " in text, name


@pytest.mark.parametrize(("asked", "want"), [
    (None, [name for name, _, _ in COLUMNS]),
    ("", [name for name, _, _ in COLUMNS]),
    ("ctr, impressions", ["profile_id", "profile_sha256", "deleted", "impressions", "ctr",
                          "watermark"]),
])
def test_select_columns(asked, want):
    assert select_columns(asked) == want


def test_select_columns_rejects_unknown():
    with pytest.raises(ColumnsError, match="nope"):
        select_columns("ctr,nope")


def test_parse_ad_rows_reads_only_what_counters_need():
    block = (b'{"event_id":"e1","type":"impression","ts":1700000000.5,"profile_id":"p",'
             b'"campaign_id":"c","creative_id":"cr","pod_id":"x","ad_duration_ms":null}\n'
             b'{"event_id":"e2","type":"click","ts":1700000001,"profile_id":"p",'
             b'"campaign_id":"c","creative_id":"cr"}\n')
    rows = parse_ad_rows(block)
    assert [(r.type, r.ts, r.profile_id, r.campaign_id) for r in rows] == [
        ("impression", 1700000000.5, "p", "c"), ("click", 1700000001.0, "p", "c")]
    assert parse_ad_rows(b"") == []
    assert isinstance(EXPORT_SCHEMA.field("watermark").type, pa.DataType)
