"""Locust load test of every adtier caller: players, advertisers, recommendation jobs.

Target with ``--host``; keys from the environment:

- ``ADTIER_INGEST_KEY`` (Player), ``ADTIER_ADVERTISER_KEY`` (Advertiser), ``ADTIER_RECS_KEY``
  (RecJob), ``ADTIER_ADMIN_KEY`` (optional: discover campaign ids from the catalog).
- ``ADTIER_CAMPAIGN_IDS`` / ``ADTIER_PROFILE_IDS`` (comma-separated, optional): ids to ask about;
  ``ADTIER_ADVERTISER_ID`` narrows discovered campaigns to that advertiser's.
- ``ADTIER_LOCUST_ALLOW_404=1``: a 404 for an id nobody has data for counts as a success
  (a fresh server: no features yet for a profile). A forecast refused with 422
  ``audience_too_small`` (the k-anonymity floor) always counts as a correct answer.
- ``ADTIER_LOCUST_SENT_FILE``: on test stop, the Player's counts (events and pixels whose
  first send was answered 2xx) are written there as JSON.
- ``ADTIER_LOCUST_WEIGHTS`` (e.g. ``player=2,advertiser=1,recs=1``): the user mix
  (default 6/2/1).

A user class without its key is skipped (its weight becomes 0). Run with ``loadtest/run.py``
or ``python -m locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000``.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid

from locust import HttpUser, between, events, task

INGEST_KEY = os.environ.get("ADTIER_INGEST_KEY", "")
ADVERTISER_KEY = os.environ.get("ADTIER_ADVERTISER_KEY", "")
RECS_KEY = os.environ.get("ADTIER_RECS_KEY", "")
ADMIN_KEY = os.environ.get("ADTIER_ADMIN_KEY", "")
ALLOW_404 = os.environ.get("ADTIER_LOCUST_ALLOW_404", "").lower() in ("1", "true", "yes")
SENT_FILE = os.environ.get("ADTIER_LOCUST_SENT_FILE", "")


def _weight(role: str, default: int) -> int:
    """``ADTIER_LOCUST_WEIGHTS=player=2,advertiser=1,recs=1`` overrides the mix."""
    for part in os.environ.get("ADTIER_LOCUST_WEIGHTS", "").split(","):
        name, _, value = part.partition("=")
        if name.strip() == role and value.strip().isdigit():
            return int(value)
    return default


def _ids(name: str) -> list[str]:
    return [s.strip() for s in os.environ.get(name, "").split(",") if s.strip()]


AD_FUNNEL = ("impression", "start", "first_quartile", "midpoint", "third_quartile", "complete")
VAST_EVENTS = ("impression", "start", "firstQuartile", "midpoint", "thirdQuartile", "complete")
DEVICES = ("tv", "tv", "tv", "mobile", "web")
COUNTRIES = ("US", "US", "GB", "DE", "FR", "CA")

PROFILES: list[str] = []  # profiles the Players speak for (RecJob looks them up)

# What the Player got acknowledged (first sends only; deliberate retries are not new events).
SENT = {"batches": 0, "events": 0, "accepted": 0, "duplicates": 0, "retries": 0,
        "retry_mismatch": 0, "pixels": 0}


@events.test_stop.add_listener
def _write_sent(environment, **_kw) -> None:
    if SENT_FILE:
        with open(SENT_FILE, "w") as f:
            json.dump(SENT, f)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Player(HttpUser):
    """A device in a viewing session: batches of ad and viewing events, now and then a re-send
    of the same batch (same Idempotency-Key, as after a lost answer), and VAST pixels for ad
    plays served through a third-party player."""

    weight = _weight("player", 6) if INGEST_KEY else 0
    wait_time = between(0.2, 0.8)

    def on_start(self) -> None:
        self.headers = {**_auth(INGEST_KEY), "Content-Type": "application/json"}
        n = random.randrange(1_000_000)
        self.account = f"acc-{n % 50_000}"
        self.profile = f"pf-{n}"
        PROFILES.append(self.profile)
        self.device = random.choice(DEVICES)
        self.country = random.choice(COUNTRIES)
        self.content = f"title-{random.randrange(300)}"
        self.session = ""
        self.plays = 0
        self._new_session()

    def _new_session(self) -> None:
        self.session = f"s-{uuid.uuid4().hex[:16]}"
        self.fresh = True
        self.content = f"title-{random.randrange(300)}"

    def _common(self, ts: int) -> dict:
        return {"event_id": str(uuid.uuid4()), "ts": ts, "account_id": self.account,
                "profile_id": self.profile, "session_id": self.session, "device": self.device,
                "country": self.country}

    def _ad_play(self, ts: int) -> list[dict]:
        self.plays += 1
        cmp = random.randrange(24)
        play = {"campaign_id": f"cmp-{cmp}", "creative_id": f"cr-{cmp}-{random.randrange(3)}",
                "ad_serving_id": f"as-{self.session}-{self.plays}"}
        out = []
        skip_at = random.choice((None, None, None, 2, 3, 4))
        for i, t in enumerate(AD_FUNNEL):
            if skip_at is not None and i == skip_at:
                out.append({**self._common(ts + i * 5000), "type": "skip", **play})
                break
            out.append({**self._common(ts + i * 5000), "type": t, **play})
        return out

    def _batch(self) -> list[dict]:
        """What an SDK flushes every ~30 s of viewing: heartbeats and an ad pod or two."""
        ts = _now_ms() - 30_000
        content = {"content_id": self.content}
        evs = [{**self._common(ts + i * 10_000), "type": "content_heartbeat", **content,
                "position_ms": i * 10_000} for i in range(random.randint(1, 3))]
        for _ in range(random.randint(1, 3)):  # a pod of 1-3 ads
            evs.extend(self._ad_play(ts))
        if self.fresh:
            evs.insert(0, {**self._common(ts - 1000), "type": "content_start", **content})
            self.fresh = False
        if random.random() < 0.05:
            evs.append({**self._common(ts + 29_000), "type": "content_stop", **content})
            self._new_session()
        return evs

    @task(8)
    def send_batch(self) -> None:
        body = json.dumps({"sent_at": _now_ms(), "events": self._batch()})
        n = body.count('"event_id"')
        headers = {**self.headers, "Idempotency-Key": str(uuid.uuid4())}
        with self.client.post("/v1/events", data=body, headers=headers, name="/v1/events",
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return
            answer = r.json()
            if answer.get("rejected"):
                r.failure(f"rejected: {answer['rejected'][:2]}")
                return
            SENT["batches"] += 1
            SENT["events"] += n
            SENT["accepted"] += answer.get("accepted", 0)
            SENT["duplicates"] += answer.get("duplicates", 0)
        if random.random() < 0.1:
            # The answer was "lost": re-send the very same batch with its key.
            with self.client.post("/v1/events", data=body, headers=headers,
                                  name="/v1/events (retry)", catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"{r.status_code}: {r.text[:200]}")
                    return
                SENT["retries"] += 1
                if r.json().get("accepted") != answer.get("accepted"):
                    SENT["retry_mismatch"] += 1
                    r.failure("a retry with the same Idempotency-Key got another answer")

    @task(2)
    def vast_pixels(self) -> None:
        """The quartile pixels of one ad play, fired as the ad plays."""
        self.plays += 1
        cmp = random.randrange(24)
        asid = f"as-px-{uuid.uuid4().hex[:12]}"
        base = (f"/v1/px?k={INGEST_KEY}&asid={asid}&cmp=cmp-{cmp}&cr=cr-{cmp}-0"
                f"&acc={self.account}&pf={self.profile}&ses={self.session}"
                f"&dev={self.device}&cc={self.country}&ts=[TIMESTAMP]&e=")
        for e in VAST_EVENTS:
            with self.client.get(base + e, name="/v1/px", catch_response=True) as r:
                if r.status_code != 200 or not r.content.startswith(b"GIF"):
                    r.failure(f"{r.status_code}")
                    return
                SENT["pixels"] += 1


class Advertiser(HttpUser):
    """An advertiser's dashboard: campaign reports, frequency, reach forecasts, segments."""

    weight = _weight("advertiser", 2) if ADVERTISER_KEY else 0
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        self.headers = _auth(ADVERTISER_KEY)
        self.campaigns = _ids("ADTIER_CAMPAIGN_IDS") or self._discover()
        self.segments: list[str] = []

    def _discover(self) -> list[str]:
        if not ADMIN_KEY:
            return []
        r = self.client.get("/v1/catalog/campaigns?limit=1000", headers=_auth(ADMIN_KEY),
                            name="/v1/catalog/campaigns")
        if r.status_code != 200:
            return []
        page = r.json()
        items = page.get("items", []) if isinstance(page, dict) else page
        mine = os.environ.get("ADTIER_ADVERTISER_ID", "")
        return [c["campaign_id"] for c in items if not mine or c.get("advertiser_id") == mine]

    def _get(self, path: str, name: str) -> None:
        with self.client.get(path, headers=self.headers, name=name, catch_response=True) as r:
            _judge(r)

    @task(4)
    def report(self) -> None:
        if self.campaigns:
            self._get(f"/v1/campaigns/{random.choice(self.campaigns)}/report",
                      "/v1/campaigns/{id}/report")

    @task(2)
    def frequency(self) -> None:
        if self.campaigns:
            self._get(f"/v1/campaigns/{random.choice(self.campaigns)}/frequency",
                      "/v1/campaigns/{id}/frequency")

    @task(2)
    def forecast(self) -> None:
        segs = random.sample(self.segments, min(len(self.segments), random.randint(0, 2)))
        body = {"segment_ids": segs, "impressions": random.choice((10_000, 100_000, 1_000_000)),
                "frequency_cap": random.choice((0, 3)), "days": random.choice((7, 14, 30))}
        with self.client.post("/v1/forecast/reach", json=body, headers=self.headers,
                              name="/v1/forecast/reach", catch_response=True) as r:
            if r.status_code == 422 and "audience_too_small" in r.text:
                r.success()  # the k-anonymity refusal: a correct answer on a small audience
            else:
                _judge(r)

    @task(2)
    def segments_list(self) -> None:
        with self.client.get("/v1/segments", headers=self.headers, name="/v1/segments",
                             catch_response=True) as r:
            if r.status_code == 200:
                self.segments = [s["segment_id"] for s in r.json()][:20]
            _judge(r)

    @task(1)
    def overlap(self) -> None:
        if self.segments:
            ids = ",".join(random.sample(self.segments, min(len(self.segments), 4)))
            self._get(f"/v1/segments/overlap?ids={ids}", "/v1/segments/overlap")


class RecJob(HttpUser):
    """A recommendation job: incremental bulk exports and point look-ups of profiles."""

    weight = _weight("recs", 1) if RECS_KEY else 0
    wait_time = between(1.0, 4.0)

    def on_start(self) -> None:
        self.headers = _auth(RECS_KEY)
        self.since = 0
        self.profiles = _ids("ADTIER_PROFILE_IDS")
        self.export()  # a job starts with a bulk export, then looks profiles up

    @task(1)
    def export(self) -> None:
        with self.client.get(f"/v1/features/export?since={self.since}", headers=self.headers,
                             name="/v1/features/export", catch_response=True) as r:
            if r.status_code == 200:
                mark = r.headers.get("X-Adtier-Watermark")
                if mark and mark.isdigit():
                    self.since = int(mark)
            _judge(r)

    @task(5)
    def profile(self) -> None:
        pool = self.profiles or PROFILES
        if not pool:
            return
        with self.client.get(f"/v1/features/profiles/{random.choice(pool)}",
                             headers=self.headers, name="/v1/features/profiles/{id}",
                             catch_response=True) as r:
            _judge(r)


def _judge(r) -> None:
    if r.status_code == 200 or (r.status_code == 404 and ALLOW_404):
        r.success()
    else:
        r.failure(f"{r.status_code}: {r.text[:200]}")


if not (INGEST_KEY or ADVERTISER_KEY or RECS_KEY):
    raise SystemExit("locustfile: set ADTIER_INGEST_KEY, ADTIER_ADVERTISER_KEY and/or "
                     "ADTIER_RECS_KEY")
