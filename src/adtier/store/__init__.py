"""ClickHouse access: one client factory and the migration runner."""

from adtier.store.client import connect

__all__ = ["connect"]
