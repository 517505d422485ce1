"""HTTP mode: the simulated world sent through the real API, as players would send it.

The catalog (advertisers, campaigns, creatives, titles, profiles, opt-outs) is loaded through the
admin catalog API. Events go as JSON batches (``POST /v1/events`` with ``sent_at`` and an
``Idempotency-Key``), except the ad plays a player reports by VAST tracking pixels
(``GET /v1/px``). Like a real SDK it retries a 429/503/connection failure with the same key, and
on purpose it also:

- *replays* some batches with the same ``Idempotency-Key`` (a lost response): the server must
  answer the first answer again;
- *re-queues* some batches' events into a new request without the key (an SDK that persisted
  its queue and sent it again after a restart): the server must count them as duplicates;
- *re-fires* some pixels (a player firing a tracking URL twice): stored once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import numpy as np
import pyarrow as pa

from adtier.simulate import emit
from adtier.simulate.direct import run_id
from adtier.simulate.sessions import DayBlock, iterate_days
from adtier.simulate.truth import TruthRecorder
from adtier.simulate.world import World

__all__ = ["HttpOptions", "HttpResult", "SimulationHttpError", "load_catalog_http", "run_http",
           "wait_until_stored"]

Progress = Callable[[DayBlock], None]
_MAX_ITEMS = 10_000


class SimulationHttpError(RuntimeError):
    """The server refused something the simulator cannot fix by retrying."""


@dataclass
class HttpOptions:
    batch_size: int = 500
    pixel_permille: int = 50  # share of ad plays reported by pixels, per thousand
    replay_percent: float = 2.0  # batches retried with the same Idempotency-Key
    requeue_percent: float = 3.0  # batches whose events are sent again in a new request
    refire_percent: float = 2.0  # pixels fired twice
    concurrency: int = 4  # parallel requests (1 for a test client)
    max_attempts: int = 10
    max_retry_after_s: float = 5.0


@dataclass
class HttpResult:
    batches: int = 0
    batch_events: int = 0  # distinct events sent in batches
    pixel_events: int = 0  # distinct events sent as pixels
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[dict] = field(default_factory=list)
    replays: int = 0
    replay_mismatches: int = 0
    requeued_events: int = 0
    requeue_duplicates: int = 0
    refired_pixels: int = 0
    retries: int = 0
    pixel_failures: int = 0
    seconds: float = 0.0
    last_batch_id: str = ""

    @property
    def events(self) -> int:
        return self.batch_events + self.pixel_events

    def merge(self, other: HttpResult) -> None:
        for name in ("batches", "batch_events", "pixel_events", "accepted", "duplicates",
                     "rejected", "replays", "replay_mismatches", "requeued_events",
                     "requeue_duplicates", "refired_pixels", "retries", "pixel_failures"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejections.extend(other.rejections[: max(0, 20 - len(self.rejections))])
        self.last_batch_id = other.last_batch_id or self.last_batch_id


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _send(client: httpx.Client, method: str, url: str, options: HttpOptions, result: HttpResult,
          **kw) -> httpx.Response:
    """One request with the retries of a well-behaved client (same body, same headers)."""
    delay = 0.2
    for attempt in range(options.max_attempts):
        try:
            response = client.request(method, url, **kw)
        except httpx.TransportError:
            if attempt + 1 == options.max_attempts:
                raise
            result.retries += 1
            time.sleep(delay)
            delay = min(delay * 2, options.max_retry_after_s)
            continue
        if response.status_code in (429, 503) and attempt + 1 < options.max_attempts:
            result.retries += 1
            try:
                wait = float(response.headers.get("retry-after", delay))
            except ValueError:
                wait = delay
            time.sleep(min(wait, options.max_retry_after_s))
            delay = min(delay * 2, options.max_retry_after_s)
            continue
        return response
    raise SimulationHttpError(f"{method} {url}: no answer after {options.max_attempts} attempts")


def _check(response: httpx.Response, what: str) -> dict:
    if response.status_code in (401, 403):
        raise SimulationHttpError(
            f"{what}: {response.status_code} {response.text[:300]} - loading the catalog needs "
            "an admin key (--admin-key or ADTIER_ADMIN_KEY); sending events an ingest key")
    if response.status_code >= 400:
        raise SimulationHttpError(f"{what}: {response.status_code} {response.text[:500]}")
    return response.json()


def load_catalog_http(client: httpx.Client, world: World, admin_key: str,
                      options: HttpOptions | None = None) -> dict[str, int]:
    """The catalog, profiles and opt-outs through the admin API (parents before children)."""
    options = options or HttpOptions()
    result = HttpResult()
    headers = _bearer(admin_key)
    cat = world.catalog
    loaded: dict[str, int] = {}
    for kind, items in (("advertisers", cat.advertisers), ("campaigns", cat.campaigns),
                        ("creatives", cat.creatives), ("titles", cat.titles)):
        loaded[kind] = 0
        for start in range(0, len(items), _MAX_ITEMS):
            answer = _check(_send(client, "PUT", f"/v1/catalog/{kind}", options, result,
                                  json={"items": items[start:start + _MAX_ITEMS]},
                                  headers=headers), f"PUT /v1/catalog/{kind}")
            loaded[kind] += answer["upserted"]
    loaded["profiles"] = 0
    for start in range(0, world.n_profiles, _MAX_ITEMS):
        index = np.arange(start, min(world.n_profiles, start + _MAX_ITEMS))
        ids = world.profile_ids(index)
        accounts = [world.account_id(a) for a in world.account[index].tolist()]
        kinds = np.where(world.kids[index], "kids", "adult").tolist()
        items = [{"profile_id": p, "account_id": a, "kind": k}
                 for p, a, k in zip(ids.tolist(), accounts, kinds)]
        answer = _check(_send(client, "PUT", "/v1/profiles", options, result,
                              json={"items": items}, headers=headers), "PUT /v1/profiles")
        loaded["profiles"] += answer["upserted"]
    opted = world.profile_ids(np.nonzero(world.opted_out)[0]).tolist()
    loaded["opt_outs"] = 0
    for start in range(0, len(opted), _MAX_ITEMS):
        answer = _check(_send(client, "POST", "/v1/privacy/opt-out", options, result,
                              json={"profile_ids": opted[start:start + _MAX_ITEMS]},
                              headers=headers), "POST /v1/privacy/opt-out")
        loaded["opt_outs"] += answer["opted_out"]
    return loaded


def _slices(rows: pa.Array, size: int) -> tuple[memoryview, np.ndarray, list[tuple[int, int]]]:
    """The raw bytes of ``rows`` and [start, end) event ranges of ``size``."""
    n = len(rows)
    offsets = np.frombuffer(rows.buffers()[1], np.int32)[rows.offset: rows.offset + n + 1]
    data = memoryview(rows.buffers()[2]) if n else memoryview(b"")
    return data, offsets, [(a, min(n, a + size)) for a in range(0, n, size)]


def _body(data: memoryview, offsets: np.ndarray, a: int, b: int) -> bytes:
    # every row ends with a comma; the last one's is dropped
    events = data[offsets[a]: offsets[b] - 1]
    return b'{"sent_at":%d,"events":[' % (time.time_ns() // 1_000_000) + bytes(events) + b"]}"


def _post_batch(client: httpx.Client, options: HttpOptions, headers: dict[str, str],
                data: memoryview, offsets: np.ndarray, a: int, b: int, idem: str,
                replay: bool, requeue: bool) -> HttpResult:
    result = HttpResult()
    body = _body(data, offsets, a, b)
    sent = {**headers, "Content-Type": "application/json", "Idempotency-Key": idem}
    answer = _check(_send(client, "POST", "/v1/events", options, result, content=body,
                          headers=sent), "POST /v1/events")
    result.batches += 1
    result.batch_events += b - a
    result.accepted += answer["accepted"]
    result.duplicates += answer["duplicates"]
    result.rejected += len(answer["rejected"])
    result.rejections.extend(answer["rejected"][:20])
    result.last_batch_id = answer["batch_id"]
    if replay:  # the response was "lost": the same request again
        again = _check(_send(client, "POST", "/v1/events", options, result, content=body,
                             headers=sent), "POST /v1/events (replay)")
        result.replays += 1
        result.replay_mismatches += int(again != answer)
    if requeue:  # the same events once more, in a new request without the key
        fresh = {**headers, "Content-Type": "application/json"}
        again = _check(_send(client, "POST", "/v1/events", options, result,
                             content=_body(data, offsets, a, b), headers=fresh),
                       "POST /v1/events (requeue)")
        result.requeued_events += b - a
        result.requeue_duplicates += again["duplicates"]
        result.duplicates += again["duplicates"]
        result.accepted += again["accepted"]
    return result


def _fire_pixels(client: httpx.Client, options: HttpOptions, key: str, queries: list[str],
                 refire: np.ndarray) -> HttpResult:
    result = HttpResult()
    for query, twice in zip(queries, refire.tolist()):
        for _ in range(2 if twice else 1):
            response = _send(client, "GET", f"/v1/px?k={key}&{query}", options, result)
            if response.status_code != 200:
                result.pixel_failures += 1
        result.pixel_events += 1
        result.refired_pixels += int(twice)
    return result


def run_http(world: World, client: httpx.Client, key: str, options: HttpOptions | None = None,
             truth: TruthRecorder | None = None, progress: Progress | None = None) -> HttpResult:
    """Send every block of the world; returns what the server answered."""
    options = options or HttpOptions()
    rid = run_id(world)
    headers = _bearer(key)
    total = HttpResult()
    started = time.perf_counter()
    pool = ThreadPoolExecutor(options.concurrency) if options.concurrency > 1 else None
    try:
        for state, block in iterate_days(world):
            rows, pixels = emit.block_json(world, block, options.pixel_permille)
            queries = emit.pixel_queries(world, block, pixels).to_pylist() if pixels.any() else []
            data, offsets, ranges = _slices(rows, options.batch_size)
            rng = np.random.default_rng([world.seed, 3, block.chunk, block.day])
            replay = rng.random(len(ranges)) * 100 < options.replay_percent
            requeue = rng.random(len(ranges)) * 100 < options.requeue_percent
            refire = rng.random(len(queries)) * 100 < options.refire_percent
            tasks = [(_post_batch, client, options, headers, data, offsets, a, b,
                      f"sim-{rid}-{block.chunk}-{block.day}-{i}", bool(replay[i]), bool(requeue[i]))
                     for i, (a, b) in enumerate(ranges)]
            per_task = max(1, -(-len(queries) // max(1, 4 * options.concurrency)))
            tasks += [(_fire_pixels, client, options, key, queries[i:i + per_task],
                       refire[i:i + per_task]) for i in range(0, len(queries), per_task)]
            if pool is None:
                results = [task[0](*task[1:]) for task in tasks]
            else:
                results = list(pool.map(lambda task: task[0](*task[1:]), tasks))
            for r in results:
                total.merge(r)
            if truth is not None:
                truth.add(block)
                if block.day == world.days - 1:
                    truth.finish_chunk(state)
            if progress is not None:
                progress(block)
    finally:
        if pool is not None:
            pool.shutdown()
    total.seconds = time.perf_counter() - started
    return total


def wait_until_stored(client: httpx.Client, timeout: float = 300.0) -> bool:
    """Wait until the server's buffer is empty (every accepted event is in ClickHouse)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ready = client.get("/readyz")
            if ready.status_code == 200 and ready.json().get("buffer_lag_events", 1) == 0:
                return True
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    return False
