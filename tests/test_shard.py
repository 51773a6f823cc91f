"""Sharding: N replicas with one config split the databases, each read by exactly one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from exporter import config, shard
from exporter.cli import main
from tests.exporter_fixtures import ExporterProcess, free_port, total, wait_for
from tests.pg_fixtures import PgTestServer, unique_db_name

NAMES = [f"db{i:02d}" for i in range(10)]


def test_every_database_has_exactly_one_owner_for_any_shard_count() -> None:
    names = [f"tenant-{i}" for i in range(1000)]
    for total_shards in (1, 2, 3, 7):
        split = shard.split(names, total_shards)
        assert sorted(n for part in split.values() for n in part) == sorted(names)
        # Roughly even: no shard gets less than half its share of 1000 names.
        assert min(len(p) for p in split.values()) > 1000 / total_shards / 2


def test_adding_a_shard_moves_only_what_the_new_shard_takes() -> None:
    names = [f"tenant-{i}" for i in range(1000)]
    moved = [n for n in names if shard.owner(n, 3) != shard.owner(n, 4)]
    assert all(shard.owner(n, 4) == 3 for n in moved)


@pytest.mark.parametrize(("host", "expected"), [
    ("pggit-exporter-0", 0), ("pggit-exporter-12", 12), ("exporter", None), ("web-1a", None)])
def test_ordinal_comes_from_a_statefulset_host_name(host: str, expected: int | None) -> None:
    assert shard.ordinal(host) == expected


def write(tmp_path: Path, shard_cfg: object, name: str = "cfg.yml") -> Path:
    cfg = tmp_path / name
    cfg.write_text(yaml.safe_dump({
        "shard": shard_cfg, "databases": [{"name": n, "dsn": "host=db"} for n in NAMES]}))
    return cfg


def test_index_defaults_to_the_host_ordinal(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "pggit-exporter-2")
    cfg = config.load(write(tmp_path, {"total": 3}), {})
    assert cfg.shard == config.ShardConfig(index=2, total=3)
    assert [db.name for db in cfg.owned_databases] == shard.split(NAMES, 3)[2]


@pytest.mark.parametrize(("host", "shard_cfg", "problem"), [
    ("laptop", {"total": 3}, "shard.index: not set, and the host name 'laptop' ends in no -N "
                             "ordinal to take it from (as StatefulSet pods do)"),
    ("pggit-exporter-3", {"total": 3}, "shard.index: 3 (from the host name "
                                       "'pggit-exporter-3') must be below shard.total (3)"),
    ("x", {"total": 2, "index": 2}, "shard.index: 2 must be below shard.total (2)"),
    ("x", {"index": 0}, "shard.total: is required (the number of replicas sharing this "
                        "config)"),
    ("x", {"total": 0, "index": 0}, "shard.total: must be an integer of at least 1, got 0"),
    ("x", {"total": 2, "index": 0, "of": 1}, "shard.of: unknown key"),
])
def test_bad_shard_settings_are_named(tmp_path: Path, monkeypatch, host: str,
                                      shard_cfg: object, problem: str) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: host)
    with pytest.raises(config.ConfigError) as err:
        config.load(write(tmp_path, shard_cfg), {})
    assert problem in err.value.problems


def test_check_config_says_which_databases_this_shard_reads(tmp_path: Path, capsys) -> None:
    assert main(["check-config", "--config", str(write(tmp_path, {"total": 3, "index": 1}))]) \
        == 0
    assert f"shard 1 of 0..2 reads: {', '.join(shard.split(NAMES, 3)[1])}" in \
        capsys.readouterr().out


@pytest.fixture
def ten_databases(pg_server: PgTestServer, pggit_template_db: str) -> Iterator[dict[str, str]]:
    dsns: dict[str, str] = {}
    try:
        for name in NAMES:
            db = unique_db_name("pggit_shard")
            dsns[name] = pg_server.create_database(db, template=pggit_template_db)
        yield dsns
    finally:
        for dsn in dsns.values():
            pg_server.drop_database(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])


def test_ten_databases_over_three_replicas_each_read_once(
        tmp_path: Path, ten_databases: dict[str, str]) -> None:
    """Three real exporter processes, one config, a different index each: every database's
    rows are counted by exactly one replica and the others never connect to it."""
    for i, dsn in enumerate(ten_databases.values()):
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(i + 1):
                conn.execute("SELECT pggit.record_performance_metric('commit', 1000)")
    replicas = []
    try:
        for index in range(3):
            cfg = tmp_path / f"shard{index}.yml"
            cfg.write_text(yaml.safe_dump({
                "listen": f"127.0.0.1:{free_port()}", "state_dir": str(tmp_path / f"s{index}"),
                "poll_interval": "200ms", "shard": {"total": 3, "index": index},
                "databases": [{"name": n, "dsn": d, "application_name": f"shard-{index}"}
                              for n, d in ten_databases.items()]}))
            replicas.append(ExporterProcess(cfg))
        expected = {name: float(i + 1) for i, name in enumerate(NAMES)}

        def counted() -> list[dict[str, float]] | None:
            seen = []
            for replica in replicas:
                s = replica.samples()
                names = {dict(ls)["database"] for (n, ls) in s if n == "pggit_up"}
                seen.append({n: total(s, "pggit_operation_duration_seconds_count",
                                      database=n) for n in names})
            merged = [n for part in seen for n in part]
            done = sorted(merged) == NAMES and {k: v for p in seen for k, v in p.items()} \
                == expected
            return seen if done else None

        seen = wait_for(counted, 60, what="every database counted by one replica")
        assert [sorted(part) for part in seen] == [shard.split(NAMES, 3)[i] for i in range(3)]
        owners = {name: i for i, part in enumerate(seen) for name in part}
        for name, dsn in ten_databases.items():
            with psycopg.connect(dsn) as conn:
                clients = {row[0] for row in conn.execute(
                    "SELECT application_name FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name LIKE 'shard-%'")}
            assert clients == {f"shard-{owners[name]}"}, name
    finally:
        for replica in replicas:
            replica.close()
