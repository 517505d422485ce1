"""Attacks from outside on the pixel, the VAST helper and the console's pages: what a hostile
or careless client sends, and what must still hold (secrets stay out of stored rows, documents
stay well-formed, pages carry their security headers)."""

from __future__ import annotations

from adtier.ingest.pixel import GIF


def test_a_percent_encoded_pixel_key_is_not_kept_in_rejected_events(api, flush, ch):
    """`%6B=` is `k=` once decoded: the pixel authenticates with it, so the copy of the query
    kept for a refused pixel must drop it too (the key would be readable on the operator page
    and by anyone with access to rejected_events)."""
    for name in ("%6B", "%6b", "k"):
        answer = api.client.get(f"/v1/px?{name}={api.ingest_key}&e=notAnEvent&cmp=cmp-1")
        assert answer.status_code == 200 and answer.content == GIF
    flush()
    rows = ch.query("SELECT reason, raw FROM rejected_events WHERE source = 'pixel'").result_rows
    assert [r[0] for r in rows] == ["unknown_type"] * 3  # every pixel kept, with its reason
    for _, raw in rows:
        assert api.ingest_key not in raw
        assert "cmp=cmp-1" in raw and "e=notAnEvent" in raw
