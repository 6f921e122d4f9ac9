"""A real anvil node on loopback for the anchoring tests: the binary that ``make node-deps``
installs from npm (``@foundry-rs/anvil``, pinned in package-lock.json), never one found on
PATH, so every machine runs the same node.

``Anvil`` starts it on a free 127.0.0.1 port with a fixed chain id, hardfork and the
well-known development mnemonic (its keys are public test keys, worthless anywhere else),
waits until ``eth_chainId`` answers, and stops it on exit::

    with Anvil(chain_id=31337) as node:
        w3 = Web3(HTTPProvider(node.url))
        snapshot = node.rpc("evm_snapshot")

Whether a missing binary skips or fails a test is the test suite's call (tests/anchoring/
conftest.py: a failure under ``CI=true``, as for PostgreSQL in ``pg``); ``require_anvil``
only says clearly what is missing and how to get it.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

import httpx
from web3 import Web3

from .ports import free_port

# src/stateset_sequencer/testing/anvil.py -> the checkout (an editable install's source).
PROJECT_ROOT = Path(__file__).resolve().parents[3]
# anvil's own default, spelled out so that a change of default cannot move the accounts.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_CHAIN_ID = 31337
DEFAULT_ACCOUNTS = 10
# The fork eth-tester's py-evm backend runs, so both test chains apply the same rules.
DEFAULT_HARDFORK = "prague"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 10.0
START_ATTEMPTS = 3  # the free port may be taken by someone else before anvil binds it

# npm installs the binary from a per-platform optional dependency of @foundry-rs/anvil.
_PLATFORM_PACKAGES = {
    ("Linux", "x86_64"): "anvil-linux-amd64",
    ("Linux", "aarch64"): "anvil-linux-arm64",
    ("Linux", "arm64"): "anvil-linux-arm64",
    ("Darwin", "x86_64"): "anvil-darwin-amd64",
    ("Darwin", "arm64"): "anvil-darwin-arm64",
}


class AnvilMissing(RuntimeError):
    """The pinned anvil binary is not installed."""


class AnvilFailed(RuntimeError):
    """anvil was found but did not start, or did not answer."""


class DevAccount(NamedTuple):
    address: str  # checksummed
    private_key: str  # 0x-prefixed hex


def anvil_binary(root: Path = PROJECT_ROOT) -> Path:
    """Where ``npm ci`` puts this platform's anvil under ``root``/node_modules (whether or
    not it is there)."""
    key = (platform.system(), platform.machine())
    package = _PLATFORM_PACKAGES.get(key)
    if package is None:
        raise AnvilMissing(f"@foundry-rs/anvil ships no binary for {key[0]} {key[1]}")
    return root / "node_modules" / "@foundry-rs" / package / "bin" / "anvil"


def require_anvil(root: Path = PROJECT_ROOT) -> Path:
    """The anvil binary, or AnvilMissing saying how to install it."""
    binary = anvil_binary(root)
    if not binary.is_file():
        raise AnvilMissing(
            f"anvil is not installed at {binary}: run `make node-deps` "
            "(npm ci of package-lock.json) in the project root"
        )
    return binary


class Anvil:
    """One anvil process; a context manager, or ``start()``/``stop()`` from a fixture."""

    def __init__(
        self,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        accounts: int = DEFAULT_ACCOUNTS,
        hardfork: str = DEFAULT_HARDFORK,
        binary: Path | None = None,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        self.chain_id = chain_id
        self._account_count = accounts
        self._hardfork = hardfork
        self._binary = binary
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._client: httpx.Client | None = None
        self._ids = itertools.count(1)
        self.port = 0
        self.accounts: list[DevAccount] = []

    @property
    def url(self) -> str:
        if self._process is None:
            raise AnvilFailed("anvil is not running")
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._process is not None:
            raise AnvilFailed("anvil is already running")
        binary = self._binary if self._binary is not None else require_anvil()
        self._workdir = Path(tempfile.mkdtemp(prefix="seqtest-anvil-"))
        self._client = httpx.Client(timeout=RPC_TIMEOUT_S)
        problem = "not attempted"
        try:
            for _attempt in range(START_ATTEMPTS):
                problem = self._start_once(binary)
                if not problem:
                    # A test run that ends without stop() must not leave a node behind.
                    atexit.register(self.stop)
                    return
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise AnvilFailed(f"anvil did not start: {problem}")

    def _start_once(self, binary: Path) -> str:
        """Start on a fresh port; '' on success, otherwise why not (the process gone)."""
        assert self._workdir is not None
        self.port = free_port()
        config = self._workdir / f"config-{self.port}.json"
        log = self._workdir / f"anvil-{self.port}.log"
        command = [
            str(binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--accounts",
            str(self._account_count),
            "--mnemonic",
            DEV_MNEMONIC,
            "--hardfork",
            self._hardfork,
            "--config-out",
            str(config),
            "--silent",
        ]
        with log.open("wb") as sink:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self._start_timeout
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                return f"exit {code}: {_tail(log)}"
            answered = self._chain_id_answer()
            if answered is not None and config.is_file():
                if answered != self.chain_id:
                    self._kill()
                    return f"answered chain id {answered}, asked for {self.chain_id}"
                accounts = _read_accounts(config)
                if accounts is not None:
                    self.accounts = accounts
                    return ""
            if time.monotonic() > deadline:
                self._kill()
                return f"no eth_chainId answer within {self._start_timeout:g} s: {_tail(log)}"
            time.sleep(0.05)

    def _chain_id_answer(self) -> int | None:
        try:
            return int(str(self._call("eth_chainId", [])), 16)
        except (httpx.HTTPError, AnvilFailed, ValueError):
            return None

    def stop(self) -> None:
        """Kill anvil (it keeps nothing worth a graceful stop) and wait for it."""
        atexit.unregister(self.stop)
        self._kill()
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    # --- JSON-RPC ---------------------------------------------------------------------------------

    def rpc(self, method: str, params: list[Any] | tuple[Any, ...] = ()) -> Any:
        """One JSON-RPC call (``evm_snapshot``, ``evm_revert``, ``evm_mine``, …); its result,
        or AnvilFailed carrying the node's error."""
        if self._process is None:
            raise AnvilFailed("anvil is not running")
        return self._call(method, list(params))

    def _call(self, method: str, params: list[Any]) -> Any:
        assert self._client is not None
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        response = self._client.post(f"http://127.0.0.1:{self.port}", json=body)
        response.raise_for_status()
        answer = response.json()
        if not isinstance(answer, dict):
            raise AnvilFailed(f"{method}: not a JSON-RPC answer: {answer!r}")
        if "error" in answer:
            raise AnvilFailed(f"{method}: {answer['error']}")
        return answer.get("result")


def _read_accounts(config: Path) -> list[DevAccount] | None:
    """The dev accounts from anvil's --config-out file; None while it is still being
    written (anvil writes it once it listens, and a read can race the write)."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        addresses = data["available_accounts"]
        keys = data["private_keys"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(addresses, list) or not isinstance(keys, list):
        return None
    if len(addresses) != len(keys):
        return None
    return [
        DevAccount(Web3.to_checksum_address(a), str(k))
        for a, k in zip(addresses, keys, strict=True)
    ]


def _tail(log: Path) -> str:
    with contextlib.suppress(OSError):
        text = log.read_text(encoding="utf-8", errors="replace").strip()
        return text[-500:] if text else "no output"
    return "no log"
