"""Fixtures for the SetRegistry tests: the contract on eth-tester (in process, always
there) and on a real anvil node from node_modules.

Node tools are installed by ``make node-deps``. Without them the tests that need them fail
under ``CI=true`` (a CI run must not pass by skipping) and are skipped elsewhere with the
reason, as for PostgreSQL in ``stateset_sequencer.testing.pg``.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from stateset_sequencer.anchoring.contract import ContractRevert, decode_revert
from stateset_sequencer.config import TestEnvironment
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.ports import Store
from stateset_sequencer.testing.anvil import Anvil, AnvilMissing, require_anvil

ROOT = Path(__file__).resolve().parents[2]
ANVIL_CHAIN_ID = 424242  # not anvil's default, so the test shows the option is honoured


def missing(reason: str) -> NoReturn:
    if TestEnvironment().strict:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node() -> str:
    """The node executable, with the npm packages of package-lock.json installed."""
    found = shutil.which("node")
    if found is None:
        missing("node is not on PATH; install Node.js, then run `make node-deps`")
    if not (ROOT / "node_modules" / "solc" / "package.json").is_file():
        missing("node_modules/solc is missing: run `make node-deps`")
    return found


def _anvil_binary() -> Path:
    try:
        return require_anvil()
    except AnvilMissing as exc:
        reason = str(exc)
    missing(reason)  # outside the except block: the report is the reason, not a traceback


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    with Anvil(binary=_anvil_binary(), chain_id=ANVIL_CHAIN_ID) as started:
        yield started


@pytest.fixture
def tester() -> Web3:
    """A fresh in-process chain (py-evm) per test, with ten funded unlocked accounts."""
    return Web3(EthereumTesterProvider())


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert data behind a failed call or transaction. web3 over HTTP keeps it
    on the exception (``data``); its eth-tester provider re-raises with a message only, so
    the data is taken from the eth-tester exception it was raised from."""
    if isinstance(exc, ContractCustomError | ContractLogicError) and isinstance(exc.data, str):
        return bytes.fromhex(exc.data.removeprefix("0x"))
    seen: BaseException | None = exc
    while seen is not None:
        for arg in seen.args[:1]:
            inner = arg.args[0] if isinstance(arg, Exception) and arg.args else arg
            if isinstance(inner, bytes):
                return inner
        seen = seen.__cause__ or seen.__context__
    return None


def revert_of(action: Callable[[], object]) -> ContractRevert:
    """Run ``action``, which must revert with one of the contract's errors; that error."""
    caught: Exception | None = None
    try:
        action()
    except Exception as exc:
        caught = exc
    assert caught is not None, "the call did not revert"
    data = revert_data(caught)
    assert data is not None, f"no revert data in {caught!r}"
    decoded = decode_revert(data)
    assert decoded is not None, f"undecodable revert data 0x{data.hex()}"
    return decoded


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated SQLite store: the anchoring rules are the same over either backend (the
    storage they use is held to both by tests/contract/test_commitments.py)."""
    url = f"sqlite:///{tmp_path / 'anchoring.db'}"
    opened = await open_store(parse_database_url(url, tmp_path))
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()
