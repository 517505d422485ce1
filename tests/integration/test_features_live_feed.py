"""The live counters counted in a child process (``LiveFeed``): real chDB, Valkey and child."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from prometheus_client import REGISTRY

from adtier.features.live import Lookups
from adtier.features.live_feed import LiveFeed
from adtier.ingest.flusher import Flusher
from adtier.store import connect
from tests.conftest import wait_until
from tests.helpers import ad_event, batch, content_event, now_ms
from tests.integration.test_features_live import read

CAMPAIGN = {
    "campaign_id": "cmp-1", "advertiser_id": "adv-1", "name": "Spring launch",
    "ad_category": "IAB18", "start_date": "2025-03-01", "end_date": "2035-03-31",
    "frequency_cap": 3, "holdout_percent": 0.0,
}


@pytest.fixture
def feed(valkey) -> Iterator[LiveFeed]:
    feed = LiveFeed(valkey.url, restart_backoff_s=0.0)
    yield feed
    feed.close(timeout=10)


@pytest.fixture
def flush_to(settings, ch, rds: redis.Redis):
    """A flusher whose stored blocks feed ``feed`` (as the serving process wires it)."""
    client = connect(settings.clickhouse_dsn)

    def make(feed: LiveFeed) -> Flusher:
        return Flusher(client, rds, consumer="test-flusher", max_rows=50_000, max_seconds=0.2,
                       on_stored=feed.hook(rds, client))

    yield make
    client.close()


def send(api, events: list[dict]) -> None:
    answer = api.post_events(batch(events))
    assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text


def counted(valkey, profile: str) -> int:
    return read(valkey.url, profile, now=time.time()).impressions


def test_the_child_counts_what_a_stored_flush_stored(api, valkey, feed, flush_to):
    put = api.client.put
    assert put("/v1/catalog/advertisers", json={"items": [{"advertiser_id": "adv-1",
                                                           "name": "Acme"}]},
               headers=api.admin).status_code == 200
    assert put("/v1/catalog/campaigns", json={"items": [CAMPAIGN]},
               headers=api.admin).status_code == 200
    t = now_ms() - 60_000
    send(api, [ad_event("impression", profile_id="pf-1", session_id="s1", campaign_id="cmp-1",
                        ts=t),
               ad_event("complete", profile_id="pf-1", session_id="s1", campaign_id="cmp-1",
                        ts=t + 1_000),
               content_event("content_stop", profile_id="pf-1", session_id="s1",
                             ts=t + 30_000)])
    flusher = flush_to(feed)
    flusher.drain()
    assert feed.wait_idle(10)
    live = wait_until(lambda: (r := read(valkey.url, "pf-1", now=time.time())).impressions
                      and r.post_ad_abandons and r)
    assert (live.impressions, live.completes, live.post_ad_abandons) == (1, 1, 1)
    # the parent loaded the campaign's category and sent it over: counted by category too
    assert live.by_category["IAB18"]["impressions"] == 1
    assert live.last_ad.campaign_id == "cmp-1"
    assert feed.pid is not None and feed.pid != os.getpid()


def test_a_killed_child_does_not_stall_flushing_and_is_restarted(api, valkey, feed, flush_to, ch):
    flusher = flush_to(feed)
    send(api, [ad_event("impression", profile_id="pf-a")])
    flusher.drain()
    wait_until(lambda: counted(valkey, "pf-a") == 1)
    first = feed.pid
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: _dead(first))
    send(api, [ad_event("impression", profile_id="pf-b")])
    started = time.monotonic()
    flusher.drain()
    assert time.monotonic() - started < 5  # the flush does not wait for a child
    assert ch.query("SELECT count() FROM ad_events").result_rows[0][0] == 2
    # the next block found the child dead and started another, which counted it
    wait_until(lambda: counted(valkey, "pf-b") == 1)
    assert feed.restarts == 1 and feed.pid not in (None, first)


def test_a_stalled_child_drops_counters_instead_of_holding_the_flusher(valkey):
    feed = LiveFeed(valkey.url, max_pending_bytes=1 << 20)
    try:
        row = b'{"type":"impression","ts":1.0,"profile_id":"p"}\n'
        assert feed.send_rows(row, b"", 1)
        wait_until(lambda: feed.pid is not None and feed.wait_idle(1))
        os.kill(feed.pid, signal.SIGSTOP)  # alive, reading nothing
        try:
            block = row * 100_000  # ~5 MB: fills the pipe, then the queue
            started = time.monotonic()
            results = [feed.send_rows(block, b"", 100_000) for _ in range(20)]
            assert time.monotonic() - started < 1.0
            assert results[0] and not all(results)
            assert feed.dropped_rows >= 100_000
        finally:
            os.kill(feed.pid, signal.SIGCONT)
    finally:
        feed.close(timeout=20)


def test_exclusions_refreshed_in_the_parent_reach_the_child(api, valkey, rds, flush_to):
    feed = LiveFeed(valkey.url, refresh_s=0.0)  # look-ups reloaded at every stored flush
    try:
        flusher = flush_to(feed)
        send(api, [ad_event("impression", profile_id="pf-kid"),
                   ad_event("impression", profile_id="pf-ok")])
        flusher.drain()
        wait_until(lambda: counted(valkey, "pf-ok") == 1)
        assert counted(valkey, "pf-kid") == 1  # not yet excluded
        answer = api.client.put("/v1/profiles", json={"items": [
            {"profile_id": "pf-kid", "account_id": "acc-1", "kind": "kids"}]},
            headers=api.admin)
        assert answer.status_code == 200, answer.text
        for key in rds.scan_iter("adtier:fl:{pf-kid}:*"):  # start the kid from nothing
            rds.delete(key)
        send(api, [ad_event("impression", profile_id="pf-kid"),
                   ad_event("impression", profile_id="pf-ok")])
        flusher.drain()
        wait_until(lambda: counted(valkey, "pf-ok") == 2)
        assert counted(valkey, "pf-kid") == 0  # the second flush did not count the kid
    finally:
        feed.close()


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie until its parent (the feed) reaps it, which may happen between the two looks
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] == "Z"
    except FileNotFoundError:
        return True


def test_a_graceful_close_counts_what_was_queued_before_the_child_ends(valkey):
    feed = LiveFeed(valkey.url)
    at = time.time()
    rows = b"".join(b'{"type":"impression","ts":%.1f,"profile_id":"p%d"}\n' % (at, i)
                    for i in range(2_000))
    for _ in range(3):
        assert feed.send_rows(rows, b"", 2_000, at=at)
    child = feed.pid or wait_until(lambda: feed.pid)
    feed.close(timeout=60)
    assert _dead(child)
    assert all(counted(valkey, f"p{i}") == 3 for i in (0, 999, 1_999))


class _SlowQueries:
    """A real ClickHouse client whose queries start late (a flusher loading the look-ups on a
    busy server)."""

    def __init__(self, real, delay_s: float):
        self.real = real
        self.delay_s = delay_s

    def __getattr__(self, name):
        return getattr(self.real, name)

    def query(self, *args, **kwargs):
        time.sleep(self.delay_s)
        return self.real.query(*args, **kwargs)


def test_no_rows_go_out_before_the_first_look_ups(settings, ch, feed):
    """At start-up a second flusher's rows must not overtake the first flusher's look-ups (the
    child would count them with no exclusions): while the first load runs, the second waits."""
    client = connect(settings.clickhouse_dsn)
    try:
        first = threading.Thread(target=feed.refresh_if_due,
                                 args=(_SlowQueries(client, 0.3),))
        first.start()
        wait_until(lambda: feed._refreshing.locked())  # the first flusher is loading
        feed.refresh_if_due(client)  # the second flusher, before it sends its first rows
        assert feed._lookups is not None  # it waited for the first load to be queued
        first.join(10)
    finally:
        client.close()


# A child that never gets ready (stuck in its imports, say): it ignores its input and sleeps.
STUCK = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
         " time.sleep(600)"]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_stuck_start_fails_in_time_even_with_look_ups_larger_than_the_pipe(valkey):
    # The look-ups (~1 MB here) would fill the pipe of a child that reads nothing yet: they go
    # after READY, so the start's own timeout still ends a start that never comes.
    feed = LiveFeed(valkey.url, argv=STUCK, start_timeout_s=0.5, restart_backoff_s=0.2,
                    max_restart_backoff_s=0.2)
    try:
        feed.send_lookups(Lookups(categories={}, excluded_ids=["x" * 40] * 20_000,
                                  erased_sha256=[]))
        wait_until(lambda: feed.failed_starts >= 2)
    finally:
        feed.close(timeout=2)
    assert feed.starts == 0


def test_close_during_start_up_ends_in_time_and_leaves_no_child(valkey):
    feed = LiveFeed(valkey.url, argv=STUCK)
    child = wait_until(lambda: feed.pid)  # started, never ready
    assert feed.send_rows(b'{"type":"impression","ts":1.0,"profile_id":"p"}\n', b"", 1)
    started = time.monotonic()
    feed.close(timeout=2)
    # the whole shutdown within its timeout (plus a kill's grace), not the child's 600 s
    assert time.monotonic() - started < 2 + 3  # the timeout, a kill's 1 s grace, a loaded CI
    assert _gone(child)  # killed and reaped: no orphan, no zombie
    assert not feed._sender.is_alive()
    assert feed.failed_starts == 0  # ended by the shutdown: not a start that failed


def test_close_of_a_stuck_child_ends_in_time_and_leaves_no_child(valkey):
    feed = LiveFeed(valkey.url)
    row = b'{"type":"impression","ts":1.0,"profile_id":"p"}\n'
    assert feed.send_rows(row, b"", 1)
    wait_until(lambda: feed.pid is not None and feed.wait_idle(1))
    child = feed.pid
    os.kill(child, signal.SIGSTOP)  # alive, reading nothing: the sender blocks writing to it
    for _ in range(5):
        feed.send_rows(row * 100_000, b"", 100_000)
    started = time.monotonic()
    feed.close(timeout=2)
    assert time.monotonic() - started < 2 + 3  # the timeout, a kill's 1 s grace, a loaded CI
    assert _gone(child)
    assert not feed._sender.is_alive()


def _starts(outcome: str) -> float:
    return REGISTRY.get_sample_value("adtier_live_counters_child_starts_total",
                                     {"outcome": outcome}) or 0.0


@pytest.mark.parametrize("argv", [["/nonexistent/python"],
                                  [sys.executable, "-c", "raise SystemExit(3)"]],
                         ids=["no-interpreter", "exits-before-ready"])
def test_a_child_that_fails_to_start_is_retried_with_a_growing_delay(valkey, argv):
    failed_before = _starts("failed")
    feed = LiveFeed(valkey.url, argv=argv, restart_backoff_s=0.05, max_restart_backoff_s=0.4)
    try:
        # no frame needed: a child that is down is retried on its own schedule
        wait_until(lambda: feed.failed_starts >= 6)
        attempts = list(feed.start_attempts)[:6]
    finally:
        feed.close(timeout=5)
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:])]
    # doubling from 0.05 s, capped at 0.4 s: never sooner (later is the machine's business)
    for gap, delay in zip(gaps, [0.05, 0.1, 0.2, 0.4, 0.4], strict=True):
        assert gap >= delay - 0.005, (gaps, delay)
    assert feed.retry_delay_s == 0.4
    assert feed.starts == 0 and feed.restarts == 0
    assert _starts("failed") - failed_before >= 6


@pytest.mark.parametrize(("healthy_after_s", "delays"),
                         [(float("inf"), [0.05, 0.1, 0.2]), (0.0, [0.0, 0.0, 0.0])],
                         ids=["short-lived", "ran-healthily"])
def test_the_backoff_grows_for_children_dying_young_and_resets_after_a_healthy_one(
        valkey, healthy_after_s, delays):
    started_before = _starts("started")
    feed = LiveFeed(valkey.url, restart_backoff_s=0.05, max_restart_backoff_s=0.4,
                    healthy_after_s=healthy_after_s)
    row = b'{"type":"impression","ts":1.0,"profile_id":"p"}\n'
    try:
        seen = []
        for kills in range(3):
            wait_until(lambda kills=kills: feed.starts == kills + 1)
            child = feed.pid
            os.kill(child, signal.SIGKILL)
            wait_until(lambda child=child: _dead(child))
            # the sender finds it dead at a frame and schedules the next (a frame may still
            # reach a dying child: its pipe closes with its last thread, so send until then)
            wait_until(lambda kills=kills: feed.send_rows(row, b"", 1)
                       and feed.starts == kills + 2)
            seen.append(feed.retry_delay_s)
        assert seen == delays
        assert feed.restarts == 3 and feed.failed_starts == 0
        assert _starts("started") - started_before == 4
    finally:
        feed.close(timeout=10)


def test_the_queue_bound_is_a_setting(valkey):
    from adtier.runtime import live_feed
    from adtier.settings import load_settings

    assert load_settings({}).live_counters_max_pending_bytes == 256 << 20
    settings = load_settings({"ADTIER_LIVE_COUNTERS_MAX_PENDING_BYTES": "1048576"})
    feed = live_feed(settings, valkey.url)
    try:
        assert feed.max_pending_bytes == 1 << 20
    finally:
        feed.close(timeout=10)


def test_a_negative_queue_bound_is_refused_with_its_name():
    with pytest.raises(ValueError, match="ADTIER_LIVE_COUNTERS_MAX_PENDING_BYTES"):
        LiveFeed("redis://127.0.0.1:1/0", max_pending_bytes=-1)
