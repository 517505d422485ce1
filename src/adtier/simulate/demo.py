"""``adtier serve --demo``: once the server is up, load a demo catalog and replay a simulated
week through its own ingest API (as players would), then print where to look.

``start_demo`` (called by ``serve``) starts this module as a child process that dies with the
server; the child waits for ``/readyz``, reads the admin key, makes an ingest, an advertiser and
a recs key, loads the catalog, replays the week in HTTP mode, builds a segment and computes the
features (so every printed command has something to show), then prints the keys, the docs URL
and curl commands that work as printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["start_demo", "main", "DEMO_PROFILES", "DEMO_SEED"]

DEMO_PROFILES = 8_000  # a week of these replays through the API in about 40 s here
DEMO_SEED = 42
_SHOWCASE_CAMPAIGN = "cmp-01-1"  # Northwind Motors: always on, so it has data every day
_SEGMENT = json.dumps({"name": "sci-fi fans", "kind": "rule", "rule": {"all": [
    {"feature": "genre_share", "key": "sci_fi", "window_days": 30, "op": ">=", "value": 0.3}]}})


def start_demo(settings) -> subprocess.Popen:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    url = f"http://{host}:{settings.port}"
    command = [sys.executable, "-m", "adtier.simulate.demo", "--url", url,
               "--data-dir", str(settings.data_dir.resolve())]
    return subprocess.Popen(command, env={**os.environ, "ADTIER_DIE_WITH_PARENT": "1"})


def _admin_key(data_dir: Path, timeout: float) -> str | None:
    if key := os.environ.get("ADTIER_ADMIN_KEY"):
        return key
    path = data_dir / "admin_key"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text().strip()):
            return text
        time.sleep(0.2)
    return None


def _wait_ready(client, timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _until(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def _build_segment(client, auth: dict[str, str]) -> str:
    """The showcase segment, created and built, so its printed commands show members."""
    created = client.post("/v1/segments", content=_SEGMENT, headers={
        **auth, "Content-Type": "application/json"})
    created.raise_for_status()
    segment_id = created.json()["segment_id"]
    client.post(f"/v1/segments/{segment_id}/build", headers=auth).raise_for_status()
    if not _until(lambda: client.get(f"/v1/segments/{segment_id}", headers=auth)
                  .json()["status"] in ("ready", "failed"), 300):
        raise RuntimeError(f"segment {segment_id} was not built within 300 s")
    return segment_id


def _compute_features(client, auth: dict[str, str]) -> None:
    """Batch features now, not one interval after start-up: the export has rows to show."""
    answer = client.post("/v1/features/compute", headers=auth)
    if answer.status_code not in (202, 409):  # 409: the scheduler's run is already going
        answer.raise_for_status()
    if not _until(lambda: not client.get("/v1/features/compute", headers=auth)
                  .json()["running"], 600):
        raise RuntimeError("the feature computation did not finish within 600 s")


def _sci_fi_fan(world, client, recs: str) -> str:
    """A targetable profile with a strong sci-fi taste and features to show (a likely member
    of the segment; the look-up answers for any profile)."""
    import numpy as np

    from adtier.simulate import params as P

    taste = world.genre_pref[:, P.GENRES.index("sci_fi")].copy()
    taste[world.kids | world.opted_out] = -1
    ranked = [int(i) for i in np.argsort(-taste)[:50]]
    for index in ranked:
        answer = client.get(f"/v1/features/profiles/{world.profile_id(index)}",
                            headers={"Authorization": f"Bearer {recs}"})
        if answer.status_code == 200:
            return world.profile_id(index)
    return world.profile_id(ranked[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adtier-demo")
    parser.add_argument("--url", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--profiles", type=int,
                        default=int(os.environ.get("ADTIER_DEMO_PROFILES", DEMO_PROFILES)))
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    args = parser.parse_args(argv)
    if os.environ.get("ADTIER_DIE_WITH_PARENT") == "1":
        from adtier.embedded_valkey import die_with_parent

        die_with_parent()

    import httpx

    from adtier.simulate.command import Progress, http_lines, summary_lines
    from adtier.simulate.http_mode import (
        HttpOptions,
        load_catalog_http,
        run_http,
        wait_until_stored,
    )
    from adtier.simulate.truth import TruthRecorder
    from adtier.simulate.world import build_world

    with httpx.Client(base_url=args.url, timeout=60.0) as client:
        if not _wait_ready(client, 180):
            _say("adtier demo: the server did not become ready; no demo data was sent")
            return 1
        admin = _admin_key(args.data_dir, 30)
        if not admin:
            _say(f"adtier demo: no admin key (set ADTIER_ADMIN_KEY, or keep "
                 f"{args.data_dir / 'admin_key'}); no demo data was sent")
            return 1
        auth = {"Authorization": f"Bearer {admin}"}

        def new_key(role: str, name: str, advertiser_id: str | None = None) -> str:
            body = {"role": role, "name": name}
            if advertiser_id:
                body["advertiser_id"] = advertiser_id
            answer = client.post("/v1/keys", json=body, headers=auth)
            answer.raise_for_status()
            return answer.json()["key"]

        try:
            ingest = new_key("ingest", "demo players")
            world = build_world(args.seed, args.profiles, args.days)
            _say(f"adtier demo: loading the catalog and replaying {args.days} simulated days of "
                 f"{args.profiles:,} profiles through {args.url}/v1/events and /v1/px ...")
            options = HttpOptions(concurrency=4)
            loaded = load_catalog_http(client, world, admin, options)
            showcase = next(c for c in world.catalog.campaigns
                            if c["campaign_id"] == _SHOWCASE_CAMPAIGN)
            advertiser = new_key("advertiser", "demo advertiser", showcase["advertiser_id"])
            recs = new_key("recs", "demo recommendations")
            truth_dir = args.data_dir / "demo-truth"
            recorder = TruthRecorder(world, truth_dir)
            progress = Progress(world, enabled=sys.stderr.isatty(), label="demo replay")
            result = run_http(world, client, ingest, options, recorder, progress)
            progress.close()
            stored = wait_until_stored(client, 180)
            _say("adtier demo: building a segment and computing features ...")
            segment_id = _build_segment(client, auth)
            _compute_features(client, auth)
            fan = _sci_fi_fan(world, client, recs)
        except Exception as err:  # noqa: BLE001 - the server keeps running; say what failed
            _say(f"adtier demo: stopped: {err}")
            return 1
        truth = recorder.finish({"mode": "http (serve --demo)"})

    url = args.url
    lines = ["", "=" * 78, "adtier demo ready", "=" * 78]
    lines += summary_lines(world, truth, result.seconds, "replayed through the API",
                           ["catalog loaded: " + ", ".join(f"{k} {v:,}" for k, v in loaded.items()),
                            *http_lines(result),
                            "all stored in ClickHouse" if stored else "still storing ..."])
    lines += [
        "",
        f"docs:            {url}/docs",
        f"console:         {url}/console   (sign in with the advertiser key; the admin key "
        "adds the pipeline pages)",
        f"admin key:       {admin}",
        f"ingest key:      {ingest}   (the simulated players used it)",
        f"advertiser key:  {advertiser}   ({showcase['advertiser_id']}, sees {_SHOWCASE_CAMPAIGN})",
        f"recs key:        {recs}",
        f"ground truth:    {truth_dir}  (profiles, exposures, campaigns, effects .parquet)",
        "",
        "try:",
        "  # provenance and storage state of the last batch",
        (f"  curl -s {url}/v1/ingest/batches/{result.last_batch_id}"
         f" -H 'Authorization: Bearer {ingest}'"),
        "  # the campaigns that were loaded",
        f"  curl -s '{url}/v1/catalog/campaigns?limit=5' -H 'Authorization: Bearer {admin}'",
        "  # a campaign report by day, over its flight",
        (f"  curl -s '{url}/v1/campaigns/{_SHOWCASE_CAMPAIGN}/report?by=day'"
         f" -H 'Authorization: Bearer {advertiser}'"),
        "  # the segment 'sci-fi fans' (built), and the segments of one profile",
        f"  curl -s {url}/v1/segments/{segment_id} -H 'Authorization: Bearer {admin}'",
        f"  curl -s {url}/v1/profiles/{fan}/segments -H 'Authorization: Bearer {admin}'",
        "  # features of that profile, and a feature export (Parquet)",
        f"  curl -s {url}/v1/features/profiles/{fan} -H 'Authorization: Bearer {recs}'",
        (f"  curl -s '{url}/v1/features/export?since=0&format=parquet'"
         f" -H 'Authorization: Bearer {recs}' -o features.parquet"),
        "=" * 78,
    ]
    _say("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C on `adtier serve --demo` reaches this child too
        sys.exit(130)
