"""The feature feed's schema is versioned: changing it must be deliberate."""

from __future__ import annotations

import pyarrow as pa
import pytest

from adtier.features.export import ColumnsError, select_columns
from adtier.features.live import parse_ad_rows
from adtier.features.schema import COLUMNS, EXPORT_SCHEMA, FEATURE_SCHEMA_VERSION, KEY_COLUMNS

PINNED_V2 = [
    ("profile_id", "string"), ("profile_sha256", "string"), ("deleted", "uint8"),
    ("schema_version", "uint16"), ("as_of", "date32[day]"), ("window_days", "uint16"),
    ("impressions", "uint32"), ("completes", "uint32"), ("skips", "uint32"),
    ("clicks", "uint32"), ("completion_rate", "float"), ("skip_propensity", "float"),
    ("ctr", "float"), ("ad_category_affinity", "map<string, float>"),
    ("watch_minutes", "float"), ("genre_affinity", "map<string, float>"),
    ("ratings", "uint32"), ("rating_sentiment", "float"), ("ad_fatigue", "float"),
    ("ad_sessions", "uint32"), ("post_ad_abandons", "uint32"), ("ad_load", "float"),
    ("ad_tolerance", "float"),
    ("computed_at", "timestamp[ms, tz=UTC]"), ("watermark", "uint64"),
]


def test_schema_v2_is_pinned():
    assert FEATURE_SCHEMA_VERSION == 2, "bump PINNED with the version"
    assert [(f.name, str(f.type)) for f in EXPORT_SCHEMA] == PINNED_V2
    assert EXPORT_SCHEMA.metadata == {b"adtier.schema_version": b"2"}
    assert all(definition for _, _, definition in COLUMNS)


def test_migration_columns_match_the_schema():
    from adtier.store.migrate import sql_dir

    text = (sql_dir() / "0006_features.sql").read_text()
    added = (sql_dir() / "0008_features_ad_tolerance.sql").read_text()
    for name, _, _ in COLUMNS:
        assert f"\n    {name} " in text or f"ADD COLUMN IF NOT EXISTS {name} " in added, name


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


def test_mirror_row_round_trips_and_follows_the_schema():
    import datetime as dt

    from adtier.features import mirror

    assert mirror.BATCH_NAMES == [n for n, _, _ in COLUMNS
                                  if n not in KEY_COLUMNS and n != "computed_at"]
    at = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
    values = list(range(len(mirror.BATCH_NAMES)))
    blob = mirror.encode_row(1_764_590_400_123_456_789, at, values)
    assert blob[:20] == b"01764590400123456789"  # fixed width: compares like the number
    computed_at, row = mirror.decode_row(blob)
    assert computed_at == at and list(row.values()) == values


def test_parse_stop_rows_decodes_only_content_stops():
    from adtier.features.live import parse_stop_rows

    block = (b'{"type":"content_heartbeat","ts":1.0,"profile_id":"p","session_id":"s"}\n'
             b'{"type":"content_stop","ts":2.5,"profile_id":"p","session_id":"s","x":1}\n')
    assert [(r.type, r.ts, r.session_id) for r in parse_stop_rows(block)] == [
        ("content_stop", 2.5, "s")]
    assert parse_stop_rows(block.split(b"\n")[0]) == []


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
