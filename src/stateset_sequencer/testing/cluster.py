"""Real, throwaway PostgreSQL clusters on loopback, for disaster drills and the test suite.

A :class:`Cluster` is one server in a directory of its own (``root/name``: ``data/``,
``server.log``, ``sock/``), listening on 127.0.0.1 and a port from :func:`free_port` only,
so it never meets the machine's own server. Drills build what an operator would run, out
of the stock tools (initdb, pg_ctl, pg_basebackup, psql): a primary with WAL archiving
(:func:`archive_command`), a streaming standby (:meth:`Cluster.standby_of`), a cluster
recovered from a base backup and the archive to a point in time
(:meth:`Cluster.restored_from`), and a crash that is a crash (:meth:`Cluster.kill`, SIGKILL
of the postmaster and of every child at once, not a shutdown the server gets to tidy up).

initdb refuses to run as root, so when we are root every server command runs as the
``postgres`` OS user (``runuser``) and whatever the server touches is owned by it. Our own
settings live in ``data/drill.conf``, included from ``postgresql.conf``, so they travel with
a base backup and a later :meth:`Cluster.configure` replaces rather than appends.

No pytest here: the drill CLI command uses this module too.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from .ports import free_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
OS_USER = "postgres"
SETTINGS_FILE = "drill.conf"
INCLUDE_LINE = f"include_if_exists = '{SETTINGS_FILE}'"

INITDB_TIMEOUT_S = 120.0
COMMAND_TIMEOUT_S = 60.0
BACKUP_TIMEOUT_S = 300.0
CONNECT_TIMEOUT_S = 5
KILL_TIMEOUT_S = 15.0
# pg_ctl's own -t bounds the wait; ours only catches a pg_ctl that hangs beyond it.
PG_CTL_GRACE_S = 15.0
POLL_S = 0.05
LOG_TAIL_CHARS = 800
# sun_path is 108 bytes with the terminating NUL; the server names its socket .s.PGSQL.PORT.
_SOCKET_PATH_MAX = 107

_SETTING_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_SETTING_LINE_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*) = (.*)")


class ClusterError(RuntimeError):
    """A server command failed; the message says which, with the tail of the server log."""


# --- binaries and the OS user ---------------------------------------------------------------------


def pg_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb and pg_ctl, else the
    directory of initdb on PATH."""
    found: list[tuple[tuple[int, ...], Path]] = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if not ((candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file()):
            continue
        try:
            version = tuple(int(part) for part in candidate.parent.name.split("."))
        except ValueError:
            continue
        found.append((version, candidate))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    if initdb is None:
        raise ClusterError("no initdb under /usr/lib/postgresql/*/bin or on PATH")
    return Path(initdb).parent


def archive_command(archive: Path) -> str:
    """An ``archive_command`` copying each finished segment into ``archive``. It never
    overwrites: a segment already there is reported as a failure, so the server retries
    and complains in its log instead of silently replacing history."""
    target = shlex.quote(str(Path(archive).resolve()))
    return f"test ! -f {target}/%f && cp %p {target}/%f"


def _owner() -> pwd.struct_passwd | None:
    """The OS user the server runs as when we are root; None when it runs as us."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        raise ClusterError(f"running as root and there is no {OS_USER!r} OS user") from None


def _as_owner() -> list[str]:
    if _owner() is None:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterError("running as root and runuser is missing")
    return [runuser, "-u", OS_USER, "--"]


def _give_to_owner(path: Path) -> None:
    owner = _owner()
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _give_tree_to_owner(top: Path) -> None:
    owner = _owner()
    if owner is None:
        return
    os.chown(top, owner.pw_uid, owner.pw_gid)
    for parent, dirs, files in os.walk(top):
        for entry in (*dirs, *files):
            os.chown(Path(parent) / entry, owner.pw_uid, owner.pw_gid, follow_symlinks=False)


def _ensure_reachable(root: Path) -> None:
    """Make ``root`` traversable by the server's OS user and check its ancestors are: a
    root-owned 0700 directory on the way (pytest's ``/tmp/pytest-of-root``) fails every
    server command with a bare "permission denied", so say so up front."""
    owner = _owner()
    root.mkdir(parents=True, exist_ok=True)
    if owner is None:
        return
    mode = root.stat().st_mode
    if not mode & stat.S_IXOTH:
        root.chmod(stat.S_IMODE(mode) | 0o055)
    groups = {owner.pw_gid} | {entry.gr_gid for entry in grp.getgrall() if OS_USER in entry.gr_mem}
    for ancestor in root.parents:
        info = ancestor.stat()
        if info.st_uid == owner.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise ClusterError(
                f"the {OS_USER} OS user cannot reach {root}: {ancestor} is mode "
                f"{stat.S_IMODE(info.st_mode):o}; put clusters under a directory it can "
                "traverse (e.g. tempfile.mkdtemp())"
            )


# --- processes ------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) from /proc/PID/stat; None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (command) state ppid ...": the command may hold spaces and parentheses.
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def _alive(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` is a live process (the one started at ``started``, if given). A
    zombie counts as gone: our PID 1 need not reap the postmaster's orphans."""
    found = _proc_stat(pid)
    if found is None or found[0] in ("Z", "X"):
        return False
    return started is None or found[2] == started


def _descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every process below ``pid``, from /proc."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = _proc_stat(int(entry.name))
        if found is not None:
            parents.setdefault(found[1], []).append((int(entry.name), found[2]))
    result: list[tuple[int, int]] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            result.append(child)
            todo.append(child[0])
    return result


def _accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect((host, port))
        except OSError:
            return False
        return True


def _run(argv: Sequence[str], what: str, timeout: float, log: Path | None = None) -> str:
    """Run a command to completion; its stdout, or ClusterError saying what failed."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd="/",  # the postgres OS user may not be allowed into ours
            env=_env(),
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{what} timed out after {timeout:g} s{_log_part(log)}") from None
    except OSError as exc:
        raise ClusterError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
        raise ClusterError(
            f"{what} failed: exit {done.returncode}: {output[-LOG_TAIL_CHARS:]}{_log_part(log)}"
        )
    return done.stdout.decode("utf-8", "replace")


def _env() -> dict[str, str]:
    # Connection settings of whoever runs us (PGHOST, PGSERVICE, ...) must not redirect
    # our tools to another server; the DSN says everything.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = str(CONNECT_TIMEOUT_S)
    env.setdefault("LC_ALL", "C")
    return env


def _tail(log: Path) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "no log"
    return "log: " + text[-LOG_TAIL_CHARS:]


def _log_part(log: Path | None) -> str:
    return "" if log is None else f"; {_tail(log)}"


def _quote(value: str) -> str:
    """A postgresql.conf string literal: quoting is valid for every setting, numbers and
    booleans included; the file's lexer takes backslash escapes as well as ''."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"a setting may not span lines: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


# --- a cluster ------------------------------------------------------------------------------------


class Cluster:
    """One PostgreSQL server in ``root/name`` (data/, server.log), listening on 127.0.0.1
    only, its unix socket in its own dir."""

    def __init__(self, root: Path, name: str, *, port: int | None = None) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a cluster name: {name!r}")
        self.name = name
        self.root = Path(root).resolve()
        self.dir = self.root / name
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.socket_dir = self.dir / "sock"
        self.host = HOST
        self.port = free_port(HOST) if port is None else port
        self._bin: Path | None = None

    def __repr__(self) -> str:
        return f"Cluster({self.name!r}, {self.dir}, port={self.port})"

    # --- connection ---

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{quote(database, safe='')}"

    # --- setup ---

    def init(self, *, durable: bool = True, settings: Mapping[str, str] | None = None) -> None:
        """initdb a new cluster and configure it to listen on our port only. ``durable=False``
        trades crash safety for speed (fsync off and friends): for tests, not drills."""
        self._make_dir()
        argv = [
            *_as_owner(),
            str(self._tool("initdb")),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if not durable:
            argv.append("--no-sync")
        _run(argv, "initdb", INITDB_TIMEOUT_S)
        wanted = self._own_settings()
        if not durable:
            wanted.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        wanted.update(settings or {})
        self.configure(wanted)

    def configure(self, settings: Mapping[str, str]) -> None:
        """Set these settings in ``data/drill.conf``, replacing earlier values of ours. Read at
        the next start (or ``SELECT pg_reload_conf()`` for those that allow it)."""
        config = self.data / "postgresql.conf"
        if not config.is_file():
            raise ClusterError(f"{self.name}: no {config}; init() the cluster first")
        for key in settings:
            if _SETTING_NAME_RE.fullmatch(key) is None:
                raise ValueError(f"not a setting name: {key!r}")
        ours = self.data / SETTINGS_FILE
        current: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in ours.read_text(encoding="utf-8").splitlines():
                match = _SETTING_LINE_RE.fullmatch(line)
                if match is not None:
                    current[match[1].lower()] = match[2]
        for key, value in settings.items():
            current[key.lower()] = _quote(str(value))
        text = "# Written by stateset_sequencer.testing.cluster; replaced on each configure().\n"
        text += "".join(f"{key} = {value}\n" for key, value in current.items())
        ours.write_text(text, encoding="utf-8")
        ours.chmod(0o600)
        _give_to_owner(ours)
        main = config.read_text(encoding="utf-8")
        if INCLUDE_LINE not in main.splitlines():
            # Last in the file, so ours win over initdb's; postgresql.auto.conf (ALTER
            # SYSTEM, pg_basebackup -R) is read after and still wins over ours.
            config.write_text(main.rstrip("\n") + "\n" + INCLUDE_LINE + "\n", encoding="utf-8")

    # --- life cycle ---

    def start(self, timeout: float = 60.0) -> None:
        if not (self.data / "PG_VERSION").is_file():
            raise ClusterError(
                f"{self.name}: cannot start, {self.data} is not a cluster "
                "(never initialised: call init(), base_backup or restored_from first)"
            )
        self._clear_stale_locks()
        try:
            # The server's output goes to its log; pg_ctl's to DEVNULL, so that the
            # daemonised server is left holding no pipe of ours.
            subprocess.run(
                [
                    *_as_owner(),
                    str(self._tool("pg_ctl")),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-w",
                    "-t",
                    str(max(1, round(timeout))),
                    "start",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout + PG_CTL_GRACE_S,
                check=True,
                cwd="/",
                env=_env(),
            )
        except subprocess.CalledProcessError as exc:
            raise ClusterError(
                f"{self.name}: pg_ctl start failed: exit {exc.returncode}; {_tail(self.log)}"
            ) from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise ClusterError(
                f"{self.name}: pg_ctl start failed: {exc}; {_tail(self.log)}"
            ) from None

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """pg_ctl stop (``smart``, ``fast`` or ``immediate``); nothing when not running."""
        if not self.running():
            return
        self._pg_ctl("stop", timeout, "-m", mode)

    def kill(self) -> None:
        """Crash the server as a host crash would: SIGKILL to the postmaster and to all its
        children at once, so none of them writes another byte or cleans up. Returns once
        they are gone and the port refuses connections."""
        found = self._postmaster()
        if found is None:
            return
        pid, started = found
        # Frozen, the postmaster forks no replacement between our listing its children
        # and killing them; killed first, they would be orphans we could no longer find.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        victims = [*_descendants(pid), (pid, started)]
        for victim, _started in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while any(_alive(victim, when) for victim, when in victims) or _accepts(
            self.host, self.port
        ):
            if time.monotonic() > deadline:
                left = [victim for victim, when in victims if _alive(victim, when)]
                raise ClusterError(
                    f"{self.name}: still alive {KILL_TIMEOUT_S:g} s after SIGKILL: "
                    f"pids {left}, port {self.port} accepting: {_accepts(self.host, self.port)}"
                )
            time.sleep(POLL_S)

    def running(self) -> bool:
        return self._postmaster() is not None

    def promote(self, timeout: float = 60.0) -> None:
        self._pg_ctl("promote", timeout)

    def remove(self) -> None:
        """Kill the server if it runs and delete everything of this cluster."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- SQL ---

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql over TCP; its output, unaligned, tuples only, stripped."""
        argv = [
            str(self._tool("psql")),
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            self.dsn(database),
            "-c",
            sql,
        ]
        return _run(argv, f"{self.name}: psql", COMMAND_TIMEOUT_S).strip()

    def in_recovery(self) -> bool:
        return self.psql("SELECT pg_is_in_recovery()") == "t"

    def wait_for(
        self, sql: str, expected: str, timeout: float = 60.0, database: str = "postgres"
    ) -> None:
        """Poll ``sql`` until its output is ``expected``; errors meanwhile (a server still
        starting or recovering) only mean "not yet"."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            try:
                got = self.psql(sql, database)
            except ClusterError as exc:
                last = str(exc)
            else:
                if got == expected:
                    return
                last = f"got {got!r}"
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{self.name}: {sql!r} did not return {expected!r} within {timeout:g} s "
                    f"(last: {last}); {_tail(self.log)}"
                )
            time.sleep(POLL_S * 2)

    # --- backups, standbys, recovery ---

    def base_backup(
        self,
        target: Path,
        *,
        wal_method: str = "stream",
        write_recovery_conf: bool = False,
        application_name: str | None = None,
    ) -> None:
        """A plain-format base backup of this (running) server into ``target``, which must
        not exist or be empty. With ``write_recovery_conf`` it is a standby's data dir."""
        target = Path(target).resolve()
        _ensure_reachable(target.parent)
        target.mkdir(mode=0o700, exist_ok=True)
        target.chmod(0o700)  # mkdir's mode is masked by umask; the server insists on 0700
        _give_to_owner(target)
        dsn = self.dsn()
        if application_name is not None:
            # -R copies the conninfo, so the standby reports this name to the primary
            # (what synchronous_standby_names matches).
            dsn += "?application_name=" + quote(application_name, safe="")
        argv = [
            *_as_owner(),
            str(self._tool("pg_basebackup")),
            "-d",
            dsn,
            "-D",
            str(target),
            "-X",
            wal_method,
            "--checkpoint=fast",
            "--format=plain",
        ]
        if write_recovery_conf:
            argv.append("-R")
        _run(argv, f"{self.name}: pg_basebackup", BACKUP_TIMEOUT_S, self.log)

    @classmethod
    def standby_of(
        cls,
        primary: Cluster,
        root: Path,
        name: str,
        *,
        application_name: str | None = None,
        port: int | None = None,
    ) -> Cluster:
        """A streaming hot standby of the running ``primary``, not started. It reports
        ``application_name`` (default: ``name``) to the primary."""
        standby = cls(root, name, port=port)
        standby._make_dir()
        primary.base_backup(
            standby.data,
            write_recovery_conf=True,
            application_name=application_name or name,
        )
        settings = standby._own_settings()
        # The backup carries the primary's drill.conf. Its synchronous_standby_names would,
        # once this standby is promoted, make every commit wait for a standby that is not
        # there; a promoted standby is a primary with none.
        settings.update(hot_standby="on", synchronous_standby_names="")
        standby.configure(settings)
        return standby

    @classmethod
    def shipped_standby_of(
        cls,
        primary: Cluster,
        root: Path,
        name: str,
        *,
        restore_command: str,
        port: int | None = None,
    ) -> Cluster:
        """A standby of the running ``primary`` fed by WAL shipping alone: it replays each
        segment the primary archives (``restore_command``), with no connection to the
        primary, as a standby in another region would. Not started. It lags the primary
        by up to ``archive_timeout``: what a promotion of it loses."""
        standby = cls(root, name, port=port)
        standby._make_dir()
        primary.base_backup(standby.data)
        settings = standby._own_settings()
        settings.update(
            hot_standby="on",
            synchronous_standby_names="",
            restore_command=restore_command,
            # It must not archive into the primary's archive while it is a standby, nor
            # after promotion: that region's archive is its own business.
            archive_mode="off",
        )
        standby.configure(settings)
        signal_file = standby.data / "standby.signal"
        signal_file.touch()
        _give_to_owner(signal_file)
        return standby

    @classmethod
    def restored_from(
        cls,
        backup: Path,
        root: Path,
        name: str,
        *,
        restore_command: str,
        target_time: str | None = None,
        target_action: str = "promote",
        port: int | None = None,
    ) -> Cluster:
        """A cluster that, once started, replays the WAL archive over a copy of the plain
        base backup ``backup`` (up to just before ``target_time``, or to the archive's end),
        then takes ``target_action``. Not started; the backup itself is left untouched.

        The backup's settings come along, archiving included: once promoted, the restored
        cluster archives its new timeline (``00000002.history`` first) into the same
        archive, and a later recovery from that archive follows the newest timeline unless
        told ``recovery_target_timeline``. Reconfigure ``archive_mode`` or
        ``archive_command`` before starting it where that matters."""
        backup = Path(backup).resolve()
        if not (backup / "PG_VERSION").is_file():
            raise ClusterError(f"{backup} is not a plain-format base backup (no PG_VERSION)")
        restored = cls(root, name, port=port)
        restored._make_dir()
        shutil.copytree(backup, restored.data, symlinks=True)
        restored.data.chmod(0o700)
        _give_tree_to_owner(restored.data)
        # A backup taken for a standby would otherwise follow its primary, not the archive.
        (restored.data / "standby.signal").unlink(missing_ok=True)
        settings = restored._own_settings()
        settings.update(
            restore_command=restore_command,
            recovery_target_action=target_action,
            recovery_target_inclusive="false",
        )
        if target_time is not None:
            settings["recovery_target_time"] = target_time
        restored.configure(settings)
        signal_file = restored.data / "recovery.signal"
        signal_file.touch()
        _give_to_owner(signal_file)
        return restored

    # --- helpers ---

    def _tool(self, name: str) -> Path:
        if self._bin is None:
            self._bin = pg_bin_dir()
        tool = self._bin / name
        if tool.is_file():
            return tool
        on_path = shutil.which(name)
        if on_path is None:
            raise ClusterError(f"no {name} in {self._bin} or on PATH")
        return Path(on_path)

    def _make_dir(self) -> None:
        socket_path = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(str(socket_path).encode()) > _SOCKET_PATH_MAX:
            raise ClusterError(
                f"{self.name}: {socket_path} is longer than a unix socket path may be; "
                "use a shorter root"
            )
        _ensure_reachable(self.root)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        _give_to_owner(self.dir)
        _give_to_owner(self.socket_dir)

    def _own_settings(self) -> dict[str, str]:
        return {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
        }

    def _postmaster(self) -> tuple[int, int] | None:
        """(pid, start time) of the live postmaster, from data/postmaster.pid."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first.strip())
        except (OSError, ValueError):
            return None
        found = _proc_stat(pid)
        if found is None or found[0] in ("Z", "X"):
            return None
        # After a crash the pid may belong to some other process by now; a postmaster
        # works in its data directory.
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")) != self.data:
                return None
        except FileNotFoundError:
            return None
        except OSError:
            pass  # not ours to inspect: trust the pid
        return pid, found[2]

    def _clear_stale_locks(self) -> None:
        """Remove the lock files of a postmaster that is dead but not reaped. The server
        takes a lock file whose pid still exists for a live rival; an orphaned postmaster
        killed by :meth:`kill` stays a zombie where PID 1 does not reap (containers), and a
        restart after the crash would be refused."""
        if self._postmaster() is not None:
            return  # alive: let pg_ctl say so
        lock = self.data / "postmaster.pid"
        if lock.exists():
            lock.unlink()
            for stale in self.socket_dir.glob(".s.PGSQL.*"):
                stale.unlink(missing_ok=True)

    def _pg_ctl(self, action: str, timeout: float, *options: str) -> None:
        argv = [
            *_as_owner(),
            str(self._tool("pg_ctl")),
            "-D",
            str(self.data),
            *options,
            "-w",
            "-t",
            str(max(1, round(timeout))),
            action,
        ]
        _run(argv, f"{self.name}: pg_ctl {action}", timeout + PG_CTL_GRACE_S, self.log)


class PgBackRest:
    """A pgBackRest repository in a local folder for one cluster, configured as the
    recovery guide configures it: WAL pushed with ``archive-push``, full backups kept by
    ``repo1-retention-full``, restores to a target time. Every command runs as the
    clusters' OS user, with the configuration file given explicitly, so nothing of the
    machine's own ``/etc/pgbackrest`` is read."""

    def __init__(self, root: Path, *, stanza: str = "drill", retention_full: int = 2) -> None:
        self.cluster: Cluster | None = None
        self.stanza = stanza
        self.dir = Path(root).resolve() / "pgbackrest"
        self.config = self.dir / "pgbackrest.conf"
        self.repository = self.dir / "repo"
        self.log = self.dir / "pgbackrest.log"
        self._retention_full = retention_full

    @property
    def archive_command(self) -> str:
        return f"{self._command_text()} archive-push %p"

    def write_config(self, cluster: Cluster) -> None:
        """The repository's configuration for ``cluster``; its ``archive_command`` (set
        before this) starts succeeding once this is written."""
        self.cluster = cluster
        _ensure_reachable(self.dir.parent)
        for folder in (self.dir, self.repository, self.dir / "log", self.dir / "lock"):
            folder.mkdir(mode=0o700, exist_ok=True)
            _give_to_owner(folder)
        self.config.write_text(
            "[global]\n"
            f"repo1-path={self.repository}\n"
            f"repo1-retention-full={self._retention_full}\n"
            f"log-path={self.dir / 'log'}\n"
            f"lock-path={self.dir / 'lock'}\n"
            "log-level-console=warn\n"
            "log-level-file=info\n"
            "start-fast=y\n"
            "\n"
            f"[{self.stanza}]\n"
            f"pg1-path={cluster.data}\n"
            f"pg1-port={cluster.port}\n"
            f"pg1-socket-path={cluster.socket_dir}\n",
            encoding="utf-8",
        )
        _give_to_owner(self.config)

    def create_stanza(self) -> None:
        """``stanza-create`` then ``check`` (which also proves archive-push works)."""
        self._run("stanza-create")
        self._run("check")

    def backup(self) -> None:
        self._run("--type=full", "backup")

    def restore(self, target: Cluster, target_time: str) -> None:
        """Restore the latest backup into ``target``'s data directory, to replay the
        repository's WAL up to just before ``target_time`` and then promote; ``target``
        gets its own port and socket and stops archiving (the repository is the original
        cluster's). Not started."""
        target._make_dir()
        target.data.mkdir(mode=0o700, exist_ok=True)
        target.data.chmod(0o700)
        _give_to_owner(target.data)
        self._run(
            f"--pg1-path={target.data}",
            "--type=time",
            f"--target={target_time}",
            "--target-exclusive",
            "--target-action=promote",
            "restore",
        )
        target.configure({**target._own_settings(), "archive_mode": "off"})

    def _command_text(self) -> str:
        return f"pgbackrest --config={shlex.quote(str(self.config))} --stanza={self.stanza}"

    def _run(self, *args: str) -> str:
        binary = shutil.which("pgbackrest")
        if binary is None:
            raise ClusterError("pgbackrest is not installed (Debian package pgbackrest)")
        return _run(
            [*_as_owner(), binary, f"--config={self.config}", f"--stanza={self.stanza}", *args],
            f"pgbackrest {args[-1]}",
            BACKUP_TIMEOUT_S,
            self.log,
        )
