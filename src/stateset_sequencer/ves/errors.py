"""The exceptions raised by the protocol core, one type per kind of fault.

All derive from :class:`VesError` (itself a ``ValueError``), so a caller can catch the whole
family at once, yet never sees a bare ``ValueError`` or a library's own exception type.
"""

from __future__ import annotations


class VesError(ValueError):
    """Base class of every fault the protocol core reports."""


class BadHex(VesError):
    """Text that should be hexadecimal is not."""


class BadBase64(VesError):
    """Text that should be base64 or base64url is not."""


class BadLength(VesError):
    """A byte string, string or list has the wrong length."""


class BadInteger(VesError):
    """An integer is outside the range its encoding allows."""


class BadUuid(VesError):
    """Text that should be a UUID is not."""


class BadTimestamp(VesError):
    """Text that should be an RFC 3339 timestamp is not."""


class BadKey(VesError):
    """A public or secret key is malformed, non-canonical or of small order."""


class BadSignature(VesError):
    """A signature is malformed or does not verify."""


class ReceiptInvalid(BadSignature):
    """A sequencer receipt does not answer the event it names. A ``BadSignature`` so that
    callers written before the two kinds below were told apart keep catching it."""


class ReceiptHashMismatch(ReceiptInvalid):
    """The receipt hash does not recompute from the event, its stream and its sequence
    number: the receipt is for other content (or another place in the log)."""


class ReceiptSignatureInvalid(ReceiptInvalid):
    """The receipt hash is right but is not signed, or not validly signed, by the
    sequencer key it was checked against."""


class NonCanonical(VesError):
    """A value cannot be put in RFC 8785 canonical form (NaN, lone surrogate, …)."""


class BadProof(VesError):
    """A Merkle proof or commitment chain is malformed or does not verify."""


class EnvelopeInvalid(VesError):
    """An event envelope breaks a VES rule.

    ``reason`` is the reference's stable rejection reason code (for example
    ``schema_validation: entity_type`` or ``invalid_payload_hash``).
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message or reason


class DecryptionFailed(VesError):
    """An encrypted payload could not be opened (wrong key, tampered data, bad AAD)."""


class RecipientNotFound(VesError):
    """No recipient entry carries the requested key id."""


class NoRecipients(VesError):
    """Encryption was asked for with an empty recipient list."""


class PayloadHashMismatch(VesError):
    """A decrypted or recomputed payload does not match its signed hash."""
