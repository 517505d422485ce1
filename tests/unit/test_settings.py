"""load_settings: ADTIER_* variables from a plain dict, typed; explicit overrides win."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adtier.settings import Settings, load_settings


def test_empty_env_gives_the_defaults() -> None:
    assert load_settings({}) == Settings()


def test_unrelated_and_unknown_variables_are_ignored() -> None:
    env = {"PORT": "1", "adtier_port": "2", "ADTIER_NOT_A_SETTING": "3", "XADTIER_PORT": "4"}
    assert load_settings(env) == Settings()


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("true", True), ("TRUE", True), ("Yes", True), (" on ", True),
     ("0", False), ("false", False), ("False", False), ("no", False), ("OFF\n", False)],
)
@pytest.mark.parametrize("field", ["log_json", "flusher_enabled"])
def test_bools(field: str, raw: str, value: bool) -> None:
    settings = load_settings({f"ADTIER_{field.upper()}": raw})
    assert getattr(settings, field) is value


@pytest.mark.parametrize(
    ("field", "raw", "value"),
    [("port", "9001", 9001), ("workers", "4", 4), ("max_events_per_batch", "5", 5),
     ("retention_days", "400", 400), ("claim_idle_ms", "0", 0), ("flush_max_seconds", "0.25", 0.25),
     ("flush_max_seconds", "2", 2.0), ("host", "0.0.0.0", "0.0.0.0"),
     ("redis_url", "redis://localhost:6379/0", "redis://localhost:6379/0"),
     ("clickhouse_url", "http://ch:8123", "http://ch:8123"), ("log_level", "debug", "debug"),
     ("admin_key", "adt_secret", "adt_secret"), ("flusher_name", "", ""),
     ("role", "ingest", "ingest")],
)
def test_typed_values(field: str, raw: str, value: object) -> None:
    settings = load_settings({f"ADTIER_{field.upper()}": raw})
    assert getattr(settings, field) == value
    assert type(getattr(settings, field)) is type(value)


@pytest.mark.parametrize("raw", ["/var/lib/adtier", "relative/dir", "."])
def test_paths(raw: str) -> None:
    settings = load_settings({"ADTIER_DATA_DIR": raw})
    assert settings.data_dir == Path(raw)
    assert isinstance(settings.data_dir, Path)


@given(port=st.integers(min_value=0, max_value=65535), rows=st.integers(min_value=1, max_value=10**9))
def test_any_int_round_trips_through_the_environment(port: int, rows: int) -> None:
    settings = load_settings({"ADTIER_PORT": str(port), "ADTIER_FLUSH_MAX_ROWS": str(rows)})
    assert (settings.port, settings.flush_max_rows) == (port, rows)


@pytest.mark.parametrize(("field", "raw"), [("port", "abc"), ("port", ""), ("workers", "2.5"),
                                            ("flush_max_seconds", "soon"), ("role", "leader")])
def test_invalid_values_are_refused_naming_the_field(field: str, raw: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=field):
        load_settings({f"ADTIER_{field.upper()}": raw})


def test_invalid_bool_is_refused_naming_the_field() -> None:
    with pytest.raises((ValueError, msgspec.ValidationError), match="log_json|LOG_JSON"):
        load_settings({"ADTIER_LOG_JSON": "maybe"})


def test_overrides_win_over_the_environment() -> None:
    env = {"ADTIER_PORT": "9001", "ADTIER_LOG_JSON": "true", "ADTIER_DATA_DIR": "/from/env"}
    settings = load_settings(env, port=1234, log_json=False, data_dir=Path("/from/override"))
    assert (settings.port, settings.log_json, settings.data_dir) == (1234, False, Path("/from/override"))


def test_none_overrides_leave_the_environment_value() -> None:
    settings = load_settings({"ADTIER_PORT": "9001"}, port=None, host=None)
    assert (settings.port, settings.host) == (9001, "127.0.0.1")


def test_overrides_without_environment() -> None:
    settings = load_settings({}, flusher_enabled=False, max_event_bytes=10, data_dir="str/path")
    assert settings.flusher_enabled is False
    assert settings.max_event_bytes == 10
    assert settings.data_dir == Path("str/path")


def test_env_none_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADTIER_PORT", "7777")
    monkeypatch.setenv("ADTIER_FLUSHER_ENABLED", "off")
    settings = load_settings()
    assert (settings.port, settings.flusher_enabled) == (7777, False)
    # an explicit dict does not fall back to the process environment
    assert load_settings({}).port == 8000


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        load_settings({}).port = 1  # type: ignore[misc]


def test_derived_properties(tmp_path: Path) -> None:
    embedded = load_settings({"ADTIER_DATA_DIR": str(tmp_path)})
    assert embedded.clickhouse_dsn == f"chdb://{(tmp_path / 'clickhouse').resolve()}"
    assert embedded.embedded_clickhouse and embedded.embedded_redis

    remote = load_settings({"ADTIER_CLICKHOUSE_URL": "http://ch:8123",
                            "ADTIER_REDIS_URL": "redis://r:6379"})
    assert remote.clickhouse_dsn == "http://ch:8123"
    assert not remote.embedded_clickhouse and not remote.embedded_redis


@pytest.mark.parametrize("raw", ["3600", "86400", "900", "1"])
def test_privacy_version_period_divides_a_day(raw: str) -> None:
    settings = load_settings({"ADTIER_PRIVACY_VERSION_PERIOD_S": raw})
    assert settings.privacy_version_period_s == int(raw)


@pytest.mark.parametrize("raw", ["0", "-3600", "7000", "172800", "1.5", "hourly"])
def test_privacy_version_period_rejects_what_does_not_divide_a_day(raw: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="privacy_version_period_s|PERIOD_S"):
        load_settings({"ADTIER_PRIVACY_VERSION_PERIOD_S": raw})


def test_privacy_version_period_default_is_a_day() -> None:
    assert Settings().privacy_version_period_s == 86_400
