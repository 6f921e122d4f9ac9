"""Our registry on an in-process chain (web3's eth-tester on py-evm), with a funded and
authorized sequencer key, for the tests of the chain client, the anchoring rules and the
anchoring routes. The chain mines a block per transaction; ``tester`` mines, snapshots
and reverts on demand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from web3 import EthereumTesterProvider, Web3
from web3.types import Wei

from ..anchoring import contract
from ..anchoring.chain import Chain, ChainConfig

# Throwaway keys that exist only on the test chain.
SEQUENCER_KEY = "0x" + "5e" * 32
STRANGER_KEY = "0x" + "77" * 32


async def no_wait(_seconds: float) -> None:
    """The chain client's pause between retries, made instant for tests."""
    return None


@dataclass
class Evm:
    w3: Web3
    registry: str
    owner: str

    @classmethod
    def start(cls) -> Evm:
        w3 = Web3(EthereumTesterProvider())
        owner = w3.eth.accounts[0]
        evm = cls(w3, contract.deploy(w3, owner), owner)
        contract.authorize(w3, evm.registry, owner, evm.fund(SEQUENCER_KEY))
        return evm

    @property
    def tester(self) -> Any:
        return self.w3.provider.ethereum_tester  # type: ignore[attr-defined]

    def config(self, key: str = SEQUENCER_KEY, **fields: Any) -> ChainConfig:
        values: dict[str, Any] = {
            "rpc_url": "http://eth-tester.invalid",  # never dialled: the client uses w3
            "registry_address": self.registry,
            "private_key": key,
            "receipt_poll_s": 0.0,
        }
        values.update(fields)
        return ChainConfig(**values)

    def chain(self, key: str = SEQUENCER_KEY, **fields: Any) -> Chain:
        return Chain(self.config(key, **fields), w3=self.w3, sleep=no_wait)

    def fund(self, key: str) -> str:
        address = str(Account.from_key(key).address)
        self.w3.eth.send_transaction({"from": self.owner, "to": address, "value": Wei(10**20)})
        return address
