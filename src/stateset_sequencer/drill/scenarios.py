"""The drills, from set-up to tear-down. Each builds every component itself on loopback on
a :class:`~.stage.Stage`, runs its failure under write load from the agents, recovers with
the documented commands, and proves the outcome with :meth:`~.stage.Stage.prove`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..testing.cluster import Cluster, PgBackRest, archive_command
from ..testing.patroni import Etcd, PatroniNode
from . import SCENARIOS
from .report import DETECTED, FAILURE, RECOVERED, Report
from .services import DrillError, Server
from .stage import (
    DATABASE,
    EXTRA_WRITES_PER_LANE,
    REPLICATION,
    TENANT,
    Options,
    Stage,
    anchor_wait,
    commit_wait,
    lane_urls,
    lose,
    multi_host,
    refused,
    start,
)


async def instance(stage: Stage) -> None:
    """Two sequencers on one database; SIGKILL one under load. The agents fail over to the
    other through their second base URL; the commit worker moves to the survivor."""
    db = await _primary(stage, "primary")
    dsn = db.dsn(DATABASE)
    await stage.blocking("start anvil and deploy the registry", stage.chain)
    first, second = await _two_sequencers_to_the_failure(stage, dsn)
    wall_failure = datetime.now(UTC)
    await stage.blocking("SIGKILL sequencer a", first.kill)
    stage.report.mark(DETECTED)
    stage.report.mark(RECOVERED)  # nothing to restore: the survivor was serving all along
    await stage.finish_load()
    await _commitments_caught_up(stage, db, timeout=commit_wait(stage.options))
    moved = db.psql(
        f"SELECT count(*) FROM ves_commitments WHERE committed_at > '{wall_failure.isoformat()}'",
        DATABASE,
    )
    stage.report.figures["commitments_after_failure"] = int(moved)
    stage.report.check(
        "commit worker moved to the survivor",
        int(moved) > 0,
        "no commitment was made after sequencer a was killed",
    )
    overlaps = db.psql(
        "SELECT count(*) FROM ves_commitments a JOIN ves_commitments b "
        "ON a.tenant_id = b.tenant_id AND a.store_id = b.store_id AND a.batch_id <> b.batch_id "
        "AND a.sequence_start <= b.sequence_end AND b.sequence_start <= a.sequence_end",
        DATABASE,
    )
    stage.report.check(
        "no duplicate commitment", int(overlaps) == 0, f"{overlaps} overlapping commitment pair(s)"
    )
    await _anchors_caught_up(stage, db, timeout=anchor_wait(stage.options))
    await _anchored_once(stage, db)
    before = await stage.loss(dsn)
    await stage.resync(second.url)
    await stage.prove(dsn, second.url, before, rpo_zero_before_resync=True)


async def _two_sequencers_to_the_failure(stage: Stage, dsn: str) -> tuple[Server, Server]:
    """Two sequencers on ``dsn``, half the agents preferring each, written to until the
    failure point, which is marked."""
    await stage.prepare(dsn)
    first, second = stage.server("a", dsn), stage.server("b", dsn)
    await stage.blocking("start sequencers", lambda: start(first, second))
    await stage.enrol(first.url, lane_urls([first, second]))
    stage.start_load()
    await stage.failure_point()
    stage.report.mark(FAILURE)
    return first, second


async def _commitments_caught_up(stage: Stage, db: Cluster, timeout: float) -> None:
    """Until every stream's events are committed (the commit worker's backlog is empty)."""
    behind_sql = (
        "SELECT count(*) FROM sequence_counters c WHERE c.current_sequence > COALESCE(("
        "SELECT max(m.sequence_end) FROM ves_commitments m "
        "WHERE m.tenant_id = c.tenant_id AND m.store_id = c.store_id), 0)"
    )
    await stage.blocking(
        "wait for the commit worker", lambda: db.wait_for(behind_sql, "0", timeout, DATABASE)
    )


async def _anchors_caught_up(stage: Stage, db: Cluster, timeout: float) -> None:
    await stage.blocking(
        "wait for the anchor worker",
        lambda: db.wait_for(
            "SELECT count(*) FROM ves_commitments WHERE chain_tx_hash IS NULL",
            "0",
            timeout,
            DATABASE,
        ),
    )


async def _anchored_once(stage: Stage, db: Cluster) -> None:
    """Every commitment anchored exactly once: one ``BatchCommitted`` log per batch."""
    on_chain = await stage.blocking("read the registry's logs", stage.anchored_batches)
    stored = int(db.psql("SELECT count(*) FROM ves_commitments", DATABASE))
    stage.report.figures["anchors"] = {"commitments": stored, "on_chain": len(on_chain)}
    stage.report.check(
        "no double anchor",
        len(on_chain) == len(set(on_chain)),
        f"{len(on_chain) - len(set(on_chain))} batch(es) anchored more than once",
    )
    stage.report.check(
        "every commitment anchored",
        len(set(on_chain)) == stored,
        f"{stored} commitments stored, {len(set(on_chain))} anchored on chain",
    )


async def failover(stage: Stage, synchronous: bool) -> None:
    """A primary and a streaming standby; two sequencers on a multi-host DSN; SIGKILL the
    primary under load and promote the standby; the sequencers find it by themselves."""
    primary = await _primary(stage, "primary")
    standby = stage.adopt(
        await stage.blocking(
            "pg_basebackup standby",
            lambda: Cluster.standby_of(primary, stage.root, "standby", application_name="standby"),
        )
    )
    await stage.blocking("start standby", standby.start)
    if synchronous:
        # Only now: with no standby yet, a synchronous primary would wait on every commit.
        primary.configure(
            {"synchronous_standby_names": "standby", "synchronous_commit": "remote_apply"}
        )
        primary.psql("SELECT pg_reload_conf()")
    state = "sync" if synchronous else "async"
    await stage.blocking(
        "wait for streaming",
        lambda: primary.wait_for(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby' "
            "AND state = 'streaming'",
            state,
        ),
    )
    dsn = multi_host([primary, standby])
    _first, second = await _two_sequencers_to_the_failure(stage, dsn)
    await stage.blocking("SIGKILL the primary", primary.kill)
    await refused(primary.host, primary.port)
    stage.report.mark(DETECTED)
    await stage.blocking("promote the standby", standby.promote)
    stage.report.mark(RECOVERED)
    await stage.finish_load()
    survivor = standby.dsn(DATABASE)
    before = await stage.loss(survivor)
    await stage.resync(second.url)
    await stage.prove(survivor, second.url, before, rpo_zero_before_resync=synchronous)


async def failover_patroni(stage: Stage) -> None:
    """The failover drill with automatic promotion: two Patroni nodes on one etcd member.
    Node a (Patroni and its PostgreSQL) is lost whole under load; once its leader key
    expires, Patroni promotes b, and the sequencers find it by themselves."""
    etcd = Etcd(stage.root)
    stage.supervisors.append(etcd.stop)
    await stage.blocking("start etcd", etcd.start)
    nodes = []
    for name in ("node-a", "node-b"):
        node = PatroniNode(stage.adopt(Cluster(stage.root, name)), etcd)
        stage.supervisors.append(node.stop)
        node.write_config(dict(REPLICATION))
        nodes.append(node)
    first, second = nodes
    first.start()
    await stage.blocking("patroni bootstraps node a", lambda: first.wait_role("primary", 120))
    second.start()
    await stage.blocking("patroni clones node b", lambda: second.wait_role("replica", 180))
    await stage.blocking(
        "create database", lambda: first.cluster.psql(f"CREATE DATABASE {DATABASE}")
    )
    dsn = multi_host([first.cluster, second.cluster])
    _a, survivor_server = await _two_sequencers_to_the_failure(stage, dsn)
    await stage.blocking("lose node a (Patroni and PostgreSQL)", first.kill)
    await refused(first.cluster.host, first.cluster.port)
    stage.report.mark(DETECTED)
    await stage.blocking("patroni promotes node b", lambda: second.wait_role("primary", 120))
    stage.report.mark(RECOVERED)
    await stage.finish_load()
    survivor = second.cluster.dsn(DATABASE)
    before = await stage.loss(survivor)
    await stage.resync(survivor_server.url)
    await stage.prove(survivor, survivor_server.url, before)


async def _archiving_primary(
    stage: Stage, name: str, folder: str, *, timeout_s: int
) -> tuple[Cluster, Path]:
    """A started primary that archives WAL into ``folder`` (never overwriting), switching
    segments at least every ``timeout_s`` seconds, with the drill's database created."""
    archive = stage.root / folder
    archive.mkdir(mode=0o700)
    if os.geteuid() == 0:  # the archiver runs as the clusters' owner
        shutil.chown(archive, "postgres", "postgres")
    settings = {
        "archive_mode": "on",
        "archive_command": archive_command(archive),
        "archive_timeout": str(timeout_s),
    }
    return await _primary(stage, name, settings), archive


async def _primary(stage: Stage, name: str, settings: dict[str, str] | None = None) -> Cluster:
    """A started, durable primary ready for standbys, with the drill's database created."""
    primary = stage.cluster(name)
    wanted = {**REPLICATION, **(settings or {})}
    await stage.blocking(f"initdb {name}", lambda: primary.init(settings=wanted))
    await stage.blocking(f"start {name}", primary.start)
    await stage.blocking("create database", lambda: primary.psql(f"CREATE DATABASE {DATABASE}"))
    return primary


async def pitr(stage: Stage, *, backrest: bool = False) -> None:
    """WAL archiving and a base backup; an operator's ``DELETE`` of a range under load;
    restore to just before it; re-ingest from the agents; verify. With ``backrest``, the
    archive, the backup and the restore are pgBackRest's."""
    restore: Callable[[str], Cluster]
    if backrest:
        repository = PgBackRest(stage.root)
        settings = {
            "archive_mode": "on",
            "archive_command": repository.archive_command,
            "archive_timeout": "60",
        }
        primary = await _primary(stage, "primary", settings)
        await stage.blocking("pgbackrest config", lambda: repository.write_config(primary))
        await stage.blocking("pgbackrest stanza-create, check", repository.create_stanza)
        backup_step, take_backup = "pgbackrest backup --type=full", repository.backup
        restore_step = "pgbackrest restore --type=time"

        def restore(target_time: str) -> Cluster:
            made = Cluster(stage.root, "restored")
            repository.restore(made, target_time)
            return made

    else:
        primary, archive = await _archiving_primary(stage, "primary", "wal-archive", timeout_s=60)
        base = stage.root / "base-backup"
        backup_step, take_backup = "pg_basebackup", lambda: primary.base_backup(base)
        restore_step = "restore the base backup"

        def restore(target_time: str) -> Cluster:
            return Cluster.restored_from(
                base,
                stage.root,
                "restored",
                restore_command=f"cp {archive}/%f %p",
                target_time=target_time,
            )

    dsn = primary.dsn(DATABASE)
    await stage.prepare(dsn)
    await stage.blocking(backup_step, take_backup)
    server = stage.server("a", dsn)
    await stage.blocking("start sequencer", server.start)
    fleet = await stage.enrol(server.url, lane_urls([server]))
    stage.start_load()
    await stage.failure_point()
    # The mistake: one stream's first hundred events deleted, just after the target time.
    victim = fleet.lanes[0].store_id
    # The server's clock, in the outboxes' own form (fixed-width UTC), to compare with
    # their acknowledgement times; recovery_target_time wants it with an offset instead.
    target = primary.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        DATABASE,
    )
    stage.report.mark(FAILURE)
    deleted = primary.psql(
        f"WITH gone AS (DELETE FROM ves_events WHERE tenant_id = '{TENANT}' AND store_id = "
        f"'{victim}' AND sequence_number <= 100 RETURNING 1) SELECT count(*) FROM gone",
        DATABASE,
    )
    stage.report.figures["deleted_by_mistake"] = int(deleted)
    found = await stage.blocking(
        "check-gaps finds the damage",
        lambda: stage.cli.run("check-gaps", "--database-url", dsn, ok=(0, 1)),
    )
    stage.report.check(
        "check-gaps saw the mistake",
        found.returncode == 1,
        "check-gaps did not see the deleted range",
    )
    stage.report.mark(DETECTED)
    fleet.pause()
    await stage.blocking("stop the sequencer", server.stop)
    segment = primary.psql("SELECT pg_walfile_name(pg_switch_wal())")
    await stage.blocking(
        "archive the last WAL",
        lambda: primary.wait_for(
            f"SELECT last_archived_wal >= '{segment}' FROM pg_stat_archiver", "t"
        ),
    )
    await stage.blocking("stop the primary", primary.stop)
    target_time = target.replace("T", " ").replace("Z", "+00")
    restored = stage.adopt(await stage.blocking(restore_step, lambda: restore(target_time)))
    await stage.blocking("replay WAL to the target", restored.start)
    await stage.blocking(
        "wait for promotion", lambda: restored.wait_for("SELECT pg_is_in_recovery()", "f", 300)
    )
    recovered_dsn = restored.dsn(DATABASE)
    await stage.blocking(
        "repair-counters",
        lambda: stage.cli.run("repair-counters", "--apply", "--database-url", recovered_dsn),
    )
    server.env["DATABASE_URL"] = recovered_dsn
    await stage.blocking("start the sequencer on the restored database", server.start)
    stage.report.mark(RECOVERED)
    before = await stage.loss(recovered_dsn)
    held, lost = before
    early = [e for e in lost.missing if (held[e].acked_at or "") < target]
    stage.report.figures["restore_target"] = target
    stage.report.check(
        "every event acknowledged before the mistake restored",
        not early,
        f"{len(early)} event(s) acknowledged before {target} are missing after the restore",
    )
    # What the restore lost was acknowledged after the restore point: the agents re-send
    # from there, not their whole history.
    await stage.resync(server.url, since=datetime.fromisoformat(target))
    fleet.resume()
    await stage.finish_load()
    await stage.prove(recovered_dsn, server.url, before, rto_since=RECOVERED)
    renumbered = stage.report.figures["after_resync"]["renumbered"]
    stage.report.check(
        "the lost events back in their old places",
        renumbered == 0,
        f"{renumbered} event(s) came back under other sequence numbers",
    )


async def corruption(stage: Stage) -> None:
    """Bytes flipped at rest in a payload, an agent signature, a receipt and an anchored
    commitment root; ``verify-events --deep`` must name each at its place, the chain
    included; then a restore of the last verified backup and a re-sync from the outboxes
    return the log to a fully verified state."""
    db = await _primary(stage, "primary")
    dsn = db.dsn(DATABASE)
    await stage.blocking("start anvil and deploy the registry", stage.chain)
    await stage.prepare(dsn)
    server = stage.server("a", dsn)
    await stage.blocking("start sequencer", server.start)
    fleet = await stage.enrol(server.url, lane_urls([server]))
    stage.start_load()
    await stage.failure_point()
    backup = stage.root / "backup"
    await stage.blocking(
        "backup under load",
        lambda: stage.cli.run("backup", "--output", str(backup), "--database-url", dsn),
    )
    await stage.blocking(
        "backup verify",
        lambda: stage.cli.run("backup", "verify", str(backup), "--database-url", dsn),
    )
    await stage.finish_load()
    # Writes after the backup, however long it took: what restoring it must lose, and the
    # outboxes give back.
    fleet.extend(EXTRA_WRITES_PER_LANE)
    stage.start_load()
    await stage.finish_load()
    await _commitments_caught_up(stage, db, timeout=commit_wait(stage.options))
    await _anchors_caught_up(stage, db, timeout=anchor_wait(stage.options))
    stores = [lane.store_id for lane in fleet.lanes]
    places = _corrupt(db, [stores[i % len(stores)] for i in range(4)])
    stage.report.mark(FAILURE)
    stage.report.figures["corrupted"] = [
        {"what": what, "store_id": str(store), "sequence": seq} for what, store, seq in places
    ]
    findings_file = stage.root / "verify-corrupted.json"
    found = await stage.verify_deep(dsn, findings_file, "verify-events --deep finds the damage")
    stage.report.mark(DETECTED)
    findings = _load_json(findings_file).get("findings", []) if found.returncode else []
    seen = {(f["store_id"], f["sequence"]) for f in findings}
    stage.report.figures["findings"] = [
        {k: f[k] for k in ("store_id", "sequence", "check", "code")} for f in findings[:20]
    ]
    for what, store, seq in places:
        stage.report.check(
            f"verify-events --deep found the {what}",
            (str(store), seq) in seen,
            f"the {what} flipped at {store} sequence {seq} was not reported there",
        )
    on_chain = any(f["check"] == "anchors" and f["store_id"] == str(places[3][1]) for f in findings)
    stage.report.check(
        "the altered anchored root is reported against the chain",
        on_chain,
        "no finding of the anchors check for the commitment whose root was altered",
    )
    await stage.blocking("stop the sequencer", server.stop)
    restored = f"{DATABASE}_restored"
    db.psql(f"CREATE DATABASE {restored}")
    restored_dsn = db.dsn(restored)
    await stage.blocking(
        "restore the last verified backup",
        lambda: stage.cli.run("restore", str(backup), "--database-url", restored_dsn),
    )
    # The restored log's later ranges are anchored already, under their first commitments.
    server.env |= {"DATABASE_URL": restored_dsn, "ANCHOR_WORKER_ENABLED": "false"}
    await stage.blocking("start the sequencer on the restored database", server.start)
    stage.report.mark(RECOVERED)
    before = await stage.loss(restored_dsn)
    await stage.resync(server.url)
    # The agents write again on the recovered log: what the RTO is measured to.
    fleet.extend(EXTRA_WRITES_PER_LANE)
    stage.start_load()
    await stage.finish_load()
    await stage.prove(restored_dsn, server.url, before, rto_since=RECOVERED)


def _corrupt(db: Cluster, stores: Sequence[uuid.UUID]) -> list[tuple[str, uuid.UUID, int]]:
    """Flip bytes in four kinds of stored fact, one stream each; where each one is."""
    flip = "set_byte({0}, 0, get_byte({0}, 0) # 1)"
    at = "tenant_id = '{}' AND store_id = '{}' AND sequence_number = {}"
    payload, signature, receipt = (stores[0], 3), (stores[1], 4), (stores[2], 5)
    db.psql(
        f"UPDATE ves_events SET payload = '{{\"tampered\": true}}'::json "
        f"WHERE {at.format(TENANT, *payload)}",
        DATABASE,
    )
    db.psql(
        f"UPDATE ves_events SET agent_signature = {flip.format('agent_signature')} "
        f"WHERE {at.format(TENANT, *signature)}",
        DATABASE,
    )
    db.psql(
        f"UPDATE ves_sequencer_receipts SET receipt_hash = {flip.format('receipt_hash')} "
        f"WHERE {at.format(TENANT, *receipt)}",
        DATABASE,
    )
    start = db.psql(
        f"UPDATE ves_commitments SET merkle_root = {flip.format('merkle_root')} "
        f"WHERE batch_id = (SELECT batch_id FROM ves_commitments WHERE tenant_id = '{TENANT}' "
        f"AND store_id = '{stores[3]}' AND chain_tx_hash IS NOT NULL "
        f"ORDER BY sequence_start LIMIT 1) RETURNING sequence_start",
        DATABASE,
    )
    return [
        ("payload", *payload),
        ("agent signature", *signature),
        ("receipt", *receipt),
        ("commitment root", stores[3], int(start)),
    ]


def _load_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


async def regional(stage: Stage) -> None:
    """A second region: a standby fed only by the archive (WAL shipping), with its own
    sequencer. Region A is lost whole under load; B is promoted and the agents move to it
    through their second base URL. Up to ``archive_timeout`` of writes is lost at first,
    and back after the agents re-sync."""
    primary, archive = await _archiving_primary(stage, "region-a", "wal-shipping", timeout_s=1)
    await stage.prepare(primary.dsn(DATABASE))
    standby = stage.adopt(
        await stage.blocking(
            "base backup for region b",
            lambda: Cluster.shipped_standby_of(
                primary, stage.root, "region-b", restore_command=f"cp {archive}/%f %p"
            ),
        )
    )
    await stage.blocking("start region b (WAL shipping)", standby.start)
    near, far = stage.server("a", primary.dsn(DATABASE)), stage.server("b", standby.dsn(DATABASE))
    await stage.blocking("start region a's sequencer", near.start)
    # Every agent prefers region a; b answers nothing until it is promoted.
    await stage.enrol(near.url, lambda _index: [near.url, far.url])
    stage.start_load()
    await stage.failure_point()
    stage.report.mark(FAILURE)
    await stage.blocking("lose region a", lambda: lose(near, primary))
    await refused(near.env["HOST"], near.port)
    stage.report.mark(DETECTED)
    await stage.blocking("promote region b", standby.promote)
    await stage.blocking("start region b's sequencer", far.start)
    stage.report.mark(RECOVERED)
    await stage.finish_load()
    before = await stage.loss(standby.dsn(DATABASE))
    await stage.resync(far.url)
    await stage.prove(standby.dsn(DATABASE), far.url, before)


async def run_one(scenario: str, variant: str | None, options: Options) -> Report:
    stage = Stage(scenario, variant, options)
    try:
        if scenario == "pitr":
            await pitr(stage, backrest=variant == "pgbackrest")
        elif scenario == "failover" and variant == "patroni":
            await failover_patroni(stage)
        elif scenario == "failover":
            await failover(stage, synchronous=variant == "sync")
        elif scenario == "instance":
            await instance(stage)
        elif scenario == "corruption":
            await corruption(stage)
        elif scenario == "regional":
            await regional(stage)
        else:
            raise DrillError(f"no drill {scenario!r}; the drills: {', '.join(SCENARIOS)}")
    except (DrillError, TimeoutError, OSError, RuntimeError) as exc:
        stage.report.problems.append(f"the drill did not complete: {exc}")
    except BaseException:
        stage.report.problems.append("the drill was interrupted")
        raise
    finally:
        await stage.close()
    return stage.report


async def run(scenario: str, options: Options) -> list[Report]:
    if scenario not in SCENARIOS:
        raise DrillError(f"no drill {scenario!r}; the drills: {', '.join(SCENARIOS)}")
    return [await run_one(scenario, variant, options) for variant in SCENARIOS[scenario]]
