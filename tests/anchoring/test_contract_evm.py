"""SetRegistry's behaviour, run on py-evm in process (web3's eth-tester): deployment and
ownership, sequencer authorization, commits and what they store and log, every revert of
commitBatch in its documented order, strict mode (and the first batch of a stream being
free of it), the pause switch, proofs, inclusion paths, and the decoders of
``anchoring.contract`` on hostile input."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from eth_abi.abi import encode
from hexbytes import HexBytes
from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from stateset_sequencer.anchoring import contract
from stateset_sequencer.anchoring.contract import (
    BATCH_COMMITTED_TOPIC,
    BatchCommittedLog,
    ContractRevert,
    decode_batch_committed,
    decode_revert,
)
from stateset_sequencer.ves import anchor

from .conftest import revert_of

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
ZERO = bytes(32)


def word(tag: int) -> bytes:
    return bytes([tag]) * 32


TENANT = word(0x71)
STORE = word(0x72)
OTHER_STORE = word(0x73)


def key(tenant: bytes, store: bytes) -> bytes:
    return anchor.keccak256(tenant + store)


@dataclass(frozen=True)
class Batch:
    batch_id: bytes
    start: int
    end: int
    prev_root: bytes = ZERO
    new_root: bytes = word(0xA1)
    events_root: bytes = word(0xE1)
    count: int | None = None  # None: the right one
    tenant: bytes = TENANT
    store: bytes = STORE

    def args(self) -> tuple[Any, ...]:
        count = self.end - self.start + 1 if self.count is None else self.count
        return (
            self.batch_id,
            self.tenant,
            self.store,
            self.events_root,
            self.prev_root,
            self.new_root,
            self.start,
            self.end,
            count,
        )

    def after(self, batch_id: bytes, size: int, new_root: bytes) -> Batch:
        """The batch that continues this one's chain."""
        return replace(
            self,
            batch_id=batch_id,
            start=self.end + 1,
            end=self.end + size,
            prev_root=self.new_root,
            new_root=new_root,
            count=None,
        )


FIRST = Batch(word(0x01), 1, 3, prev_root=word(0x50), new_root=word(0xA1))
SECOND = FIRST.after(word(0x02), 2, word(0xA2))


@dataclass
class Registry:
    w3: Web3
    address: str
    owner: str
    sequencer: str
    stranger: str

    @property
    def c(self) -> Contract:
        return contract.registry(self.w3, self.address)

    def send(self, name: str, *args: Any, sender: str | None = None) -> TxReceipt:
        call = self.c.get_function_by_name(name)(*args)
        tx_hash = call.transact({"from": sender or self.owner})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1
        return receipt

    def call(self, name: str, *args: Any) -> Any:
        return self.c.get_function_by_name(name)(*args).call()

    def commit(self, batch: Batch, sender: str | None = None) -> TxReceipt:
        return self.send("commitBatch", *batch.args(), sender=sender or self.sequencer)

    def commit_reverts(self, batch: Batch, sender: str | None = None) -> ContractRevert:
        return self.reverts("commitBatch", *batch.args(), sender=sender or self.sequencer)

    def reverts(self, name: str, *args: Any, sender: str | None = None) -> ContractRevert:
        call = self.c.get_function_by_name(name)(*args)
        return revert_of(lambda: call.transact({"from": sender or self.owner}))

    def exists(self, batch_id: bytes) -> bool:
        found: bool = self.c.get_function_by_signature("batchExists(bytes32)")(batch_id).call()
        return found

    def events(self, receipt: TxReceipt, name: str) -> list[dict[str, Any]]:
        # DISCARD: the receipt's other events are simply not this one.
        processed = self.c.events[name]().process_receipt(receipt, errors=DISCARD)
        return [dict(entry["args"]) for entry in processed]


@pytest.fixture
def registry(tester: Web3) -> Registry:
    accounts = list(tester.eth.accounts)
    owner, sequencer, stranger = accounts[0], accounts[1], accounts[2]
    address = contract.deploy(tester, owner)
    contract.authorize(tester, address, owner, sequencer)
    return Registry(tester, address, owner, sequencer, stranger)


def batch_logs(receipt: TxReceipt) -> list[BatchCommittedLog]:
    found = []
    for entry in receipt["logs"]:
        decoded = decode_batch_committed([bytes(t) for t in entry["topics"]], bytes(entry["data"]))
        if decoded is not None:
            found.append(decoded)
    return found


# --- deployment, ownership, authorization ---------------------------------------------------------


def test_deploy_makes_the_deployer_owner_with_strict_mode_on_and_nobody_authorized(
    tester: Web3,
) -> None:
    owner = tester.eth.accounts[0]
    address = contract.deploy(tester, owner)
    assert Web3.is_checksum_address(address)
    code = tester.eth.get_code(Web3.to_checksum_address(address))
    assert bytes(code) == contract.deployed_bytecode()
    c = contract.registry(tester, address)
    assert c.functions.owner().call() == owner
    assert c.functions.strictModeEnabled().call() is True
    assert c.functions.paused().call() is False
    assert c.functions.authorizedSequencers(owner).call() is False
    assert c.functions.authorizedSequencerCount().call() == 0


def test_deploy_can_authorize_a_first_sequencer_like_initialize(tester: Web3) -> None:
    owner, sequencer = list(tester.eth.accounts)[:2]
    address = contract.deploy(tester, owner, sequencer=sequencer)
    c = contract.registry(tester, address)
    assert c.functions.authorizedSequencers(sequencer).call() is True
    assert c.functions.authorizedSequencerCount().call() == 1
    logs = c.events.SequencerAuthorized().get_logs(from_block=0)
    assert [(e["args"]["sequencer"], e["args"]["authorized"]) for e in logs] == [(sequencer, True)]


def test_an_unauthorized_sender_is_refused_until_authorized_and_again_once_revoked(
    registry: Registry,
) -> None:
    batch = FIRST
    assert registry.commit_reverts(batch, sender=registry.stranger) == ContractRevert(
        "NotAuthorizedSequencer", ()
    )
    # The owner is not a sequencer either: administering is not anchoring.
    assert registry.commit_reverts(batch, sender=registry.owner).name == "NotAuthorizedSequencer"

    tx_hash = contract.authorize(registry.w3, registry.address, registry.owner, registry.stranger)
    receipt = registry.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    (log,) = receipt["logs"]
    assert bytes(log["topics"][0]).hex().startswith("299a9abe")
    assert bytes(log["topics"][1])[12:] == bytes.fromhex(registry.stranger[2:])
    assert registry.events(receipt, "SequencerAuthorized") == [
        {"sequencer": registry.stranger, "authorized": True}
    ]
    assert registry.call("authorizedSequencerCount") == 2
    registry.commit(batch, sender=registry.stranger)

    contract.authorize(
        registry.w3, registry.address, registry.owner, registry.stranger, allowed=False
    )
    assert registry.call("authorizedSequencers", registry.stranger) is False
    assert registry.call("authorizedSequencerCount") == 1
    assert (
        registry.commit_reverts(SECOND, sender=registry.stranger).name == "NotAuthorizedSequencer"
    )


def test_only_the_owner_manages_sequencers_and_never_the_zero_address(registry: Registry) -> None:
    stranger = registry.stranger
    refused = registry.reverts("setSequencerAuthorization", stranger, True, sender=stranger)
    assert refused.name == "OwnableUnauthorizedAccount"
    assert str(refused.args[0]).lower() == stranger.lower()
    zero = contract.ZERO_ADDRESS
    assert registry.reverts("setSequencerAuthorization", zero, True) == ContractRevert(
        "InvalidAddress", ()
    )
    # Authorizing twice emits twice but counts once.
    registry.send("setSequencerAuthorization", registry.sequencer, True)
    assert registry.call("authorizedSequencerCount") == 1


def test_ownership_moves_only_to_a_real_address(registry: Registry) -> None:
    zero = contract.ZERO_ADDRESS
    invalid = registry.reverts("transferOwnership", zero)
    assert invalid.name == "OwnableInvalidOwner" and int(invalid.args[0], 16) == 0
    receipt = registry.send("transferOwnership", registry.stranger)
    assert registry.events(receipt, "OwnershipTransferred") == [
        {"previousOwner": registry.owner, "newOwner": registry.stranger}
    ]
    assert registry.call("owner") == registry.stranger
    assert registry.reverts("setStrictMode", False).name == "OwnableUnauthorizedAccount"
    registry.send("setStrictMode", False, sender=registry.stranger)


# --- a commit and what it leaves ------------------------------------------------------------------


def test_a_commit_stores_the_batch_logs_it_and_moves_the_stream_head(registry: Registry) -> None:
    assert registry.call("getHeadSequence", TENANT, STORE) == 0
    assert registry.call("getLatestStateRoot", TENANT, STORE) == ZERO
    assert registry.call("getLatestBatchId", TENANT, STORE) == ZERO
    assert registry.call("getBatchCommitment", FIRST.batch_id) == (ZERO, ZERO, 0, 0, 0, 0)

    receipt = registry.commit(FIRST)
    assert batch_logs(receipt) == [
        BatchCommittedLog(
            batch_id=FIRST.batch_id,
            tenant_store_key=key(TENANT, STORE),
            events_root=FIRST.events_root,
            new_state_root=FIRST.new_root,
            sequence_start=1,
            sequence_end=3,
            event_count=3,
        )
    ]
    assert bytes(receipt["logs"][0]["topics"][0]) == BATCH_COMMITTED_TOPIC
    assert registry.exists(FIRST.batch_id) is True
    assert registry.exists(SECOND.batch_id) is False
    block = registry.w3.eth.get_block(receipt["blockNumber"])
    # prevStateRoot is not stored: the record is the reference's six fields.
    assert registry.call("getBatchCommitment", FIRST.batch_id) == (
        FIRST.events_root,
        FIRST.new_root,
        1,
        3,
        3,
        block["timestamp"],
    )
    assert registry.call("getHeadSequence", TENANT, STORE) == 3
    assert registry.call("getLatestStateRoot", TENANT, STORE) == FIRST.new_root
    assert registry.call("getLatestBatchId", TENANT, STORE) == FIRST.batch_id
    assert registry.call("latestCommitment", key(TENANT, STORE)) == FIRST.batch_id
    # Another stream of the same tenant is untouched.
    assert registry.call("getHeadSequence", TENANT, OTHER_STORE) == 0

    registry.commit(SECOND)
    assert registry.call("getHeadSequence", TENANT, STORE) == 5
    assert registry.call("getLatestStateRoot", TENANT, STORE) == SECOND.new_root


def test_the_sequencers_own_calldata_commits(registry: Registry) -> None:
    # ves.anchor builds commitBatch by hand, word by word; the contract must accept it.
    tenant, store, batch_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    data = anchor.commit_batch_calldata(
        batch_id=batch_id,
        tenant_id=tenant,
        store_id=store,
        events_root=word(0xE7),
        prev_state_root=ZERO,
        new_state_root=word(0xA7),
        sequence_start=10,
        sequence_end=14,
        event_count=5,
    )
    tx_hash = registry.w3.eth.send_transaction(
        {"from": registry.sequencer, "to": registry.address, "data": data}
    )
    receipt = registry.w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    (log,) = batch_logs(receipt)
    assert log.batch_id == anchor.uuid_to_bytes32(batch_id)
    assert log.tenant_store_key == anchor.tenant_store_key(tenant, store)
    assert (log.sequence_start, log.sequence_end, log.event_count) == (10, 14, 5)
    assert registry.exists(anchor.uuid_to_bytes32(batch_id))


def test_batch_exists_for_many_ids_at_once(registry: Registry) -> None:
    registry.commit(FIRST)
    registry.commit(SECOND)
    many = registry.c.get_function_by_signature("batchExists(bytes32[])")
    ids = [FIRST.batch_id, word(0x99), SECOND.batch_id, ZERO]
    assert many(ids).call() == [True, False, True, False]
    assert many([]).call() == []


# --- reverts, in order ----------------------------------------------------------------------------

BAD_ROOT = word(0xBB)


@dataclass(frozen=True)
class Case:
    batch: Batch
    expected: ContractRevert
    sender: str = "sequencer"  # or "stranger"
    paused: bool = False


# Each case breaks the rule it is named for and, where one applies, also a rule checked
# later, so that the expected error proves the order of the checks.
CASES = {
    "paused first": Case(
        replace(SECOND, start=9, end=8), ContractRevert("EnforcedPause", ()), "stranger", True
    ),
    "paused, even for a good batch": Case(SECOND, ContractRevert("EnforcedPause", ()), paused=True),
    "unauthorized before the range": Case(
        replace(SECOND, start=9, end=8), ContractRevert("NotAuthorizedSequencer", ()), "stranger"
    ),
    "range before the count": Case(
        replace(SECOND, start=9, end=8, count=7, events_root=ZERO),
        ContractRevert("InvalidSequenceRange", ()),
    ),
    "count too small, before the root": Case(
        replace(SECOND, count=1, events_root=ZERO), ContractRevert("InvalidEventCount", (2, 1))
    ),
    "count too large": Case(replace(SECOND, count=3), ContractRevert("InvalidEventCount", (2, 3))),
    "count of zero": Case(replace(SECOND, count=0), ContractRevert("InvalidEventCount", (2, 0))),
    "more events than a uint32 counts": Case(
        Batch(word(0x30), 0, U32_MAX, count=U32_MAX, store=OTHER_STORE),
        ContractRevert("InvalidEventCount", (2**32, U32_MAX)),
    ),
    "the whole 64-bit range, whose size wraps to 0": Case(
        Batch(word(0x31), 0, U64_MAX, count=0, store=OTHER_STORE),
        ContractRevert("InvalidEventCount", (0, 0)),
    ),
    "empty root before the duplicate": Case(
        replace(FIRST, events_root=ZERO), ContractRevert("EmptyEventsRoot", ())
    ),
    "duplicate before the chain": Case(
        replace(FIRST, prev_root=BAD_ROOT), ContractRevert("BatchAlreadyCommitted", ())
    ),
    "state root before the gap": Case(
        replace(SECOND, prev_root=BAD_ROOT, start=7, end=8),
        ContractRevert("StateRootMismatch", (FIRST.new_root, BAD_ROOT)),
    ),
    "prev root of zero is a mismatch too": Case(
        replace(SECOND, prev_root=ZERO),
        ContractRevert("StateRootMismatch", (FIRST.new_root, ZERO)),
    ),
    "gap": Case(replace(SECOND, start=5, end=6), ContractRevert("SequenceGap", (4, 5))),
    "overlap": Case(replace(SECOND, start=3, end=4), ContractRevert("SequenceGap", (4, 3))),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_commit_batch_reverts(registry: Registry, case: Case) -> None:
    registry.commit(FIRST)
    if case.paused:
        registry.send("pause")
    sender = registry.stranger if case.sender == "stranger" else registry.sequencer
    assert registry.commit_reverts(case.batch, sender=sender) == case.expected
    # Nothing of a refused batch is kept.
    if case.batch.batch_id != FIRST.batch_id:
        assert registry.exists(case.batch.batch_id) is False
    assert registry.call("getHeadSequence", TENANT, STORE) == FIRST.end


def test_decoded_reverts_carry_the_abi_types(registry: Registry) -> None:
    registry.commit(FIRST)
    mismatch = registry.commit_reverts(replace(SECOND, prev_root=BAD_ROOT))
    assert all(isinstance(a, bytes) and len(a) == 32 for a in mismatch.args)
    gap = registry.commit_reverts(replace(SECOND, start=9, end=10))
    assert gap.name == "SequenceGap" and all(isinstance(a, int) for a in gap.args)


# --- strict mode ----------------------------------------------------------------------------------


def test_the_first_batch_of_a_stream_is_not_checked_against_anything(registry: Registry) -> None:
    registry.commit(FIRST)
    # Another stream may start anywhere, from any previous root, in strict mode.
    late = Batch(word(0x40), 1000, 1009, prev_root=BAD_ROOT, store=OTHER_STORE)
    registry.commit(late)
    assert registry.call("getHeadSequence", TENANT, OTHER_STORE) == 1009
    # ... and is checked from then on.
    expected = ContractRevert("SequenceGap", (1010, 1))
    assert registry.commit_reverts(replace(late, batch_id=word(0x41), start=1, end=1)) == (
        ContractRevert("StateRootMismatch", (late.new_root, BAD_ROOT))
    )
    assert (
        registry.commit_reverts(
            replace(late, batch_id=word(0x41), start=1, end=1, prev_root=late.new_root)
        )
        == expected
    )


def test_strict_mode_off_lifts_the_chain_checks_and_on_restores_them(registry: Registry) -> None:
    registry.commit(FIRST)
    receipt = registry.send("setStrictMode", False)
    assert registry.events(receipt, "StrictModeUpdated") == [{"enabled": False}]
    assert registry.call("strictModeEnabled") is False

    broken = replace(SECOND, prev_root=BAD_ROOT, start=20, end=21)
    registry.commit(broken)
    assert registry.call("getHeadSequence", TENANT, STORE) == 21
    backwards = Batch(word(0x03), 1, 1, prev_root=BAD_ROOT, new_root=word(0xA3))
    registry.commit(backwards)  # the head follows the latest batch, even backwards
    assert registry.call("getHeadSequence", TENANT, STORE) == 1
    assert registry.call("getLatestBatchId", TENANT, STORE) == backwards.batch_id
    # Strict mode off does not lift the other checks.
    assert registry.commit_reverts(replace(FIRST, prev_root=BAD_ROOT)).name == (
        "BatchAlreadyCommitted"
    )
    assert registry.commit_reverts(replace(SECOND, batch_id=word(0x04), count=9)).name == (
        "InvalidEventCount"
    )

    registry.send("setStrictMode", True)
    assert registry.commit_reverts(replace(SECOND, batch_id=word(0x05), start=2, end=3)) == (
        ContractRevert("StateRootMismatch", (backwards.new_root, SECOND.prev_root))
    )
    registry.commit(backwards.after(word(0x06), 2, word(0xA6)))
    assert registry.call("getHeadSequence", TENANT, STORE) == 3


# --- pause ----------------------------------------------------------------------------------------


def test_pause_stops_commits_but_not_reads_and_unpause_resumes(registry: Registry) -> None:
    registry.commit(FIRST)
    paused = registry.send("pause")
    assert registry.events(paused, "Paused") == [{"account": registry.owner}]
    assert registry.call("paused") is True
    assert registry.commit_reverts(SECOND) == ContractRevert("EnforcedPause", ())
    proof = (FIRST.batch_id, word(0xF1), ZERO, FIRST.new_root, ZERO, 0, True, 1, 1)
    assert registry.reverts("commitStarkProof", *proof, sender=registry.sequencer).name == (
        "EnforcedPause"
    )
    assert registry.exists(FIRST.batch_id)
    assert registry.call("getHeadSequence", TENANT, STORE) == 3
    assert registry.reverts("pause") == ContractRevert("EnforcedPause", ())
    assert registry.reverts("unpause", sender=registry.sequencer).name == (
        "OwnableUnauthorizedAccount"
    )

    resumed = registry.send("unpause")
    assert registry.events(resumed, "Unpaused") == [{"account": registry.owner}]
    assert registry.reverts("unpause") == ContractRevert("ExpectedPause", ())
    registry.commit(SECOND)
    assert registry.call("getHeadSequence", TENANT, STORE) == 5


def test_only_the_owner_pauses(registry: Registry) -> None:
    assert registry.reverts("pause", sender=registry.sequencer).name == (
        "OwnableUnauthorizedAccount"
    )


# --- STARK proof metadata -------------------------------------------------------------------------


def proof_args(batch: Batch, proof_hash: bytes = word(0xF1), size: int = 4096) -> tuple[Any, ...]:
    """commitStarkProof's arguments: batchId, proofHash, prevStateRoot, newStateRoot,
    policyHash, policyLimit, allCompliant, proofSize, provingTimeMs."""
    policy = (word(0xC1), 50, True)
    return (batch.batch_id, proof_hash, batch.prev_root, batch.new_root, *policy, size, 1234)


# commitBatchWithStarkProof's proof half: proofHash, policyHash, policyLimit, allCompliant,
# proofSize, provingTimeMs.
PROOF_TAIL = (word(0xF1), word(0xC1), 50, True, 4096, 1234)


def test_a_proof_is_recorded_for_a_committed_batch_only_once(registry: Registry) -> None:
    seq = registry.sequencer
    assert registry.reverts("commitStarkProof", *proof_args(FIRST), sender=seq) == (
        ContractRevert("BatchNotCommitted", ())
    )
    registry.commit(FIRST)
    wrong_root = (*proof_args(FIRST)[:3], BAD_ROOT, *proof_args(FIRST)[4:])
    assert registry.reverts("commitStarkProof", *wrong_root, sender=seq).name == (
        "StateRootMismatchInProof"
    )
    assert registry.reverts("commitStarkProof", *proof_args(FIRST, ZERO), sender=seq).name == (
        "InvalidProof"
    )
    assert registry.reverts("commitStarkProof", *proof_args(FIRST, size=0), sender=seq).name == (
        "InvalidProof"
    )
    assert registry.reverts(
        "commitStarkProof", *proof_args(FIRST), sender=registry.stranger
    ) == ContractRevert("NotAuthorizedSequencer", ())
    assert registry.call("hasStarkProof", FIRST.batch_id) is False

    receipt = registry.send("commitStarkProof", *proof_args(FIRST), sender=seq)
    (log,) = receipt["logs"]
    assert bytes(log["topics"][0]).hex().startswith("adeeb4fe")
    assert registry.events(receipt, "StarkProofCommitted") == [
        {
            "batchId": FIRST.batch_id,
            "proofHash": word(0xF1),
            "policyHash": word(0xC1),
            "allCompliant": True,
            "proofSize": 4096,
        }
    ]
    assert registry.call("hasStarkProof", FIRST.batch_id) is True
    assert registry.call("verifyStarkProofHash", FIRST.batch_id, word(0xF1)) is True
    assert registry.call("verifyStarkProofHash", FIRST.batch_id, word(0xF2)) is False
    assert registry.call("verifyStarkProofHash", SECOND.batch_id, ZERO) is False
    block = registry.w3.eth.get_block(receipt["blockNumber"])
    assert registry.call("getStarkProofDetails", FIRST.batch_id) == [
        word(0xF1),
        word(0xC1),
        True,
        block["timestamp"],
    ]
    assert registry.reverts("commitStarkProof", *proof_args(FIRST), sender=seq).name == (
        "StarkProofAlreadyCommitted"
    )


def test_batch_and_proof_together_are_all_or_nothing(registry: Registry) -> None:
    seq = registry.sequencer
    tail = PROOF_TAIL
    bad_tail = (ZERO, *tail[1:])
    assert registry.reverts(
        "commitBatchWithStarkProof", *FIRST.args(), *bad_tail, sender=seq
    ) == ContractRevert("InvalidProof", ())
    assert registry.exists(FIRST.batch_id) is False
    receipt = registry.send("commitBatchWithStarkProof", *FIRST.args(), *tail, sender=seq)
    assert len(batch_logs(receipt)) == 1
    assert registry.events(receipt, "StarkProofCommitted")[0]["proofHash"] == word(0xF1)
    assert registry.exists(FIRST.batch_id) and registry.call("hasStarkProof", FIRST.batch_id)
    # The batch half runs the batch checks, in strict mode too.
    assert registry.reverts(
        "commitBatchWithStarkProof", *replace(SECOND, prev_root=BAD_ROOT).args(), *tail, sender=seq
    ) == ContractRevert("StateRootMismatch", (FIRST.new_root, BAD_ROOT))


# --- inclusion paths ------------------------------------------------------------------------------


def keccak_tree(leaves: list[bytes]) -> list[list[bytes]]:
    levels = [leaves]
    while len(levels[-1]) > 1:
        level = levels[-1]
        levels.append([anchor.keccak256(level[i] + level[i + 1]) for i in range(0, len(level), 2)])
    return levels


def test_verify_inclusion_checks_keccak_paths_against_the_events_root(registry: Registry) -> None:
    leaves = [word(0x10 + i) for i in range(4)]
    levels = keccak_tree(leaves)
    root = levels[-1][0]
    batch = Batch(word(0x0B), 1, 4, events_root=root)
    assert registry.call("verifyInclusion", batch.batch_id, leaves[0], [], 0) is False
    registry.commit(batch)
    for index, leaf in enumerate(leaves):
        path = [levels[0][index ^ 1], levels[1][(index // 2) ^ 1]]
        assert registry.call("verifyInclusion", batch.batch_id, leaf, path, index) is True
        assert registry.call("verifyInclusion", batch.batch_id, leaf, path, index ^ 1) is False
    assert registry.call("verifyInclusion", batch.batch_id, root, [], 0) is True
    assert registry.call("verifyInclusion", batch.batch_id, word(0x99), [], 0) is False


# --- the decoders on their own --------------------------------------------------------------------


def test_decode_revert_knows_solidity_builtins_and_nothing_else() -> None:
    assert decode_revert(contract.ERROR_STRING_SELECTOR + encode(["string"], ["no"])) == (
        ContractRevert("Error", ("no",))
    )
    assert decode_revert(contract.PANIC_SELECTOR + encode(["uint256"], [0x11])) == (
        ContractRevert("Panic", (0x11,))
    )
    assert decode_revert(bytes.fromhex("3855112f")) == ContractRevert("InvalidSequenceRange", ())
    assert decode_revert(b"") is None
    assert decode_revert(b"\xe2\x69\xf8") is None  # shorter than a selector
    assert decode_revert(bytes.fromhex("deadbeef")) is None
    assert decode_revert(bytes.fromhex("4c843957") + b"\x01" * 10) is None  # body too short
    too_wide = bytes.fromhex("4c843957") + encode(["uint256", "uint256"], [2**70, 1])
    assert decode_revert(too_wide) is None  # a uint64 argument wider than 64 bits


KNOWN_SELECTORS = [
    bytes.fromhex(s)
    for s in ("4c843957", "37f04d41", "104d0050", "08c379a0", "4e487b71", "e269f830")
]


@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(st.sampled_from(KNOWN_SELECTORS), st.binary(max_size=200)).map(
            lambda pair: pair[0] + pair[1]
        ),
    )
)
def test_decode_revert_never_raises(data: bytes) -> None:
    result = decode_revert(data)
    assert result is None or isinstance(result, ContractRevert)


TOPIC_LIKE = st.one_of(
    st.just(BATCH_COMMITTED_TOPIC),
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=40),
    st.builds(bytearray, st.binary(max_size=33)),
)


@given(st.lists(TOPIC_LIKE, max_size=5), st.one_of(st.binary(max_size=260), st.just(bytes(160))))
def test_decode_batch_committed_never_raises(topics: list[bytes], data: bytes) -> None:
    result = decode_batch_committed(topics, data)
    if result is not None:
        assert len(topics) == 3 and bytes(topics[0]) == BATCH_COMMITTED_TOPIC
        assert len(data) == 160


@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.integers(0, U64_MAX),
    st.integers(0, U64_MAX),
    st.integers(0, U32_MAX),
)
def test_decode_batch_committed_reads_back_what_the_abi_encodes(
    batch_id: bytes, root: bytes, start: int, end: int, count: int
) -> None:
    data = encode(
        ["bytes32", "bytes32", "uint64", "uint64", "uint32"], [root, root[::-1], start, end, count]
    )
    decoded = decode_batch_committed([BATCH_COMMITTED_TOPIC, batch_id, root], data)
    assert decoded == BatchCommittedLog(batch_id, root, root, root[::-1], start, end, count)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t, d: (t[:2], d),  # a topic short
        lambda t, d: ([*t, t[1]], d),  # a topic too many
        lambda t, d: ([word(0x00), *t[1:]], d),  # another event
        lambda t, d: (t, d[:-1]),  # data short
        lambda t, d: (t, d + bytes(32)),  # data long
        lambda t, d: (t, d[:64] + b"\x01" + d[65:]),  # start wider than uint64
        lambda t, d: (t, d[:128] + b"\x01" + d[129:]),  # count wider than uint32
        lambda t, d: ([t[0], t[1][:31], t[2]], d),  # a 31-byte topic
    ],
)
def test_decode_batch_committed_refuses_wrong_shapes(
    mangle: Callable[[list[bytes], bytes], tuple[list[bytes], bytes]],
) -> None:
    topics = [BATCH_COMMITTED_TOPIC, word(1), word(2)]
    data = encode(["bytes32", "bytes32", "uint64", "uint64", "uint32"], [word(3), word(4), 1, 2, 2])
    assert decode_batch_committed(topics, data) is not None
    assert decode_batch_committed(*mangle(topics, data)) is None
