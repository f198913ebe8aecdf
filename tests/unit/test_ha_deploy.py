"""deploy/ha and the compose profile `ha` agree with each other and with what the failover and
pooler tests run (Docker cannot run here; this is what can be checked without it)."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from storage.database_url import DatabaseSetupError, check_supported, explain, split_pooler

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def patroni() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "deploy/ha/patroni.yml").read_text())
    return loaded


def test_patroni_config_keeps_acknowledged_commits_on_a_standby() -> None:
    config = patroni()
    dcs = config["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"
    assert dcs["postgresql"]["use_pg_rewind"] is True  # a failed leader rejoins as a standby
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]  # Patroni's own rule
    assert config["postgresql"]["bin_dir"] == "/usr/lib/postgresql/15/bin"


def test_ha_profile_names_every_node_and_only_the_primary() -> None:
    services = compose()["services"]
    ha = {name for name, s in services.items() if "ha" in s.get("profiles", [])}
    assert {"etcd", "pg1", "pg2", "migrate-ha", "app1-ha", "app2-ha", "proxy-ha"} <= ha
    nodes = sorted(n for n in ha if "PATRONI_NAME" in services[n].get("environment", {}))
    assert [services[n]["environment"]["PATRONI_NAME"] for n in nodes] == nodes
    for node in nodes:
        env = services[node]["environment"]
        assert env["PATRONI_POSTGRESQL_CONNECT_ADDRESS"] == f"{node}:5432"
        assert env["PATRONI_ETCD3_HOSTS"] == "etcd:2379"
    for app in ("migrate-ha", "app1-ha", "app2-ha"):
        url = services[app]["environment"]["CREDITSTREAM_DATABASE_URL"]
        check_supported(url)
        parsed = make_url(url)
        assert parsed.query["target_session_attrs"] == "read-write"
        assert sorted(parsed.query["host"]) == [f"{n}:5432" for n in nodes]
    # the ha apps are the same app: only the database URL differs
    single, pair = services["app1"]["environment"], services["app1-ha"]["environment"]
    assert {k for k in single if single[k] != pair[k]} == {"CREDITSTREAM_DATABASE_URL"}


def test_pgbouncer_config_pools_transactions() -> None:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "deploy/ha/pgbouncer.ini")
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    url = "postgresql+asyncpg://u:p@bouncer:6432/creditstream?pooler=pgbouncer"
    plain, pooler = split_pooler(url)
    assert (plain, pooler) == ("postgresql+asyncpg://u:p@bouncer:6432/creditstream", "pgbouncer")


def test_a_multi_host_url_is_explained_by_all_its_hosts() -> None:
    url = (
        "postgresql+asyncpg://cs:pw@/cs?host=pg1:5432&host=pg2:5432&target_session_attrs=read-write"
    )
    refused = explain(ConnectionRefusedError(111, "refused"), url)
    assert refused is not None
    assert "pg1:5432, pg2:5432" in str(refused) and "pw" not in str(refused)


def test_an_unknown_pooler_is_refused_in_one_line() -> None:
    with pytest.raises(DatabaseSetupError, match="pooler=pgbouncer"):
        split_pooler("postgresql+asyncpg://u@h/db?pooler=odyssey")
