"""The drill cluster manager against real PostgreSQL servers: a crash that loses nothing
committed, synchronous streaming replication and failover, point-in-time recovery from a
base backup and the WAL archive, the errors a caller sees, and the test suite's throwaway
cluster built on it."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stateset_sequencer.testing import pg
from stateset_sequencer.testing.cluster import Cluster, ClusterError, archive_command

MakeCluster = Callable[[str], Cluster]


@pytest.fixture
def root() -> Iterator[Path]:
    # Not tmp_path: pytest keeps /tmp/pytest-of-root at 0700, which the postgres OS user
    # cannot traverse.
    path = Path(tempfile.mkdtemp(prefix="drill-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_cluster(root: Path) -> Iterator[MakeCluster]:
    made: list[Cluster] = []

    def make(name: str) -> Cluster:
        cluster = Cluster(root, name)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.remove()


def refuses(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            return True
        return False


def archiving(archive: Path) -> dict[str, str]:
    archive.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(archive, "postgres", "postgres")
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": archive_command(archive),
    }


def switch_and_wait_archived(cluster: Cluster, archive: Path) -> str:
    """Close the current WAL segment and wait until the archiver has copied it."""
    segment = cluster.psql("SELECT pg_walfile_name(pg_switch_wal())")
    cluster.wait_for("SELECT last_archived_wal FROM pg_stat_archiver", segment, timeout=30)
    assert (archive / segment).is_file()
    return segment


def test_crash_with_archiving_keeps_committed_rows(root: Path, make_cluster: MakeCluster) -> None:
    archive = root / "archive"
    primary = make_cluster("primary")
    primary.init(durable=True, settings=archiving(archive))
    primary.start()
    assert primary.running()
    primary.psql("CREATE TABLE t (id int PRIMARY KEY, note text)")
    primary.psql("INSERT INTO t VALUES (1, 'it''s committed')")
    switch_and_wait_archived(primary, archive)
    assert any(len(entry.name) == 24 for entry in archive.iterdir())

    primary.kill()
    assert not primary.running()
    assert refuses(primary.port)
    assert (primary.data / "postmaster.pid").exists()  # a crash leaves its lock file behind
    primary.kill()  # no-op once dead

    primary.start()
    assert primary.psql("SELECT note FROM t WHERE id = 1") == "it's committed"
    assert "database system was interrupted" in primary.log.read_text()


def test_synchronous_standby_then_failover(root: Path, make_cluster: MakeCluster) -> None:
    primary = make_cluster("primary")
    primary.init(
        durable=True,
        settings={"synchronous_standby_names": "standby", "synchronous_commit": "remote_apply"},
    )
    primary.start()
    standby = Cluster.standby_of(primary, root, "standby")
    try:
        assert (standby.data / "standby.signal").is_file()
        standby.start()
        primary.wait_for(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'",
            "sync",
            timeout=30,
        )
        assert standby.in_recovery()
        # remote_apply: the commit returns once the standby has applied it, so a read there
        # straight afterwards sees it.
        primary.psql("CREATE TABLE t (id int)")
        primary.psql("INSERT INTO t VALUES (42)")
        assert standby.psql("SELECT id FROM t") == "42"

        primary.kill()
        started = time.monotonic()
        standby.promote()
        promote_s = time.monotonic() - started
        assert not standby.in_recovery()
        standby.psql("INSERT INTO t VALUES (43)")  # would hang were it waiting for a standby
        assert standby.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t") == "42,43"
        assert promote_s < 30
    finally:
        standby.remove()


def test_point_in_time_recovery(root: Path, make_cluster: MakeCluster) -> None:
    archive = root / "archive"
    primary = make_cluster("primary")
    primary.init(durable=False, settings=archiving(archive))
    primary.start()
    primary.psql("CREATE TABLE t (batch text, n int)")
    backup = root / "backup"
    primary.base_backup(backup)
    assert (backup / "PG_VERSION").is_file() and not (backup / "standby.signal").exists()

    primary.psql("INSERT INTO t SELECT 'A', g FROM generate_series(1, 10) g")
    time.sleep(1.1)
    target = primary.psql("SELECT now()")
    time.sleep(1.1)
    primary.psql("INSERT INTO t SELECT 'B', g FROM generate_series(1, 10) g")
    switch_and_wait_archived(primary, archive)
    primary.stop()
    assert not primary.running()

    restored = Cluster.restored_from(
        backup,
        root,
        "restored",
        restore_command=f"cp {archive}/%f %p",
        target_time=target,
    )
    try:
        assert (restored.data / "recovery.signal").is_file()
        restored.start()
        restored.wait_for("SELECT pg_is_in_recovery()", "f", timeout=60)
        assert not restored.in_recovery()
        assert restored.psql("SELECT batch, count(*) FROM t GROUP BY batch") == "A|10"
        assert "recovery stopping before commit" in restored.log.read_text()
        restored.psql("INSERT INTO t VALUES ('C', 1)")  # a primary again, on a new timeline
        timeline = restored.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
        assert timeline == "00000002"
    finally:
        restored.remove()
    assert (backup / "PG_VERSION").is_file()  # the backup itself is left as it was


def test_errors_say_what_failed(root: Path, make_cluster: MakeCluster) -> None:
    never = make_cluster("never")
    with pytest.raises(ClusterError, match="never initialised"):
        never.start()
    assert not never.running()
    never.stop()  # nothing to stop
    never.kill()

    cluster = make_cluster("c")
    cluster.init(durable=False)
    with pytest.raises(ClusterError, match="psql"):
        cluster.psql("SELECT 1")  # not started: psql cannot connect
    cluster.start()
    with pytest.raises(ClusterError, match="syntax error"):
        cluster.psql("SELEKT 1")
    with pytest.raises(ClusterError, match="did not return"):
        cluster.wait_for("SELECT 1", "2", timeout=0.3)
    cluster.remove()
    cluster.remove()  # twice is fine
    assert not cluster.dir.exists()


def test_configure_replaces_and_quotes(make_cluster: MakeCluster) -> None:
    cluster = make_cluster("conf")
    cluster.init(durable=False, settings={"cluster_name": "first"})
    cluster.configure({"cluster_name": "it's \\ second", "work_mem": "8MB"})
    cluster.configure({"work_mem": "16MB"})
    text = (cluster.data / "drill.conf").read_text()
    assert text.count("work_mem") == 1 and text.count("cluster_name") == 1
    assert (cluster.data / "postgresql.conf").read_text().count("drill.conf") == 1
    cluster.start()
    assert cluster.psql("SHOW work_mem") == "16MB"
    assert cluster.psql("SHOW fsync") == "off"
    assert cluster.psql("SHOW listen_addresses") == "127.0.0.1"
    assert cluster.psql("SHOW port") == str(cluster.port)
    assert cluster.psql("SHOW cluster_name") == "it's \\ second"


def test_root_unreachable_by_postgres_is_reported() -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another OS user")
    hidden = Path(tempfile.mkdtemp(prefix="drill-hidden-"))  # 0700, root's
    try:
        with pytest.raises(ClusterError, match="cannot reach"):
            Cluster(hidden / "inner", "c").init(durable=False)
    finally:
        shutil.rmtree(hidden, ignore_errors=True)


def test_pg_throwaway_cluster_uses_this_manager() -> None:
    dsn, problem = pg._start_cluster()
    server = pg._throwaway
    assert dsn is not None, problem
    assert server is not None and server.dsn() == dsn
    try:
        assert pg._probe(dsn) is None
        assert server.psql("SHOW fsync") == "off"
        assert server.psql("SHOW synchronous_commit") == "off"
        pg._stop_cluster(server, os.getpid() + 1)  # not ours: a forked child does nothing
        assert server.running()
    finally:
        pg._stop_cluster(server, os.getpid())
    assert not server.running()
    assert not server.root.exists()
    assert refuses(server.port)
