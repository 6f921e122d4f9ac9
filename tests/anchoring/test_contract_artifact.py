"""The committed SetRegistry artifact: its interface is the reference registry's (every
selector, topic and error selector below is a fact of that interface, written out, and is
recomputed here from the compiled ABI), it lists exactly the entries we mean it to, it is
what the source compiles to (``build_contract.js --check``), and the npm pins behind that
build are exact."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_utils.abi import (
    abi_to_signature,
    event_abi_to_log_topic,
    function_abi_to_4byte_selector,
)
from eth_utils.crypto import keccak

from stateset_sequencer.anchoring import contract

from .conftest import ROOT

SOURCE = ROOT / "contracts" / "SetRegistry.sol"
ARTIFACT = ROOT / "src" / "stateset_sequencer" / "anchoring" / "artifacts" / "SetRegistry.json"
BUILD = ROOT / "scripts" / "build_contract.js"
BUILD_TIMEOUT_S = 180

# signature -> selector, from the reference's interface (None: ours, no fixed selector).
FUNCTIONS: dict[str, str | None] = {
    "commitBatch(bytes32,bytes32,bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint32)": (
        "d38f6b8b"
    ),
    "commitStarkProof(bytes32,bytes32,bytes32,bytes32,bytes32,uint64,bool,uint64,uint64)": (
        "20cb49f9"
    ),
    "commitBatchWithStarkProof(bytes32,bytes32,bytes32,bytes32,bytes32,bytes32,uint64,uint64,"
    "uint32,bytes32,bytes32,uint64,bool,uint64,uint64)": "df788f5f",
    "batchExists(bytes32)": "ecd144a7",
    "batchExists(bytes32[])": "dd557228",
    "getHeadSequence(bytes32,bytes32)": "c13b23c2",
    "getBatchCommitment(bytes32)": "7271b18a",
    "getLatestStateRoot(bytes32,bytes32)": "5db7a7ec",
    "getLatestBatchId(bytes32,bytes32)": "3e145a08",
    "hasStarkProof(bytes32)": "b45867c3",
    "verifyStarkProofHash(bytes32,bytes32)": "0fcdd27d",
    "verifyInclusion(bytes32,bytes32,bytes32[],uint256)": "76d3ad48",
    "authorizedSequencers(address)": "524a6d77",
    "strictModeEnabled()": "83c35434",
    "setSequencerAuthorization(address,bool)": None,
    "setStrictMode(bool)": None,
    "pause()": None,
    "unpause()": None,
    "paused()": None,
    "owner()": None,
    "transferOwnership(address)": None,
    "authorizedSequencerCount()": None,
    "commitments(bytes32)": None,
    "latestCommitment(bytes32)": None,
    "starkProofs(bytes32)": None,
    "getStarkProofDetails(bytes32)": None,
}

# signature -> (topic0 prefix, topic0 suffix, indexed flags)
EVENTS: dict[str, tuple[str, str, tuple[bool, ...]]] = {
    "BatchCommitted(bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint32)": (
        "1b2cc50ea54dce1d372450a8dc503a51775ab92dc7e68d579ce3fbb4af25cab3",
        "",
        (True, True, False, False, False, False, False),
    ),
    "StarkProofCommitted(bytes32,bytes32,bytes32,bool,uint64)": (
        "adeeb4fe",
        "237380",
        (True, False, False, False, False),
    ),
    "SequencerAuthorized(address,bool)": ("299a9abe", "968609", (True, False)),
    "StrictModeUpdated(bool)": ("", "", (False,)),
    "Paused(address)": ("", "", (False,)),
    "Unpaused(address)": ("", "", (False,)),
    "OwnershipTransferred(address,address)": ("", "", (True, True)),
}

ERRORS: dict[str, str | None] = {
    "EnforcedPause()": "d93c0665",
    "NotAuthorizedSequencer()": "e269f830",
    "InvalidSequenceRange()": "3855112f",
    "InvalidEventCount(uint64,uint32)": "4c843957",
    "EmptyEventsRoot()": "190e76e2",
    "BatchAlreadyCommitted()": "884923cf",
    "StateRootMismatch(bytes32,bytes32)": "37f04d41",
    "SequenceGap(uint64,uint64)": "104d0050",
    "ExpectedPause()": None,
    "InvalidProof()": None,
    "BatchNotCommitted()": None,
    "StarkProofAlreadyCommitted()": None,
    "StateRootMismatchInProof()": None,
    "InvalidAddress()": None,
    "OwnableUnauthorizedAccount(address)": None,
    "OwnableInvalidOwner(address)": None,
}


def entries(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for entry in contract.abi():
        if entry["type"] == kind:
            signature = abi_to_signature(entry)  # type: ignore[arg-type]
            assert signature not in found, f"{signature} twice"
            found[signature] = entry
    return found


def selector_of(signature: str) -> bytes:
    return keccak(text=signature)[:4]


# --- the interface --------------------------------------------------------------------------------


def test_the_abi_has_exactly_the_functions_we_expect() -> None:
    assert set(entries("function")) == set(FUNCTIONS)


@pytest.mark.parametrize("signature", [s for s, sel in FUNCTIONS.items() if sel is not None])
def test_function_selectors_are_the_references(signature: str) -> None:
    entry = entries("function")[signature]
    assert function_abi_to_4byte_selector(entry).hex() == FUNCTIONS[signature]  # type: ignore[arg-type]


def test_the_module_constants_are_what_the_abi_gives() -> None:
    functions = entries("function")

    def selector(signature: str) -> bytes:
        return bytes(function_abi_to_4byte_selector(functions[signature]))  # type: ignore[arg-type]

    assert (
        selector(
            "commitBatch(bytes32,bytes32,bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint32)"
        )
        == contract.COMMIT_BATCH_SELECTOR
    )
    assert selector("batchExists(bytes32)") == contract.BATCH_EXISTS_SELECTOR
    assert selector("getBatchCommitment(bytes32)") == contract.GET_BATCH_COMMITMENT_SELECTOR
    assert selector("getHeadSequence(bytes32,bytes32)") == contract.GET_HEAD_SEQUENCE_SELECTOR
    topic = event_abi_to_log_topic(
        entries("event")["BatchCommitted(bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint32)"]  # type: ignore[arg-type]
    )
    assert bytes(topic) == contract.BATCH_COMMITTED_TOPIC
    assert selector_of("Error(string)") == contract.ERROR_STRING_SELECTOR
    assert selector_of("Panic(uint256)") == contract.PANIC_SELECTOR


def test_the_views_return_what_the_reference_returns() -> None:
    functions = entries("function")

    def outputs(signature: str) -> list[tuple[str, str]]:
        entry = functions[signature]
        assert entry["stateMutability"] == "view"
        found = []
        for out in entry["outputs"]:
            if out["type"] == "tuple":
                parts = ",".join(f"{c['type']} {c['name']}" for c in out["components"])
                found.append((f"({parts})", out["name"]))
            else:
                found.append((out["type"], out["name"]))
        return found

    assert outputs("batchExists(bytes32)") == [("bool", "exists")]
    assert outputs("batchExists(bytes32[])") == [("bool[]", "exists")]
    assert outputs("getHeadSequence(bytes32,bytes32)") == [("uint64", "sequence")]
    assert outputs("getLatestStateRoot(bytes32,bytes32)") == [("bytes32", "stateRoot")]
    assert outputs("getLatestBatchId(bytes32,bytes32)") == [("bytes32", "batchId")]
    assert outputs("getBatchCommitment(bytes32)") == [
        (
            "(bytes32 eventsRoot,bytes32 newStateRoot,uint64 sequenceStart,"
            "uint64 sequenceEnd,uint32 eventCount,uint64 timestamp)",
            "commitment",
        )
    ]
    assert outputs("hasStarkProof(bytes32)") == [("bool", "hasProof")]
    assert outputs("verifyStarkProofHash(bytes32,bytes32)") == [("bool", "valid")]
    assert outputs("verifyInclusion(bytes32,bytes32,bytes32[],uint256)") == [("bool", "valid")]
    assert outputs("authorizedSequencers(address)") == [("bool", "")]
    assert outputs("strictModeEnabled()") == [("bool", "")]


def test_commit_batch_parameters_are_named_as_in_the_reference() -> None:
    entry = entries("function")[next(s for s in FUNCTIONS if s.startswith("commitBatch("))]
    assert [p["name"] for p in entry["inputs"]] == [
        "batchId",
        "tenantId",
        "storeId",
        "eventsRoot",
        "prevStateRoot",
        "newStateRoot",
        "sequenceStart",
        "sequenceEnd",
        "eventCount",
    ]
    assert entry["stateMutability"] == "nonpayable"


def test_the_abi_has_exactly_the_events_we_expect_with_their_topics() -> None:
    events = entries("event")
    assert set(events) == set(EVENTS)
    for signature, (prefix, suffix, indexed) in EVENTS.items():
        entry = events[signature]
        topic = bytes(event_abi_to_log_topic(entry)).hex()  # type: ignore[arg-type]
        assert topic == keccak(text=signature).hex()
        assert topic.startswith(prefix) and topic.endswith(suffix), signature
        assert tuple(p["indexed"] for p in entry["inputs"]) == indexed, signature
        assert not entry["anonymous"]
    names = [p["name"] for p in events[next(iter(EVENTS))]["inputs"]]
    assert names == [
        "batchId",
        "tenantStoreKey",
        "eventsRoot",
        "newStateRoot",
        "sequenceStart",
        "sequenceEnd",
        "eventCount",
    ]


def test_the_abi_has_exactly_the_errors_we_expect_with_their_selectors() -> None:
    errors = entries("error")
    assert set(errors) == set(ERRORS)
    for signature, expected in ERRORS.items():
        if expected is not None:
            assert selector_of(signature).hex() == expected, signature


def test_error_arguments_are_named_as_in_the_reference() -> None:
    errors = entries("error")

    def names(signature: str) -> list[str]:
        return [p["name"] for p in errors[signature]["inputs"]]

    assert names("InvalidEventCount(uint64,uint32)") == ["expected", "provided"]
    assert names("StateRootMismatch(bytes32,bytes32)") == ["expected", "provided"]
    assert names("SequenceGap(uint64,uint64)") == ["expected", "provided"]


def test_the_constructor_takes_an_optional_first_sequencer() -> None:
    (constructor,) = [e for e in contract.abi() if e["type"] == "constructor"]
    assert [(p["type"], p["name"]) for p in constructor["inputs"]] == [
        ("address", "initialSequencer")
    ]
    assert not [e for e in contract.abi() if e["type"] in {"fallback", "receive"}]


# --- the artifact itself --------------------------------------------------------------------------


def test_the_artifact_records_its_source_compiler_and_settings() -> None:
    built = contract.artifact()
    assert set(built) == {
        "abi",
        "bytecode",
        "compiler",
        "contractName",
        "deployedBytecode",
        "settings",
        "sourceSha256",
    }
    assert built["contractName"] == "SetRegistry"
    assert built["sourceSha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    pragma = re.search(r"^pragma solidity (\S+);$", SOURCE.read_text(encoding="utf-8"), re.M)
    assert pragma is not None and re.fullmatch(r"\d+\.\d+\.\d+", pragma.group(1))
    assert built["compiler"].startswith(pragma.group(1) + "+commit.")
    assert built["settings"]["evmVersion"] == "cancun"
    assert built["settings"]["optimizer"] == {"enabled": True, "runs": 200}
    assert built["bytecode"].startswith("0x") and built["deployedBytecode"].startswith("0x")
    assert len(contract.deployed_bytecode()) <= 0x6000  # EIP-170: deployable anywhere
    assert len(contract.bytecode()) > len(contract.deployed_bytecode())  # + constructor


def test_the_artifact_file_is_in_canonical_form() -> None:
    # What build_contract.js writes: sorted keys, two-space indent, one final newline. A
    # hand edit that changes only the layout would still fail --check; this says why.
    text = ARTIFACT.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_the_artifact_is_returned_read_only_and_abi_as_a_copy() -> None:
    with pytest.raises(TypeError):
        contract.artifact()["abi"] = []  # type: ignore[index]
    first = contract.abi()
    first.clear()
    assert contract.abi()


# --- npm pins -------------------------------------------------------------------------------------


def test_package_json_pins_exact_versions() -> None:
    manifest = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))
    assert manifest["private"] is True
    assert manifest["devDependencies"] == {"@foundry-rs/anvil": "1.7.1", "solc": "0.8.37"}
    assert "dependencies" not in manifest


def test_the_lockfile_records_the_linux_amd64_anvil_and_the_compiler_in_the_artifact() -> None:
    lock = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))
    packages = lock["packages"]
    binary = packages["node_modules/@foundry-rs/anvil-linux-amd64"]
    assert binary["version"] == "1.7.1" and binary["integrity"].startswith("sha512-")
    assert binary["os"] == ["linux"] and binary["cpu"] == ["x64"]
    assert packages["node_modules/@foundry-rs/anvil"]["version"] == "1.7.1"
    solc = packages["node_modules/solc"]["version"]
    assert contract.artifact()["compiler"].startswith(solc + "+commit.")


# --- the build ------------------------------------------------------------------------------------


def run_build(node: str, script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(script), *args],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_the_committed_artifact_is_what_the_source_compiles_to(node: str) -> None:
    result = run_build(node, BUILD, "--check")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "matches" in result.stdout


def test_check_fails_on_a_stale_artifact_and_a_rebuild_is_byte_identical(
    node: str, tmp_path: Path
) -> None:
    # A copy of the tree the script reads and writes, so the checkout is never touched.
    (tmp_path / "scripts").mkdir()
    shutil.copy2(BUILD, tmp_path / "scripts" / BUILD.name)
    (tmp_path / "contracts").mkdir()
    shutil.copy2(SOURCE, tmp_path / "contracts" / SOURCE.name)
    (tmp_path / "node_modules").symlink_to(ROOT / "node_modules")
    artifact = tmp_path / ARTIFACT.relative_to(ROOT)
    artifact.parent.mkdir(parents=True)
    stale = json.loads(ARTIFACT.read_text(encoding="utf-8"))
    stale["sourceSha256"] = "0" * 64
    artifact.write_text(json.dumps(stale, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    script = tmp_path / "scripts" / BUILD.name

    checked = run_build(node, script, "--check")
    assert checked.returncode == 1
    assert "make contract" in checked.stderr

    rebuilt = run_build(node, script)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert artifact.read_bytes() == ARTIFACT.read_bytes()


def test_build_refuses_unknown_arguments(node: str) -> None:
    result = run_build(node, BUILD, "--write-somewhere-else")
    assert result.returncode == 2 and "usage" in result.stderr


def test_the_commands_of_docs_contract_md_run(node: str) -> None:
    """Every command in docs/CONTRACT.md's bash blocks, from the project root, as a reader
    would type them; the rebuild leaves the committed artifact byte for byte as it was."""
    text = (ROOT / "docs" / "CONTRACT.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    assert "make contract" in commands and len(commands) >= 3
    before = ARTIFACT.read_bytes()
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S * 2,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
    assert ARTIFACT.read_bytes() == before
