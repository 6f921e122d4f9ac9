"""The chain client: SetRegistry calls over JSON-RPC (web3.py), EIP-1559 transactions
signed here with ``SEQUENCER_PRIVATE_KEY``, and every call behind one circuit breaker.

web3's synchronous client runs on worker threads, so that one code path serves a node on
``L2_RPC_URL`` and the in-process eth-tester chain of the unit tests. Calldata is built by
``ves.anchor`` (byte-level, vector-tested); views are decoded with eth-abi.

Failures are sorted the way the reference sorts them (docs/ANCHORING.md): terminal ones
(a revert, a custom error, a nonce fault, insufficient funds, a bad signature, out of gas)
are checked before transport ones and never retried; transport faults and timeouts are
retried a few times and count against the breaker. A revert is a healthy node saying no,
so it does not open the breaker.
"""

from __future__ import annotations

import ast
import asyncio
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    TimeExhausted,
    TransactionNotFound,
    Web3RPCError,
)
from web3.providers.rpc import HTTPProvider

from ..store.records import CommitmentRow
from ..ves import anchor
from . import contract, ethereum  # noqa: F401 - ethereum: the recursion limit put back
from .breaker import BreakerPolicy, BreakerStatus, CircuitBreaker
from .faults import NOT_CONFIGURED as NOT_CONFIGURED
from .faults import ChainError as ChainError
from .faults import ChainFailure as ChainFailure

T = TypeVar("T")

# Terminal before transport (the reference's order): "execution reverted: connection…"
# is a revert, not a network fault.
TERMINAL_MARKERS = (
    "revert",
    "custom error",
    "nonce too low",
    "nonce too high",
    "already known",
    "insufficient funds",
    "invalid signature",
    "out of gas",
)
TRANSPORT_MARKERS = (
    "connection",
    "timed out",
    "timeout",
    "refused",
    "reset by peer",
    "broken pipe",
    "temporarily unavailable",
    "502",
    "503",
    "504",
)
DEFAULT_PRIORITY_FEE = 1_000_000_000  # 1 gwei, when the node does not suggest one
GAS_HEADROOM = 1.25


@dataclass(frozen=True, slots=True)
class ChainConfig:
    rpc_url: str
    registry_address: str
    private_key: str
    chain_id: int | None = None  # None: read from the node
    rpc_timeout_s: float = 30.0
    receipt_timeout_s: float = 120.0
    receipt_poll_s: float = 0.5
    retries: int = 3
    retry_backoff_s: float = 0.5
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)


@dataclass(frozen=True, slots=True)
class OnChainBatch:
    """``getBatchCommitment``: what the registry stored for a batch id."""

    events_root: bytes
    new_state_root: bytes
    sequence_start: int
    sequence_end: int
    event_count: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class RegistryProbe:
    """What ``doctor`` asks of the chain: is the registry there, may we write to it."""

    chain_id: int
    has_code: bool
    sender_authorized: bool
    strict_mode: bool
    balance_wei: int


@dataclass(frozen=True, slots=True)
class Sent:
    tx_hash: bytes
    block_number: int
    gas_used: int


@dataclass(frozen=True, slots=True)
class FoundLog:
    """A ``BatchCommitted`` log of the registry and where it sits on the canonical chain."""

    tx_hash: bytes
    block_number: int
    log: contract.BatchCommittedLog


@dataclass(frozen=True, slots=True)
class TransactionLogs:
    """A mined transaction as ``POST /ves/commitments/verify`` looks at it."""

    tx_hash: bytes
    block_number: int
    to: str | None
    succeeded: bool
    batch_logs: list[contract.BatchCommittedLog]  # the registry's BatchCommitted logs only


def classify(exc: BaseException) -> ChainError:
    """One exception of web3, requests or the node, as a :class:`ChainError`."""
    if isinstance(exc, ChainError):
        return exc
    revert = _revert_of(exc)
    text = str(exc)
    lowered = text.lower()
    if revert is not None or isinstance(exc, ContractLogicError):
        name = revert.name if revert is not None else "unknown reason"
        return ChainError(ChainFailure.REVERTED, f"Contract call failed: {name}", revert)
    if any(marker in lowered for marker in TERMINAL_MARKERS):
        return ChainError(ChainFailure.REJECTED, f"Failed to send transaction: {_short(text)}")
    if isinstance(exc, TimeoutError | TimeExhausted):
        return ChainError(ChainFailure.TIMEOUT, "Anchor operation timed out")
    if isinstance(exc, OSError) or any(marker in lowered for marker in TRANSPORT_MARKERS):
        return ChainError(ChainFailure.UNAVAILABLE, f"RPC endpoint unavailable: {_short(text)}")
    if type(exc).__module__.startswith(("requests", "urllib3")):
        return ChainError(ChainFailure.UNAVAILABLE, f"RPC endpoint unavailable: {_short(text)}")
    return ChainError(ChainFailure.REJECTED, f"Contract call failed: {_short(text)}")


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _revert_of(exc: BaseException) -> contract.ContractRevert | None:
    data: Any = None
    if isinstance(exc, ContractCustomError | ContractLogicError):
        data = exc.data
    elif isinstance(exc, Web3RPCError) and isinstance(exc.rpc_response, dict):
        error = exc.rpc_response.get("error")
        if isinstance(error, dict):
            data = error.get("data")
    elif type(exc).__module__.startswith("eth_tester") and exc.args:
        data = _tester_revert_data(str(exc.args[0]))
    if isinstance(data, dict):  # some nodes nest it once more
        data = data.get("data")
    if isinstance(data, str):
        try:
            data = bytes.fromhex(data.removeprefix("0x"))
        except ValueError:
            return None
    if isinstance(data, bytes | bytearray) and len(data) >= 4:
        return contract.decode_revert(bytes(data))
    return None


def _tester_revert_data(text: str) -> bytes | None:
    """eth-tester (the in-process chain) puts the revert data in its message, as the repr
    of the bytes: ``execution reverted: b'\\xe2i\\xf80'``."""
    _, marker, literal = text.partition("execution reverted: ")
    if not marker or not literal.startswith(("b'", 'b"')):
        return None
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, bytes) else None


def _word(value: uuid.UUID) -> bytes:
    return anchor.uuid_to_bytes32(value)


class Chain:
    """One registry on one chain, for one sender. Safe to share across tasks: sends are
    serialized (one nonce sequence), reads run side by side."""

    def __init__(
        self,
        config: ChainConfig,
        *,
        w3: Web3 | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.registry = Web3.to_checksum_address(config.registry_address)
        self._account: LocalAccount = Account.from_key(config.private_key)
        self._w3 = w3 if w3 is not None else _http_web3(config)
        self.breaker = breaker or CircuitBreaker(config.breaker)
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="chain")
        self._send_lock = asyncio.Lock()
        self._nonce: int | None = None  # next nonce; None: ask the node
        self._chain_id: int | None = None

    @property
    def sender(self) -> ChecksumAddress:
        return self._account.address

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def status(self) -> BreakerStatus:
        return self.breaker.status()

    def forget_nonce(self) -> None:
        """Read the sender's nonce from the node before the next send: after a reorg or a
        lost receipt the count we hold may be ahead of the chain's (a transaction with a
        nonce too high would wait in the pool for ever)."""
        self._nonce = None

    # --- plumbing -------------------------------------------------------------------

    async def _once(self, fn: Callable[[], T]) -> T:
        if not self.breaker.allow():
            raise ChainError(
                ChainFailure.BREAKER_OPEN,
                "Anchor circuit breaker is open — RPC endpoint unavailable",
            )
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(
                loop.run_in_executor(self._pool, fn), self.config.rpc_timeout_s
            )
        except Exception as exc:  # every fault of the node or transport is sorted here
            error = classify(exc)
            if error.transient:
                self.breaker.failed(error.message)
            else:
                self.breaker.succeeded(time.monotonic() - started)
            raise error from None
        self.breaker.succeeded(time.monotonic() - started)
        return result

    async def _call(self, fn: Callable[[], T]) -> T:
        """``fn`` on a worker thread, retried on transport faults with doubling pauses."""
        pause = self.config.retry_backoff_s
        for attempt in range(self.config.retries + 1):
            try:
                return await self._once(fn)
            except ChainError as error:
                if not error.transient or attempt == self.config.retries:
                    raise
            await self._sleep(pause)
            pause *= 2
        raise AssertionError("unreachable")

    async def _eth_call(self, data: bytes) -> bytes:
        tx: Any = {"to": self.registry, "data": "0x" + data.hex()}
        return bytes(await self._call(lambda: self._w3.eth.call(tx)))

    def _receipt(self, tx_hash: bytes) -> Any:
        """The receipt on the canonical chain (blocking; run through ``_call``), or None
        when the node holds no such mined transaction."""
        try:
            return self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return None

    # --- reads ----------------------------------------------------------------------

    async def chain_id(self) -> int:
        """The node's chain id, checked once against ``L2_CHAIN_ID`` when that is set."""
        if self._chain_id is None:
            node = int(await self._call(lambda: self._w3.eth.chain_id))
            expected = self.config.chain_id
            if expected is not None and node != expected:
                raise ChainError(
                    ChainFailure.WRONG_CHAIN,
                    f"the node at L2_RPC_URL is chain {node}, L2_CHAIN_ID says {expected}",
                )
            self._chain_id = node
        return self._chain_id

    async def block_number(self) -> int:
        return int(await self._call(lambda: self._w3.eth.block_number))

    async def batch_exists(self, batch_id: uuid.UUID) -> bool:
        out = await self._eth_call(contract.BATCH_EXISTS_SELECTOR + _word(batch_id))
        (exists,) = abi_decode(["bool"], out)
        return bool(exists)

    async def batch_commitment(self, batch_id: uuid.UUID) -> OnChainBatch | None:
        """What the registry holds for the batch; None when it holds nothing."""
        out = await self._eth_call(contract.GET_BATCH_COMMITMENT_SELECTOR + _word(batch_id))
        root, state, start, end, count, stamp = abi_decode(
            ["bytes32", "bytes32", "uint64", "uint64", "uint32", "uint64"], out
        )
        if int(stamp) == 0:
            return None
        return OnChainBatch(bytes(root), bytes(state), int(start), int(end), int(count), int(stamp))

    async def head_sequence(self, tenant_id: uuid.UUID, store_id: uuid.UUID) -> int:
        out = await self._eth_call(
            contract.GET_HEAD_SEQUENCE_SELECTOR + _word(tenant_id) + _word(store_id)
        )
        (head,) = abi_decode(["uint64"], out)
        return int(head)

    async def probe(self) -> RegistryProbe:
        chain_id = await self.chain_id()
        code = await self._call(lambda: self._w3.eth.get_code(self.registry))
        if not code:
            return RegistryProbe(chain_id, False, False, False, 0)
        sender = bytes(12) + bytes.fromhex(self.sender[2:])
        (authorized,) = abi_decode(
            ["bool"], await self._eth_call(contract.AUTHORIZED_SEQUENCERS_SELECTOR + sender)
        )
        (strict,) = abi_decode(["bool"], await self._eth_call(contract.STRICT_MODE_SELECTOR))
        balance = int(await self._call(lambda: self._w3.eth.get_balance(self.sender)))
        return RegistryProbe(chain_id, True, bool(authorized), bool(strict), balance)

    async def receipt_block(self, tx_hash: bytes) -> int | None:
        """The block of a mined transaction on the canonical chain; None when the chain
        does not hold it (never mined, or dropped by a reorg)."""

        def get() -> int | None:
            receipt = self._receipt(tx_hash)
            return None if receipt is None else int(receipt["blockNumber"])

        return await self._call(get)

    async def find_batch_log(self, batch_id: uuid.UUID) -> FoundLog | None:
        """The registry's ``BatchCommitted`` log for the batch, where ``batchExists`` says
        it is on chain but we hold no transaction (a send whose answer we lost)."""
        params: Any = {
            "address": self.registry,
            "fromBlock": 0,
            "toBlock": "latest",
            "topics": ["0x" + contract.BATCH_COMMITTED_TOPIC.hex(), "0x" + _word(batch_id).hex()],
        }
        logs = await self._call(lambda: self._w3.eth.get_logs(params))
        for entry in logs:
            decoded = contract.decode_batch_committed(
                [bytes(t) for t in entry["topics"]], bytes(entry["data"])
            )
            if decoded is not None:
                return FoundLog(bytes(entry["transactionHash"]), int(entry["blockNumber"]), decoded)
        return None

    async def transaction_logs(self, tx_hash: bytes) -> TransactionLogs | None:
        def get() -> TransactionLogs | None:
            receipt = self._receipt(tx_hash)
            if receipt is None:
                return None
            found = []
            for entry in receipt["logs"]:
                if Web3.to_checksum_address(entry["address"]) != self.registry:
                    continue
                decoded = contract.decode_batch_committed(
                    [bytes(t) for t in entry["topics"]], bytes(entry["data"])
                )
                if decoded is not None:
                    found.append(decoded)
            to = receipt.get("to")
            return TransactionLogs(
                bytes(receipt["transactionHash"]),
                int(receipt["blockNumber"]),
                None if to is None else Web3.to_checksum_address(to),
                int(receipt["status"]) == 1,
                found,
            )

        return await self._call(get)

    # --- the one write ----------------------------------------------------------------

    async def send_commitment(self, row: CommitmentRow) -> Sent:
        """Send ``commitBatch`` for the commitment and wait for its receipt. A revert at
        estimation (strict mode, authorization) is reported with its custom error and
        nothing is sent."""
        data = anchor.commit_batch_calldata(
            batch_id=row.batch_id,
            tenant_id=row.tenant_id,
            store_id=row.store_id,
            events_root=row.merkle_root,
            prev_state_root=row.prev_state_root,
            new_state_root=row.new_state_root,
            sequence_start=row.sequence_start,
            sequence_end=row.sequence_end,
            event_count=row.leaf_count,
        )
        chain_id = await self.chain_id()
        async with self._send_lock:
            tx_hash = await self._send(data, chain_id, resynced=False)
        return await self._await_receipt(tx_hash)

    async def _send(self, data: bytes, chain_id: int, *, resynced: bool) -> bytes:
        call: Any = {"from": self.sender, "to": self.registry, "data": "0x" + data.hex()}
        gas = await self._call(lambda: self._w3.eth.estimate_gas(call))
        if self._nonce is None:
            self._nonce = int(
                await self._call(lambda: self._w3.eth.get_transaction_count(self.sender, "pending"))
            )
        base, priority = await self._call(self._fees)
        tx: Any = {
            "type": 2,
            "chainId": chain_id,
            "nonce": self._nonce,
            "to": self.registry,
            "data": "0x" + data.hex(),
            "value": 0,
            "gas": int(gas * GAS_HEADROOM) + 21_000,
            "maxPriorityFeePerGas": priority,
            "maxFeePerGas": 2 * base + priority,
        }
        signed = self._account.sign_transaction(tx)
        raw, tx_hash = bytes(signed.raw_transaction), bytes(signed.hash)
        try:
            await self._call(lambda: self._w3.eth.send_raw_transaction(raw))
        except ChainError as error:
            text = error.message.lower()
            if "already known" in text:
                pass  # a retry of our own send reached the node twice: it is in
            elif "nonce" in text and not resynced:
                # Another process (a previous leader, this one before a restart) used the
                # nonce we held: learn the node's count and build the transaction again.
                self._nonce = None
                return await self._send(data, chain_id, resynced=True)
            else:
                if "nonce" in text:
                    self._nonce = None
                raise
        self._nonce += 1
        return tx_hash

    def _fees(self) -> tuple[int, int]:
        block = self._w3.eth.get_block("latest")
        base = int(block.get("baseFeePerGas", 0) or 0)
        try:
            priority = int(self._w3.eth.max_priority_fee)
        except (ValueError, NotImplementedError, Web3RPCError):
            priority = DEFAULT_PRIORITY_FEE
        return base, max(priority, 1)

    async def _await_receipt(self, tx_hash: bytes) -> Sent:
        deadline = time.monotonic() + self.config.receipt_timeout_s

        while True:
            receipt = await self._call(lambda: self._receipt(tx_hash))
            if receipt is not None:
                break
            if time.monotonic() >= deadline:
                self.forget_nonce()
                raise ChainError(
                    ChainFailure.TIMEOUT,
                    f"Failed to get receipt: 0x{tx_hash.hex()} not mined within "
                    f"{self.config.receipt_timeout_s:g} s",
                )
            await self._sleep(self.config.receipt_poll_s)
        if int(receipt["status"]) != 1:
            raise ChainError(
                ChainFailure.REVERTED,
                f"Contract call failed: 0x{tx_hash.hex()} reverted in block "
                f"{int(receipt['blockNumber'])}",
            )
        return Sent(tx_hash, int(receipt["blockNumber"]), int(receipt["gasUsed"]))


def _http_web3(config: ChainConfig) -> Web3:
    # web3's own retries are off: ours count against the breaker and know what is terminal.
    provider = HTTPProvider(
        config.rpc_url,
        request_kwargs={"timeout": config.rpc_timeout_s},
        exception_retry_configuration=None,
    )
    return Web3(provider)
