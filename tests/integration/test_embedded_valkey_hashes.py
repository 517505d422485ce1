"""The embedded Valkey keeps small hashes compact but turns a large one into a hash table
before its linear scans cost much: the live counters' per-profile sessions hash gets one field
per session, and every HMGET/HSET on a listpack hash walks it (Valkey 9's default keeps up to
512 fields that way; docs/performance_ingest.md, "Valkey side")."""

from __future__ import annotations

import redis

from adtier.embedded_valkey import EmbeddedValkey


def test_large_hashes_are_hash_tables_small_ones_stay_compact(valkey: EmbeddedValkey) -> None:
    client = redis.Redis.from_url(valkey.url)
    try:
        client.delete("t:hash:small", "t:hash:sessions")
        client.hset("t:hash:small", mapping={f"impressions|cat-{i}": i for i in range(40)})
        client.hset("t:hash:sessions", mapping={f"s-{i}": 1.5 for i in range(200)})
        assert client.object("encoding", "t:hash:small") == b"listpack"
        assert client.object("encoding", "t:hash:sessions") == b"hashtable"
    finally:
        client.delete("t:hash:small", "t:hash:sessions")
        client.close()
