"""Feature feed routes (role ``recs``; ``admin`` too): point look-up and bulk export.

The look-up reads Valkey only — the exclusion mirror, the mirrored batch row and the live
counters in one round trip (one script call, ``mirror.lookup``) — and falls back to ClickHouse (same answer,
slower) while the mirror is not built. A profile is unknown (404) when it is excluded (kids,
opted out, erased: as if it did not exist), or has neither a batch row nor live counters;
being in the catalog alone does not make it known (there would be nothing to serve).
Exports and computations write audit records (``auditing``).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
from clickhouse_connect.driver.client import Client
from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from adtier.auth import ApiKey
from adtier.errors import ApiError
from adtier.features import auditing, mirror
from adtier.features import schema as S
from adtier.features.export import (
    EXPORT_READERS,
    ColumnsError,
    ExportPlan,
    arrow_ipc_stream,
    export_slices,
    iter_batches,
    plan_export,
    select_columns,
    write_parquet,
)
from adtier.features.live import LiveFeatures, read_live
from adtier.features.profile_read import BATCH_COLUMNS, read_profile
from adtier.features.scheduler import RUNNER, ComputeStatus
from adtier.logs import get_logger
from adtier.state import app_state, authorize, off_loop
from adtier.store import connect
from adtier.streams import fail_loudly, file_chunks

__all__ = ["FEATURE_ROUTES", "ComputeStatus"]

log = get_logger("adtier.features.routes")

ROLES = ("recs", "admin")
WATERMARK_HEADER = "X-Adtier-Watermark"


class ProfileFeatures(msgspec.Struct):
    profile_id: str
    schema_version: int
    computed_at: dt.datetime | None  # when the batch features were computed (None: not yet)
    batch: dict[str, object] | None  # the stored columns of profile_features (schema.COLUMNS)
    live: LiveFeatures


def _round(value: object) -> object:
    """Float32 columns read back as float64 noise (0.30000001192...): 7 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.7g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def _not_found(profile_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no features for profile {profile_id!r}")


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


_MISSING = object()


async def _from_mirror(state, profile_id: str) -> ProfileFeatures | None | object:
    """The answer from Valkey alone: ProfileFeatures, None (unknown or excluded: 404), or
    ``_MISSING`` (mirror not built, or a row of another schema: ask ClickHouse)."""
    found = await mirror.lookup(state.redis, profile_id)
    if not found.ready or found.stale_row:
        return _MISSING
    if found.excluded:
        return None
    live = found.live
    batch = computed_at = None
    if found.row is not None:
        computed_at, values = found.row
        batch = {name: _round(v) for name, v in values.items()}
        computed_at = _utc(computed_at) if computed_at is not None else None
    elif live.empty:
        return None
    return ProfileFeatures(profile_id=profile_id, schema_version=S.FEATURE_SCHEMA_VERSION,
                           computed_at=computed_at, batch=batch, live=live)


class FeaturesController(Controller):
    path = "/v1/features"
    tags = ["features"]

    @get("/profiles/{profile_id:str}", summary="Features of one profile (batch + live)")
    async def profile(self, request: Request, profile_id: FromPath[str]) -> ProfileFeatures:
        await authorize(request, *ROLES)
        state = app_state(request)
        if len(profile_id) > 64:
            raise _not_found(profile_id)
        answer = await _from_mirror(state, profile_id)
        if answer is None:
            raise _not_found(profile_id)
        if answer is not _MISSING:
            return answer
        return await self._from_clickhouse(state, profile_id)

    async def _from_clickhouse(self, state, profile_id: str) -> ProfileFeatures:
        """The slow path, while the mirror is not built: two ClickHouse queries."""

        excluded, rows = await off_loop(read_profile, state.api_clickhouse, profile_id)
        if excluded:
            raise _not_found(profile_id)  # kids, opted out, erased: as if unknown
        live = await read_live(state.redis, profile_id)
        if not rows and live.empty:
            raise _not_found(profile_id)
        batch = None
        computed_at = None
        if rows:
            row = rows[0]
            batch = {name: _round(v) for name, v in zip(BATCH_COLUMNS, row[:-1], strict=True)}
            computed_at = _utc(row[-1])
        return ProfileFeatures(profile_id=profile_id, schema_version=S.FEATURE_SCHEMA_VERSION,
                               computed_at=computed_at, batch=batch, live=live)

    @post("/compute", status_code=202, summary="Recompute batch features now (admin, async)")
    async def start_compute(self, request: Request) -> ComputeStatus:
        key = await authorize(request, "admin")
        state = app_state(request)
        started = RUNNER.try_start(key.key_id)
        if started is None:
            raise ApiError(409, "busy", "a batch feature computation is already running")
        RUNNER.start_thread(state.settings.clickhouse_dsn, state.stores.redis, key.key_id,
                            key.role)
        return started

    @get("/compute", summary="State of the last batch feature computation")
    async def compute_status(self, request: Request) -> ComputeStatus:
        await authorize(request, *ROLES)
        return RUNNER.status

    @get("/export", summary="Bulk export since a watermark (Arrow IPC stream or Parquet)")
    async def export(self, request: Request, since: FromQuery[int] = 0,
                     format: FromQuery[str] = "arrow",
                     columns: FromQuery[str | None] = None) -> Stream:
        key = await authorize(request, *ROLES)
        if since < 0:
            raise ApiError(400, "invalid_request", "since must be a watermark >= 0")
        if format not in ("arrow", "parquet"):
            raise ApiError(400, "invalid_request", "format must be arrow or parquet")
        try:
            names = select_columns(columns)
        except ColumnsError as err:
            raise ApiError(400, "invalid_request", str(err)) from err
        state = app_state(request)
        dsn = state.settings.clickhouse_dsn
        clients = [await off_loop(connect, dsn)]
        try:
            plan = await off_loop(plan_export, clients[0], since, names,
                                                  state.stores.redis)
            if len(export_slices(plan.rows)) > 1:  # read the next slice on another core
                clients += [await off_loop(connect, dsn)
                            for _ in range(EXPORT_READERS - 1)]
        except Exception:
            _close(clients)
            raise
        headers = {WATERMARK_HEADER: str(plan.watermark), "X-Adtier-Rows": str(plan.rows),
                   "X-Adtier-Schema-Version": str(S.FEATURE_SCHEMA_VERSION),
                   "Cache-Control": "no-store"}
        audit = _ExportAudit(state.settings.clickhouse_dsn, key, plan, format, columns)
        if format == "arrow":
            return Stream(audit.wrap(_arrow(clients, plan)),
                          media_type="application/vnd.apache.arrow.stream", headers=headers)
        path = await off_loop(_parquet_file, clients, plan)
        headers["Content-Disposition"] = 'attachment; filename="features.parquet"'
        return Stream(audit.wrap(file_chunks(path)), media_type="application/vnd.apache.parquet",
                      headers=headers)


class _ExportAudit:
    """Writes the export's audit record once its body was sent (or abandoned): the hash of
    the exact bytes sent, and the rows of the plan (499 and no rows if cut short)."""

    def __init__(self, dsn: str, key: ApiKey, plan: ExportPlan, fmt: str,
                 columns: str | None) -> None:
        self.dsn, self.key, self.plan = dsn, key, plan
        self.parameters = {"since": plan.since, "watermark": plan.watermark, "format": fmt,
                           "columns": columns}

    def wrap(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        return auditing.hashed(chunks, self._write)

    def _write(self, sha256: str, completed: bool) -> None:
        try:
            client = connect(self.dsn)
            try:
                auditing.record(client, who=self.key.key_id, role=self.key.role,
                                endpoint="features_export", parameters=self.parameters,
                                row_count=self.plan.rows if completed else 0,
                                answer_sha256=sha256, status=200 if completed else 499)
            finally:
                client.close()
        except Exception as err:  # noqa: BLE001 - the body is already sent; log loudly
            log.error("features_export_audit_failed", error=str(err)[:300])


def _close(clients: list[Client]) -> None:
    for client in clients:
        client.close()


def _arrow(clients: list[Client], plan: ExportPlan) -> Iterator[bytes]:
    try:
        yield from fail_loudly(arrow_ipc_stream(clients[0], plan, clients[1:]))
    finally:
        _close(clients)


def _parquet_file(clients: list[Client], plan: ExportPlan) -> Path:
    fd, name = tempfile.mkstemp(prefix="adtier-features-", suffix=".parquet")
    os.close(fd)
    path = Path(name)
    try:
        write_parquet(iter_batches(clients[0], plan, clients[1:]), plan.schema, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        _close(clients)
    return path


FEATURE_ROUTES = [FeaturesController]
