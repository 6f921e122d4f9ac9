"""The light half of anchoring: what its failures and refusals are, importable without
the Ethereum libraries (web3 takes a second to import; the error table of the HTTP layer
and every command-line start need these names, not the chain client)."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

NOT_CONFIGURED = (
    "anchoring is not configured: set L2_RPC_URL, SET_REGISTRY_ADDRESS and SEQUENCER_PRIVATE_KEY"
)


class ContractRevert(NamedTuple):
    """A decoded revert: the error's name and its arguments in ABI order."""

    name: str
    args: tuple[Any, ...]


class ChainFailure(enum.Enum):
    """Why a chain call failed; ``api/http/errors.py`` maps each to an answer."""

    BREAKER_OPEN = "anchor_breaker_open"
    UNAVAILABLE = "chain_unavailable"
    TIMEOUT = "chain_timeout"
    REVERTED = "chain_reverted"
    REJECTED = "chain_rejected"  # the node refused the transaction (funds, nonce, ...)
    WRONG_CHAIN = "chain_id_mismatch"
    LOG_NOT_FOUND = "anchor_log_not_found"


class ChainError(Exception):
    def __init__(
        self,
        failure: ChainFailure,
        message: str,
        revert: ContractRevert | None = None,
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.revert = revert

    @property
    def transient(self) -> bool:
        return self.failure in {ChainFailure.UNAVAILABLE, ChainFailure.TIMEOUT}


class AnchorReason(enum.StrEnum):
    """Why an anchoring request is refused; ``api/http/errors.py`` maps each."""

    OUT_OF_ORDER = "anchor_out_of_order"
    CHAIN_DISAGREES = "anchor_chain_disagrees"
    RECORD_CONFLICT = "anchor_record_conflict"


class AnchorError(Exception):
    def __init__(self, reason: AnchorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
