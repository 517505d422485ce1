"""Operations endpoints: ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import time

from litestar import Controller, Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adtier import metrics
from adtier.ingest.buffer import STREAM
from adtier.state import app_state

__all__ = ["OpsController"]


class OpsController(Controller):
    tags = ["operations"]
    include_in_schema = True

    @get("/healthz", summary="The process is up")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="Stores reachable; buffer lag")
    async def readyz(self, request: Request) -> Response:
        state = app_state(request)
        checks: dict[str, object] = {}
        ok = True
        try:
            await state.redis.ping()
            checks["redis"] = "ok"
            buffered = await state.ingest.buffer.buffered_events()
            oldest = await state.redis.xrange(STREAM, "-", "+", count=1)
            age = time.time() - int(oldest[0][0].decode().split("-")[0]) / 1000 if oldest else 0.0
            checks["buffer_lag_events"] = buffered
            checks["buffer_lag_seconds"] = round(age, 3)
            metrics.BUFFER_LAG.set(buffered)
        except Exception as err:  # noqa: BLE001 - report, do not raise
            ok = False
            checks["redis"] = f"unreachable: {err}"
        try:
            await state.query("SELECT 1")
            checks["clickhouse"] = "ok"
        except Exception as err:  # noqa: BLE001
            ok = False
            checks["clickhouse"] = f"unreachable: {err}"
        checks["status"] = "ready" if ok else "not_ready"
        return Response(checks, status_code=200 if ok else 503)

    @get("/metrics", summary="Prometheus metrics", media_type=CONTENT_TYPE_LATEST)
    async def metrics_endpoint(self, request: Request) -> Response:
        try:
            metrics.BUFFER_LAG.set(await app_state(request).ingest.buffer.buffered_events())
        except Exception:  # noqa: BLE001 - metrics must render even when Redis is away
            pass
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
