"""The point look-up's slow path, while the Valkey mirror is not built: one profile read from
ClickHouse (sync: call it off the event loop)."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from adtier.features import schema as S
from adtier.features.batch import TABLE
from adtier.privacy.exclusions import PROFILE_EXCLUDED_SQL

__all__ = ["BATCH_COLUMNS", "read_profile"]

BATCH_COLUMNS = [c for c in S.FEATURE_COLUMNS if c != "computed_at"]
_ROW_SQL = (f"SELECT {', '.join(BATCH_COLUMNS)}, computed_at FROM {TABLE} FINAL "
            "WHERE profile_hash = cityHash64({p:String}) AND profile_id = {p:String} "
            "AND deleted = 0")


def read_profile(client: Client, profile_id: str) -> tuple[bool, list[tuple]]:
    """(excluded: kids, opted out or erased; its latest live batch row, if any: the
    ``BATCH_COLUMNS`` then ``computed_at``). An excluded profile's row is not read."""
    params = {"p": profile_id}
    if client.query(PROFILE_EXCLUDED_SQL, parameters=params).result_rows[0][0]:
        return True, []
    return False, client.query(_ROW_SQL, parameters=params).result_rows
