"""Operations endpoints: ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import time

from litestar import Controller, Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adtier import metrics
from adtier.logs import get_logger
from adtier.state import AppState, app_state

log = get_logger("adtier.ops")

__all__ = ["OpsController"]


class OpsController(Controller):
    tags = ["operations"]
    include_in_schema = True

    @get("/healthz", summary="The process is up")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="Stores reachable; buffer lag; flushers making progress")
    async def readyz(self, request: Request) -> Response:
        """Not ready (503) while a store is unreachable, a flusher has failed its current plan
        ``ADTIER_READY_MAX_FLUSH_FAILURES`` times in a row, or the oldest buffered entry is older
        than ``ADTIER_READY_MAX_BUFFER_AGE_S``: events acknowledged here would not be stored."""
        state = app_state(request)
        checks: dict[str, object] = {}
        problems: list[str] = []
        try:
            await state.redis.ping()
            checks["redis"] = "ok"
            buffered = await state.ingest.buffer.buffered_events()
            age = await state.ingest.buffer.oldest_age_s()  # over every partition
            checks["buffer_lag_events"] = buffered
            checks["buffer_lag_seconds"] = round(age, 3)
            metrics.BUFFER_LAG.set(buffered)
            if age > state.settings.ready_max_buffer_age_s:
                problems.append(f"oldest buffered entry is {age:.0f} s old "
                                f"(bound {state.settings.ready_max_buffer_age_s:g} s)")
        except Exception as err:  # noqa: BLE001 - report, do not raise
            # anyone may ask /readyz: the store's error text (addresses, statements) goes to
            # the log only
            log.warning("readyz_redis_unreachable", error=str(err)[:300])
            checks["redis"] = "unreachable"
            problems.append("redis unreachable")
        if state.api_clickhouse is None:
            checks["clickhouse"] = "not used (ingest role)"
        else:
            try:
                await state.query("SELECT 1")
                checks["clickhouse"] = "ok"
            except Exception as err:  # noqa: BLE001
                log.warning("readyz_clickhouse_unreachable", error=str(err)[:300])
                checks["clickhouse"] = "unreachable"
                problems.append("clickhouse unreachable")
        checks["flushers"], stuck = _flushers(state)
        problems += stuck
        checks["problems"] = problems
        checks["status"] = "not_ready" if problems else "ready"
        return Response(checks, status_code=503 if problems else 200)

    @get("/metrics", summary="Prometheus metrics", media_type=CONTENT_TYPE_LATEST)
    async def metrics_endpoint(self, request: Request) -> Response:
        try:
            metrics.BUFFER_LAG.set(await app_state(request).ingest.buffer.buffered_events())
        except Exception:  # noqa: BLE001 - metrics must render even when Redis is away
            pass
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _flushers(state: AppState) -> tuple[dict[str, object], list[str]]:
    """Each in-process flusher's health, and the ones failing the same plan too often."""
    limit = state.settings.ready_max_flush_failures
    now = time.time()
    health: dict[str, object] = {}
    stuck: list[str] = []
    for flusher in state.flushers:
        health[flusher.consumer] = {"failed_attempts": flusher.failures,
                                    "last_success_s_ago": round(now - flusher.last_success, 3)}
        if flusher.failures >= limit:
            stuck.append(f"flusher {flusher.consumer} failed its plan {flusher.failures} times")
    return health, stuck
