"""Feature feed routes (role ``recs``; ``admin`` too): point look-up and bulk export."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from adtier.errors import ApiError
from adtier.features import schema as S
from adtier.features.batch import TABLE, ComputeResult, compute
from adtier.features.export import (
    ColumnsError,
    ExportPlan,
    arrow_ipc_chunks,
    iter_batches,
    plan_export,
    select_columns,
    write_parquet,
)
from adtier.features.live import LiveFeatures, read_live
from adtier.state import app_state, authorize
from adtier.store import connect

__all__ = ["FEATURE_ROUTES", "ComputeStatus", "FeaturesController", "ProfileFeatures",
           "WATERMARK_HEADER"]

ROLES = ("recs", "admin")
WATERMARK_HEADER = "X-Adtier-Watermark"
_BATCH = [c for c in S.FEATURE_COLUMNS if c not in ("computed_at",)]

# One query: is the profile excluded (kids, opted out, erased), and its latest batch row.
_EXCLUDED_SQL = """SELECT
    (SELECT count() FROM profiles FINAL WHERE profile_id = {p:String} AND kind = 'kids')
  + (SELECT count() FROM privacy_optouts WHERE profile_id = {p:String})
  + (SELECT count() FROM erasures WHERE profile_hash = cityHash64({p:String}))"""
_ROW_SQL = (f"SELECT {', '.join(_BATCH)}, computed_at FROM {TABLE} FINAL "
            "WHERE profile_hash = cityHash64({p:String}) AND profile_id = {p:String} "
            "AND deleted = 0")


class ProfileFeatures(msgspec.Struct):
    profile_id: str
    schema_version: int
    computed_at: dt.datetime | None  # when the batch features were computed (None: not yet)
    batch: dict[str, object] | None  # the stored columns of profile_features (schema.COLUMNS)
    live: LiveFeatures


class ComputeStatus(msgspec.Struct):
    running: bool
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    last: ComputeResult | None = None
    error: str | None = None


_status = ComputeStatus(running=False)
_status_lock = threading.Lock()


def _run_compute(dsn: str, redis_client) -> None:
    global _status
    try:
        client = connect(dsn)
        try:
            result = compute(client, redis_client=redis_client)
        finally:
            client.close()
        error = None
    except Exception as err:  # noqa: BLE001 - reported through GET /v1/features/compute
        result, error = None, f"{type(err).__name__}: {err}"[:1000]
    with _status_lock:
        _status = ComputeStatus(running=False, started_at=_status.started_at,
                                finished_at=dt.datetime.now(dt.UTC), last=result or _status.last,
                                error=error)


def _round(value: object) -> object:
    """Float32 columns read back as float64 noise (0.30000001192...): 7 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.7g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def _not_found(profile_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no features for profile {profile_id!r}")


class FeaturesController(Controller):
    path = "/v1/features"
    tags = ["features"]

    @get("/profiles/{profile_id:str}", summary="Features of one profile (batch + live)")
    async def profile(self, request: Request, profile_id: FromPath[str]) -> ProfileFeatures:
        await authorize(request, *ROLES)
        state = app_state(request)

        def read() -> tuple[int, list[tuple]]:
            ch, params = state.api_clickhouse, {"p": profile_id}
            excluded = ch.query(_EXCLUDED_SQL, parameters=params).result_rows[0][0]
            if excluded:
                return excluded, []
            return 0, ch.query(_ROW_SQL, parameters=params).result_rows

        if len(profile_id) > 64:
            raise _not_found(profile_id)
        excluded, rows = await anyio.to_thread.run_sync(read)
        if excluded:
            raise _not_found(profile_id)  # kids, opted out, erased: as if unknown
        live = await read_live(state.redis, profile_id)
        if not rows and live.empty:
            raise _not_found(profile_id)
        batch = None
        computed_at = None
        if rows:
            row = rows[0]
            batch = {name: _round(v) for name, v in zip(_BATCH, row[:-1], strict=True)}
            computed_at = row[-1]
            if computed_at.tzinfo is None:
                computed_at = computed_at.replace(tzinfo=dt.timezone.utc)
        return ProfileFeatures(profile_id=profile_id, schema_version=S.FEATURE_SCHEMA_VERSION,
                               computed_at=computed_at, batch=batch, live=live)

    @post("/compute", status_code=202, summary="Recompute batch features now (admin, async)")
    async def start_compute(self, request: Request) -> ComputeStatus:
        global _status
        await authorize(request, "admin")
        state = app_state(request)
        with _status_lock:
            if _status.running:
                raise ApiError(409, "busy", "a batch feature computation is already running")
            _status = ComputeStatus(running=True, started_at=dt.datetime.now(dt.UTC),
                                    last=_status.last)
            started = _status
        threading.Thread(target=_run_compute, name="adtier-features-compute", daemon=True,
                         args=(state.settings.clickhouse_dsn, state.stores.redis)).start()
        return started

    @get("/compute", summary="State of the last batch feature computation")
    async def compute_status(self, request: Request) -> ComputeStatus:
        await authorize(request, *ROLES)
        return _status

    @get("/export", summary="Bulk export since a watermark (Arrow IPC stream or Parquet)")
    async def export(self, request: Request, since: FromQuery[int] = 0,
                     format: FromQuery[str] = "arrow",
                     columns: FromQuery[str | None] = None) -> Stream:
        await authorize(request, *ROLES)
        if since < 0:
            raise ApiError(400, "invalid_request", "since must be a watermark >= 0")
        if format not in ("arrow", "parquet"):
            raise ApiError(400, "invalid_request", "format must be arrow or parquet")
        try:
            names = select_columns(columns)
        except ColumnsError as err:
            raise ApiError(400, "invalid_request", str(err)) from err
        state = app_state(request)
        client = await anyio.to_thread.run_sync(connect, state.settings.clickhouse_dsn)
        try:
            plan = await anyio.to_thread.run_sync(plan_export, client, since, names,
                                                  state.stores.redis)
        except Exception:
            client.close()
            raise
        headers = {WATERMARK_HEADER: str(plan.watermark), "X-Adtier-Rows": str(plan.rows),
                   "X-Adtier-Schema-Version": str(S.FEATURE_SCHEMA_VERSION),
                   "Cache-Control": "no-store"}
        if format == "arrow":
            return Stream(_arrow(client, plan), media_type="application/vnd.apache.arrow.stream",
                          headers=headers)
        path = await anyio.to_thread.run_sync(_parquet_file, client, plan)
        headers["Content-Disposition"] = 'attachment; filename="features.parquet"'
        return Stream(_file_chunks(path), media_type="application/vnd.apache.parquet",
                      headers=headers)


def _arrow(client, plan: ExportPlan) -> Iterator[bytes]:
    try:
        yield from arrow_ipc_chunks(iter_batches(client, plan), plan.schema)
    finally:
        client.close()


def _parquet_file(client, plan: ExportPlan) -> Path:
    fd, name = tempfile.mkstemp(prefix="adtier-features-", suffix=".parquet")
    os.close(fd)
    path = Path(name)
    try:
        write_parquet(iter_batches(client, plan), plan.schema, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        client.close()
    return path


def _file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    try:
        with path.open("rb") as f:
            while chunk := f.read(size):
                yield chunk
    finally:
        path.unlink(missing_ok=True)


FEATURE_ROUTES = [FeaturesController]
