"""``doctor``'s anchoring check with the whole configuration, against a real anvil node:
the registry must be there, our sender authorized and funded; a partial set fails."""

from __future__ import annotations

from eth_account import Account
from web3 import HTTPProvider, Web3

from stateset_sequencer.anchoring import contract
from stateset_sequencer.config import Settings
from stateset_sequencer.recovery import doctor
from stateset_sequencer.testing.anvil import Anvil


async def check(**settings: str) -> doctor.CheckResult:
    ctx = doctor.Context(doctor.DoctorOptions(Settings(**settings)))  # type: ignore[arg-type]
    return await doctor.check_anchoring(ctx)


async def test_doctor_checks_the_registry_and_the_sender(anvil: Anvil) -> None:
    w3 = Web3(HTTPProvider(anvil.url))
    owner, sender = anvil.accounts[0], anvil.accounts[3]
    registry = contract.deploy(w3, owner.address)
    base = {"L2_RPC_URL": anvil.url, "SET_REGISTRY_ADDRESS": registry}

    refused = await check(**base, SEQUENCER_PRIVATE_KEY=sender.private_key)
    assert refused.status == "FAIL" and "not an authorized sequencer" in refused.detail
    assert sender.private_key.removeprefix("0x") not in refused.detail

    contract.authorize(w3, registry, owner.address, sender.address)
    passed = await check(**base, SEQUENCER_PRIVATE_KEY=sender.private_key)
    assert passed.status == "PASS", passed.detail
    assert "authorized" in passed.detail and "strict mode on" in passed.detail
    assert f"chain {anvil.chain_id}" in passed.detail

    broke = Account.create()  # authorized, but without a wei to pay for gas
    contract.authorize(w3, registry, owner.address, broke.address)
    poor = await check(**base, SEQUENCER_PRIVATE_KEY=broke.key.hex())
    assert poor.status == "FAIL" and "has no funds" in poor.detail

    nowhere = await check(
        L2_RPC_URL=anvil.url,
        SET_REGISTRY_ADDRESS="0x" + "42" * 20,
        SEQUENCER_PRIVATE_KEY=sender.private_key,
    )
    assert nowhere.status == "FAIL" and "no contract code" in nowhere.detail

    partial = await check(**base)
    assert partial.status == "FAIL" and "SEQUENCER_PRIVATE_KEY is missing" in partial.detail

    wrong = await check(
        **base, SEQUENCER_PRIVATE_KEY=sender.private_key, L2_CHAIN_ID=str(anvil.chain_id + 1)
    )
    assert wrong.status == "FAIL"
