"""Direct mode: large volumes straight into ClickHouse, bypassing HTTP and the buffer.

The catalog goes in through the catalog store (the same code as the admin API), profiles in one
Arrow insert. Events are built per (chunk, day) block as Arrow tables and inserted with
``insert_arrow`` by a writer thread while the next block is generated (chdb and NumPy release
the GIL, so the two overlap on two cores). Every block carries a deduplication token made from
the run's parameters, so running the same simulation twice stores its events once.
Given an ``Ordinals`` allocator, each ad block first takes its profiles' ordinals, as the
flusher does (``ingest/ordinals.py``); without one the events carry none and campaign reports
answer from the per-profile rollup instead of the bitmaps.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import msgspec
import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from adtier.ingest.ordinals import Ordinals
from adtier.simulate import emit
from adtier.simulate.ids import arrow_strings
from adtier.simulate.sessions import DayBlock, iterate_days
from adtier.simulate.truth import TruthRecorder
from adtier.simulate.world import World

__all__ = ["DirectResult", "load_catalog_direct", "run_direct", "run_id"]

Progress = Callable[[DayBlock], None]


@dataclass
class DirectResult:
    ad_rows: int
    content_rows: int
    blocks: int
    seconds: float
    already_stored: int = 0  # blocks of this same simulation found stored before the run

    @property
    def events(self) -> int:
        return self.ad_rows + self.content_rows


def run_id(world: World) -> str:
    """A short id of what is simulated (seed, size, window): names batches and dedup tokens."""
    text = f"{world.seed}/{world.n_profiles}/{world.days}/{world.start.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def load_catalog_direct(client: Client, world: World) -> dict[str, int]:
    """Advertisers, campaigns, creatives, titles (catalog store), profiles and opt-outs."""
    from adtier.catalog import store
    from adtier.catalog.models import Advertiser, Campaign, Creative, Title

    cat = world.catalog
    loaded = {}
    for kind, model, items in (("advertisers", Advertiser, cat.advertisers),
                               ("campaigns", Campaign, cat.campaigns),
                               ("creatives", Creative, cat.creatives),
                               ("titles", Title, cat.titles)):
        structs = msgspec.convert(items, list[model])
        loaded[kind] = store.upsert(client, store.CATALOG[kind], structs)
    n = world.n_profiles
    now = datetime.now(timezone.utc)
    profiles = pa.table({
        "profile_id": arrow_strings(world.profile_id_matrix(np.arange(n))),
        "account_id": arrow_strings(world.account_id_matrix(world.account)),
        "kind": emit._dict(world.kids.astype(np.int32), ["adult", "kids"]),
        "updated_at": pa.array(np.full(n, int(now.timestamp() * 1000), np.int64), emit._TS),
        "version": pa.array(np.full(n, time.time_ns(), np.uint64)),
    })
    client.insert_arrow("profiles", profiles)
    loaded["profiles"] = n
    opted = world.profile_ids(np.nonzero(world.opted_out)[0]).tolist()
    loaded["opt_outs"] = store.record_optouts(client, opted)[0] if opted else 0
    return loaded


def _batch_row(batch_id: str, block: DayBlock, received_ms: int) -> bytes:
    return msgspec.json.encode({
        "batch_id": batch_id, "key_id": emit.KEY_ID, "source": emit.SOURCE,
        "received_at": received_ms / 1000, "sent_at": None, "body_sha256": "",
        "events": block.n_events, "accepted": block.n_events, "duplicates": 0, "rejected": 0,
    }) + b"\n"


def run_direct(world: World, client: Client, truth: TruthRecorder | None = None,
               progress: Progress | None = None, queue_depth: int = 2,
               tag: str = "", ordinals: Ordinals | None = None) -> DirectResult:
    """Generate every block and insert it; returns the rows inserted. ``progress`` is called
    (from the writer thread) after each block is stored. ``tag`` (if any) makes this run's
    batch ids and deduplication tokens distinct from another run of the same simulation."""
    rid = run_id(world) + (f"-{tag}" if tag else "")
    started = time.perf_counter()
    already = int(client.query(
        "SELECT count() FROM ingest_batches WHERE startsWith(batch_id, {p:String})",
        parameters={"p": f"sim-{rid}-"}).result_rows[0][0])
    work: queue.Queue = queue.Queue(maxsize=queue_depth)
    failure: list[BaseException] = []
    totals = {"ad": 0, "content": 0, "blocks": 0}

    def writer() -> None:
        while True:
            item = work.get()
            if item is None:
                return
            if failure:
                continue  # drain: the producer stops at its next put
            token, ad, content, batch, block = item
            try:
                if ordinals is not None and ad.num_rows:
                    ad = ad.append_column("profile_ord", ordinals.column(
                        ad.column("profile_id"), token=f"{token}-o"))
                for table_name, table, suffix in (("ad_events", ad, "a"),
                                                  ("content_events", content, "c")):
                    if table.num_rows:
                        client.insert_arrow(table_name, table, settings={
                            "insert_deduplication_token": f"{token}-{suffix}"})
                client.raw_insert("ingest_batches", insert_block=batch, fmt="JSONEachRow",
                                  settings={"insert_deduplication_token": f"{token}-b"})
                totals["ad"] += ad.num_rows
                totals["content"] += content.num_rows
                totals["blocks"] += 1
                if progress is not None:
                    progress(block)
            except BaseException as err:  # noqa: BLE001 - reported by the producer
                failure.append(err)

    thread = threading.Thread(target=writer, name="adtier-simulate-writer", daemon=True)
    thread.start()
    try:
        for state, block in iterate_days(world):
            if failure:
                break
            batch_id = f"sim-{rid}-{block.chunk:04d}-{block.day:02d}"
            ad = emit.ad_table(world, block, batch_id)
            content = emit.content_table(world, block, batch_id)
            received = int(block.ad.ts.max(initial=world.start_ms)) + 1_200
            work.put((f"sim-{rid}-{block.chunk}-{block.day}", ad, content,
                      _batch_row(batch_id, block, received), block))
            if truth is not None:
                truth.add(block)
                if block.day == world.days - 1:
                    truth.finish_chunk(state)
    finally:
        work.put(None)
        thread.join()
    if failure:
        raise failure[0]
    return DirectResult(totals["ad"], totals["content"], totals["blocks"],
                        time.perf_counter() - started, already)
