"""compose.yaml stays true to the code: it parses, every ``adtier`` command is one the CLI
accepts (subcommand and flags), and every ``ADTIER_*`` name is a setting."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
import yaml

from adtier.cli import build_parser
from adtier.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the x-adtier anchor and `<<:` merges


def _command(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def test_compose_parses_with_the_roles_it_promises(compose):
    services = compose["services"]
    assert {"clickhouse", "valkey", "migrate", "ingest", "flusher"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
    assert services["ingest"]["environment"]["ADTIER_FLUSHER_ENABLED"] == "false"


def test_every_adtier_command_exists_in_the_cli(compose):
    parser = build_parser()
    subcommands = set(parser._subparsers._group_actions[0].choices)
    seen = 0
    for name, service in compose["services"].items():
        command = _command(service)
        if not command or command[0] != "adtier":
            continue
        seen += 1
        assert command[1] in subcommands, f"{name}: no subcommand {command[1]!r}"
        try:
            parser.parse_args(command[1:])
        except SystemExit as err:  # argparse exits on an unknown flag or a bad value
            pytest.fail(f"{name}: `{' '.join(command)}` is not a valid command line ({err})")
    assert seen >= 3  # migrate, ingest, flusher


def test_every_adtier_env_name_is_a_setting(compose):
    fields = {f"ADTIER_{f.name.upper()}" for f in msgspec.structs.fields(Settings)}
    names: set[str] = set()
    for service in [*compose["services"].values(), compose.get("x-adtier", {})]:
        env = service.get("environment") or {}
        if isinstance(env, list):  # the KEY=VALUE list form
            env = dict(item.partition("=")[::2] for item in env)
        names |= {k for k in env if k.startswith("ADTIER_")}
    assert names, "no ADTIER_* settings in compose.yaml"
    # names used anywhere, including ${ADTIER_...} interpolations and comments
    names |= set(re.findall(r"\bADTIER_[A-Z0-9_]+", COMPOSE.read_text()))
    unknown = sorted(names - fields)
    assert not unknown, f"not settings (see src/adtier/settings.py): {unknown}"
