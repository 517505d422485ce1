"""compose.yaml stays true to the code: it parses, every ``adtier`` command is one the CLI
accepts (subcommand and flags), every ``ADTIER_*`` name is a setting, and the `cluster`
profile's ClickHouse config is the layout the migrations produce (one shard, N replicas)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec
import pytest
import yaml

from adtier.cli import build_parser
from adtier.settings import Settings
from adtier.store.cluster import validate_cluster

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


# ---- profile `cluster`: Keeper + replicas of one shard ---------------------------------------


def _cluster_config(compose) -> ET.Element:
    return ET.fromstring(compose["configs"]["clickhouse-cluster"]["content"])


def test_cluster_profile_is_one_shard_of_the_replica_services(compose):
    services = compose["services"]
    replicas = {n for n, s in services.items()
                if "cluster" in s.get("profiles", []) and "clickhouse-server" in s.get("image", "")}
    assert len(replicas) >= 2
    config = _cluster_config(compose)
    clusters = list(config.find("remote_servers"))
    assert len(clusters) == 1
    shards = clusters[0].findall("shard")
    assert len(shards) == 1  # the layout adtier.store.cluster produces: Replicated, no Distributed
    assert shards[0].findtext("internal_replication") == "true"
    hosts = {r.findtext("host") for r in shards[0].findall("replica")}
    assert hosts == replicas
    keepers = {(n.findtext("host"), n.findtext("port"))
               for n in config.find("zookeeper").findall("node")}
    assert keepers
    for host, port in keepers:  # each Keeper the servers name is a service listening there
        keeper = services[host]
        assert keeper["profiles"] == ["cluster"]
        (mount,) = keeper["configs"]
        keeper_config = ET.fromstring(compose["configs"][mount["source"]]["content"])
        assert keeper_config.findtext("keeper_server/tcp_port") == port
        assert keeper_config.findtext("listen_host") == "0.0.0.0"
        raft = keeper_config.findall("keeper_server/raft_configuration/server")
        assert {s.findtext("hostname") for s in raft} <= {k for k, _ in keepers}


def test_each_replica_mounts_the_config_and_names_itself(compose):
    services = compose["services"]
    config = _cluster_config(compose)
    replica_env = config.find("macros/replica").get("from_env")
    assert config.findtext("macros/shard")
    names = []
    for host in (r.findtext("host") for r in config.iter("replica") if r.findtext("host")):
        service = services[host]
        assert {"source": "clickhouse-cluster",
                "target": "/etc/clickhouse-server/config.d/adtier-cluster.xml"} in service["configs"]
        assert service["hostname"] == host
        names.append(service["environment"][replica_env])
    assert len(set(names)) == len(names)  # a replica name is unique within its shard
    volumes = [v.split(":")[0] for host in names for v in services[host]["volumes"]]
    assert len(set(volumes)) == len(volumes)  # no two replicas share a data volume


def test_the_documented_cluster_command_matches_the_config(compose):
    """The header's command names the cluster of remote_servers and a replica's HTTP URL."""
    text = COMPOSE.read_text()
    name = re.search(r"ADTIER_CLICKHOUSE_CLUSTER=(\w+)", text)[1]
    url_host = re.search(r"ADTIER_CLICKHOUSE_URL=http://([\w-]+):8123", text)[1]
    assert [c.tag for c in _cluster_config(compose).find("remote_servers")] == [name]
    assert url_host in compose["services"]
    validate_cluster(name)
    # every adtier service takes both settings from the environment, single node by default
    for service in ("migrate", "ingest", "flusher"):
        env = compose["services"][service]["environment"]
        assert env["ADTIER_CLICKHOUSE_CLUSTER"] == "${ADTIER_CLICKHOUSE_CLUSTER:-}"
        assert env["ADTIER_CLICKHOUSE_URL"] == "${ADTIER_CLICKHOUSE_URL:-http://clickhouse:8123}"
        deps = compose["services"][service]["depends_on"]
        if "migrate" in deps:  # after the migration, which waited for the stores
            deps = compose["services"]["migrate"]["depends_on"]
        assert {"clickhouse-1", "clickhouse-2"} <= set(deps)
        assert all(deps[d].get("required") is False for d in ("clickhouse-1", "clickhouse-2"))
