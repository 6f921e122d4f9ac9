"""Patroni on loopback, for the failover drill's automatic-promotion run: one etcd member
as the DCS and one Patroni node per PostgreSQL server, all from Debian's packages
(``patroni``, ``etcd-server``), each a child process in a session of its own so that a
node can be lost whole (Patroni and its PostgreSQL together, as a host crash would).

Each node's PostgreSQL lives where a :class:`~.cluster.Cluster` of the same root and name
keeps its data and socket, so the cluster manager's ``psql``, ``wait_for`` and ``kill``
work on it; Patroni itself runs initdb, pg_basebackup and promotion.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .cluster import Cluster, ClusterError, _as_owner, _give_to_owner, pg_bin_dir
from .ports import free_port

START_TIMEOUT_S = 60.0
POLL_S = 0.1
# The leader key's time to live: how long a lost primary holds the lead. Patroni allows
# no less than loop_wait + 2 * retry_timeout.
TTL_S = 10
LOOP_WAIT_S = 1
RETRY_TIMEOUT_S = 4


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ClusterError(f"{name} is not installed (Debian packages patroni, etcd-server)")
    return found


class Etcd:
    """One etcd member, its client port on loopback, its data under ``root``."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root).resolve() / "etcd"
        self.port, self.peer_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "etcd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    _binary("etcd"),
                    "--name=drill",
                    f"--data-dir={self.dir / 'data'}",
                    f"--listen-client-urls={self.url}",
                    f"--advertise-client-urls={self.url}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=drill={peer}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _until(lambda: _get(f"{self.url}/health") is not None, "etcd to answer /health", self.log)

    def stop(self) -> None:
        _end(self.process)
        self.process = None


class PatroniNode:
    """One Patroni node of scope ``scope``, managing the PostgreSQL of ``cluster``."""

    def __init__(self, cluster: Cluster, etcd: Etcd, *, scope: str = "drill") -> None:
        self.cluster = cluster
        self.etcd = etcd
        self.scope = scope
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.config = cluster.dir / "patroni.yml"
        self.log = cluster.dir / "patroni.log"
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self, parameters: dict[str, str]) -> None:
        cluster = self.cluster
        cluster._make_dir()
        # JSON is YAML: no YAML writer needed, and every value is quoted exactly.
        config = {
            "scope": self.scope,
            "name": cluster.name,
            "restapi": {
                "listen": f"127.0.0.1:{self.api_port}",
                "connect_address": f"127.0.0.1:{self.api_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd.port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL_S,
                    "loop_wait": LOOP_WAIT_S,
                    "retry_timeout": RETRY_TIMEOUT_S,
                    "maximum_lag_on_failover": 1 << 30,
                    "postgresql": {"use_pg_rewind": False, "parameters": parameters},
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"auth": "trust"}],
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{cluster.port}",
                "connect_address": f"127.0.0.1:{cluster.port}",
                "data_dir": str(cluster.data),
                "bin_dir": str(pg_bin_dir()),
                "pgpass": str(cluster.dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres"},
                    "replication": {"username": "postgres"},
                },
                "parameters": {"unix_socket_directories": str(cluster.socket_dir)},
            },
        }
        self.config.write_text(json.dumps(config, indent=2), encoding="utf-8")
        _give_to_owner(self.config)

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [*_as_owner(), _binary("patroni"), str(self.config)],
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if not k.startswith(("PG", "PYTHON"))},
            )

    def role(self) -> str | None:
        """``primary``, ``replica``, or None while the node's API does not answer."""
        answer = _get(self.api + "/patroni")
        if answer is None:
            return None
        role = answer.get("role")
        return "primary" if role == "master" else str(role) if role else None

    def wait_role(self, role: str, timeout: float = START_TIMEOUT_S) -> None:
        wanted = role

        def reached() -> bool:
            answer = _get(self.api + "/patroni")
            if answer is None:
                return False
            now = "primary" if answer.get("role") == "master" else answer.get("role")
            return now == wanted and answer.get("state") == "running"

        _until(reached, f"{self.cluster.name} to run as {role}", self.log, timeout)

    def kill(self) -> None:
        """The node lost whole: Patroni's session and its PostgreSQL, SIGKILL."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None
        self.cluster.kill()

    def stop(self) -> None:
        self.kill()


def _get(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            body = json.loads(answer.read() or b"{}")
            return body if isinstance(body, dict) else {}
    except urllib.error.HTTPError as exc:  # Patroni answers 503 with a body too
        with contextlib.suppress(ValueError):
            body = json.loads(exc.read() or b"{}")
            return body if isinstance(body, dict) else {}
        return {}
    except (OSError, ValueError):
        return None


def _until(done: object, what: str, log: Path, timeout: float = START_TIMEOUT_S) -> None:
    assert callable(done)
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
            raise ClusterError(f"timed out waiting for {what}; log: {tail}")
        time.sleep(POLL_S)


def _end(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
