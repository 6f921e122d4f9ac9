"""The project's SetRegistry contract from Python: its compiled artifact, the decoding of
its reverts and ``BatchCommitted`` logs, and deployment on a development chain.

The artifact (``artifacts/SetRegistry.json``) is built from ``contracts/SetRegistry.sol``
by ``scripts/build_contract.js`` and committed, so neither node nor solc is needed at run
time (docs/CONTRACT.md). It is read from the installed package on first use and cached;
importing this module does no I/O.

The selectors and topic below are written out rather than derived from the artifact: they
are the reference registry's interface, which the calldata built in ``ves.anchor`` relies
on, and the tests check that the compiled ABI still produces them.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any, cast

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from web3 import Web3
from web3.contract import Contract
from web3.types import TxParams

from ..ves import anchor
from . import ethereum  # noqa: F401 - imports the Ethereum stack with the recursion limit kept
from .faults import ContractRevert as ContractRevert

ARTIFACT_PACKAGE = "stateset_sequencer.anchoring"
ARTIFACT_PATH = ("artifacts", "SetRegistry.json")

# Computed from the signatures in one place (ves/anchor.py); tests hold each to the
# reference's value and to the committed ABI.
COMMIT_BATCH_SELECTOR = anchor.COMMIT_BATCH_SELECTOR
BATCH_EXISTS_SELECTOR = anchor.function_selector("batchExists(bytes32)")
GET_BATCH_COMMITMENT_SELECTOR = anchor.function_selector("getBatchCommitment(bytes32)")
GET_HEAD_SEQUENCE_SELECTOR = anchor.function_selector("getHeadSequence(bytes32,bytes32)")
AUTHORIZED_SEQUENCERS_SELECTOR = anchor.function_selector("authorizedSequencers(address)")
STRICT_MODE_SELECTOR = anchor.function_selector("strictModeEnabled()")
BATCH_COMMITTED_TOPIC = anchor.event_topic(anchor.BATCH_COMMITTED_SIGNATURE)
# What solc emits for require(cond, "text") / revert("text") and for panics (overflow,
# division by zero, assert): not in any ABI, so listed here.
ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")
PANIC_SELECTOR = bytes.fromhex("4e487b71")

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
RECEIPT_TIMEOUT_S = 30.0

_WORD = 32
_BATCH_COMMITTED_DATA = 5 * _WORD  # eventsRoot, newStateRoot, start, end, count
_U64_LIMIT = 1 << 64
_U32_LIMIT = 1 << 32


@dataclass(frozen=True)
class BatchCommittedLog:
    """One ``BatchCommitted`` log of the registry."""

    batch_id: bytes
    tenant_store_key: bytes
    events_root: bytes
    new_state_root: bytes
    sequence_start: int
    sequence_end: int
    event_count: int


class TransactionFailed(RuntimeError):
    """A transaction this module sent was mined but did not do what it was for."""


# --- the artifact ---------------------------------------------------------------------------------


@functools.cache
def artifact() -> Mapping[str, Any]:
    """The compiled artifact as committed (keys: contractName, compiler, settings,
    sourceSha256, abi, bytecode, deployedBytecode). Read once; the mapping is read-only,
    and ``abi()`` hands out copies, so no caller can change what the others see."""
    resource = resources.files(ARTIFACT_PACKAGE)
    for part in ARTIFACT_PATH:  # one level at a time: not every Traversable takes several
        resource = resource.joinpath(part)
    data: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return MappingProxyType(data)


def abi() -> list[dict[str, Any]]:
    """A fresh copy of the contract's ABI."""
    entries: list[dict[str, Any]] = copy.deepcopy(artifact()["abi"])
    return entries


def bytecode() -> bytes:
    """The creation code (constructor arguments are appended to it when deploying)."""
    return _hex(artifact()["bytecode"])


def deployed_bytecode() -> bytes:
    """The runtime code a deployment leaves at the contract's address."""
    return _hex(artifact()["deployedBytecode"])


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


# --- reverts --------------------------------------------------------------------------------------


def _canonical_type(param: Mapping[str, Any]) -> str:
    """The ABI type as it appears in a signature; tuples spelled out from their parts."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(part) for part in param.get("components", ()))
        return f"({inner}){kind.removeprefix('tuple')}"
    return kind


@functools.cache
def _errors() -> Mapping[bytes, tuple[str, tuple[str, ...]]]:
    table: dict[bytes, tuple[str, tuple[str, ...]]] = {
        ERROR_STRING_SELECTOR: ("Error", ("string",)),
        PANIC_SELECTOR: ("Panic", ("uint256",)),
    }
    for entry in artifact()["abi"]:
        if entry.get("type") != "error":
            continue
        types = tuple(_canonical_type(param) for param in entry.get("inputs", ()))
        signature = f"{entry['name']}({','.join(types)})"
        table[anchor.function_selector(signature)] = (str(entry["name"]), types)
    return MappingProxyType(table)


def decode_revert(data: bytes) -> ContractRevert | None:
    """The custom error (or ``Error(string)`` / ``Panic(uint256)``) that ``data``, a
    revert's return data, encodes; None when it is none of them or does not decode."""
    if len(data) < 4:
        return None
    known = _errors().get(bytes(data[:4]))
    if known is None:
        return None
    name, types = known
    try:
        args = abi_decode(list(types), bytes(data[4:]))
    except (DecodingError, ValueError, TypeError, OverflowError):
        # Return data is whatever the callee chose to send: a selector that happens to
        # match but a body that does not decode is still not one of our errors.
        return None
    return ContractRevert(name, tuple(args))


# --- logs -----------------------------------------------------------------------------------------


def _word_bytes(value: object) -> bytes | None:
    if not isinstance(value, bytes | bytearray | memoryview):
        return None
    word = bytes(value)
    return word if len(word) == _WORD else None


def decode_batch_committed(topics: Sequence[bytes], data: bytes) -> BatchCommittedLog | None:
    """The ``BatchCommitted`` log with these topics and data; None for any other log or
    for one whose shape is wrong. Logs come from a node we do not control, so nothing
    about them is assumed and nothing raises: a malformed log is simply not ours."""
    if len(topics) != 3:
        return None
    words = [_word_bytes(topic) for topic in topics]
    if words[0] != BATCH_COMMITTED_TOPIC or words[1] is None or words[2] is None:
        return None
    if not isinstance(data, bytes | bytearray | memoryview):
        return None
    raw = bytes(data)
    if len(raw) != _BATCH_COMMITTED_DATA:
        return None
    start, end, count = (
        int.from_bytes(raw[offset : offset + _WORD], "big") for offset in (64, 96, 128)
    )
    # The contract's types are uint64/uint64/uint32; wider values mean some other encoder.
    if start >= _U64_LIMIT or end >= _U64_LIMIT or count >= _U32_LIMIT:
        return None
    return BatchCommittedLog(
        batch_id=words[1],
        tenant_store_key=words[2],
        events_root=raw[0:32],
        new_state_root=raw[32:64],
        sequence_start=start,
        sequence_end=end,
        event_count=count,
    )


# --- deployment on a development chain ------------------------------------------------------------


def registry(w3: Web3, address: str) -> Contract:
    """A web3 handle on a deployed registry."""
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=cast(Any, abi()))


def deploy(w3: Web3, deployer: str, *, sequencer: str | None = None) -> str:
    """Deploy from ``deployer``, an account the node signs for (eth-tester, anvil), and
    return the checksum address. ``deployer`` becomes the owner; ``sequencer``, when given,
    is authorized by the constructor, otherwise nobody is until ``authorize``."""
    factory = w3.eth.contract(abi=cast(Any, abi()), bytecode=bytecode())
    initial = ZERO_ADDRESS if sequencer is None else Web3.to_checksum_address(sequencer)
    tx_hash = factory.constructor(initial).transact(_sender(deployer))
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S)
    created = receipt.get("contractAddress")
    if receipt["status"] != 1 or created is None:
        raise TransactionFailed(f"SetRegistry deployment {tx_hash.hex()} failed")
    address = Web3.to_checksum_address(created)
    # Guards against a node that runs another fork's rules and leaves different code.
    if bytes(w3.eth.get_code(address)) != deployed_bytecode():
        raise TransactionFailed(f"code at {address} is not the SetRegistry artifact's")
    return address


def authorize(w3: Web3, address: str, owner: str, sequencer: str, allowed: bool = True) -> bytes:
    """``setSequencerAuthorization(sequencer, allowed)`` sent from ``owner`` (an account
    the node signs for); returns the mined transaction's hash."""
    call = registry(w3, address).functions.setSequencerAuthorization(
        Web3.to_checksum_address(sequencer), allowed
    )
    tx_hash = call.transact(_sender(owner))
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S)
    if receipt["status"] != 1:
        raise TransactionFailed(f"setSequencerAuthorization {tx_hash.hex()} reverted")
    return bytes(tx_hash)


def _sender(account: str) -> TxParams:
    return {"from": Web3.to_checksum_address(account)}
