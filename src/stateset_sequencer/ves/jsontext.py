"""Exact JSON text: the codec that stores, exports and the payload-size rule share.

Payloads are kept as the JSON text of the value as received, not canonicalised: canonical
JSON rounds big integers through doubles, and an exact replay must compare equal to what
was stored. The size limit on a payload is counted over this same text, so the rule and
the stored bytes can never disagree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from .envelope import VesEventEnvelope


def dump_json(value: Any) -> str:
    """Compact JSON text of a value; integers beyond 64 bits go through the stdlib."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# orjson quietly reads integers beyond 64 bits as floats; such texts take the stdlib path,
# which keeps every integer exact (a run of 19+ digits is the cheap sign of one).
_LONG_DIGITS = re.compile(r"\d{19}")


def load_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    # Only a float can be an integer orjson read inexactly, and only a run of 19+ digits
    # can be such an integer; scanning the text (slow on big payloads) is left for then.
    if _has_float(value) and _LONG_DIGITS.search(text):
        return json.loads(text)
    return value


def _has_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def payload_text(env: VesEventEnvelope) -> str | None:
    return None if env.payload is None else dump_json(env.payload)


def encrypted_text(env: VesEventEnvelope) -> str | None:
    if env.payload_encrypted is None:
        return None
    return dump_json(env.payload_encrypted.model_dump(mode="json"))


def bundle_text(env: VesEventEnvelope) -> str | None:
    return None if env.agent_signature_bundle is None else dump_json(env.agent_signature_bundle)


@dataclass(frozen=True, slots=True)
class StoredTexts:
    """An event's JSON texts as a store keeps them, made once per event at ingest and
    carried to the row (three serialisations per event were one too many each)."""

    payload: str | None
    encrypted: str | None
    bundle: str | None

    @property
    def payload_size(self) -> int:
        """Compact JSON bytes of ``payload`` or ``payload_encrypted``, as the reference
        counts."""
        text = self.encrypted if self.encrypted is not None else self.payload
        return len((text if text is not None else "null").encode("utf-8"))


def stored_texts(env: VesEventEnvelope) -> StoredTexts:
    return StoredTexts(payload_text(env), encrypted_text(env), bundle_text(env))
