"""Our registry on an in-process chain (web3's eth-tester on py-evm), with a funded and
authorized sequencer key, for the tests of the chain client, the anchoring rules and the
anchoring routes. The chain mines a block per transaction; ``tester`` mines, snapshots
and reverts on demand."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from web3 import EthereumTesterProvider, Web3
from web3.types import RPCEndpoint, RPCResponse, Wei

from ..anchoring import contract
from ..anchoring.chain import Chain, ChainConfig

# Throwaway keys that exist only on the test chain.
SEQUENCER_KEY = "0x" + "5e" * 32
STRANGER_KEY = "0x" + "77" * 32


async def no_wait(_seconds: float) -> None:
    """The chain client's pause between retries, made instant for tests."""
    return None


class _SerialTester(EthereumTesterProvider):
    """py-evm is not thread-safe, and the chain client calls it from its worker threads
    while a test mines from its own: every request, and :meth:`Evm.mine`, takes one lock."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.RLock()

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self.lock:
            return super().make_request(method, params)


@dataclass
class Evm:
    w3: Web3
    registry: str
    owner: str

    @classmethod
    def start(cls) -> Evm:
        w3 = Web3(_SerialTester())
        owner = w3.eth.accounts[0]
        evm = cls(w3, contract.deploy(w3, owner), owner)
        contract.authorize(w3, evm.registry, owner, evm.fund(SEQUENCER_KEY))
        return evm

    def mine(self, blocks: int = 1) -> None:
        """Mine blocks while no chain-client call is inside py-evm."""
        provider = self.w3.provider
        assert isinstance(provider, _SerialTester)
        with provider.lock:
            self.tester.mine_blocks(blocks)

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
