"""The schema registry service and the handler-level per-event schema stage.

Tenants register JSON Schemas per event type (REFERENCE_MAP §1.7); each registration of a
(tenant, event_type) becomes the next version. At ingest, :func:`check_events` runs after
the whole-batch checks and before the sequencer (REFERENCE_MAP §4.3 "Per-event schema
stage"), validating plaintext payloads against the latest ``active`` version in the way
``SCHEMA_VALIDATION_MODE`` says; its rejections carry the bare reason ``schema_validation``.

Schemas are Draft 2020-12 documents. ``$ref`` resolves only inside the document itself (and
to the published meta-schemas): nothing is ever fetched over the network.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import referencing.exceptions
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from ..store.errors import StoreError
from ..store.ports import SchemaStore
from ..store.records import SCHEMA_COMPATIBILITIES, SCHEMA_STATUSES, AuditEntry, SchemaRecord
from ..ves.envelope import MAX_EVENT_TYPE_BYTES, PAYLOAD_KIND_ENCRYPTED, VesEventEnvelope
from ..ves.jsontext import load_json
from ..ves.storable import TextFault, is_storable, text_fault
from .outcomes import Rejection

logger = logging.getLogger(__name__)

REJECTION_REASON = "schema_validation"
MAX_SCHEMA_BYTES = 100 * 1024
MAX_DESCRIPTION_BYTES = 2048
DEFAULT_COMPATIBILITY = "backward"
# Enough to show what is wrong without letting one hostile payload build a huge response.
MAX_REPORTED_ERRORS = 100
DEFAULT_VALIDATOR_CACHE_SIZE = 1024


# --- the mode -------------------------------------------------------------------------------


class ValidationMode(enum.StrEnum):
    """``SCHEMA_VALIDATION_MODE``: what the per-event schema stage does."""

    DISABLED = "disabled"  # no lookups at all
    WARN = "warn"  # never rejects; reports what enforce or required would have
    ENFORCE = "enforce"  # rejects plaintext payloads that fail their schema
    REQUIRED = "required"  # also rejects events whose type has no active schema


_MODE_ALIASES: dict[str, ValidationMode] = {
    **dict.fromkeys(("disabled", "off", "none", "false", "0"), ValidationMode.DISABLED),
    **dict.fromkeys(("warn", "warnonly", "warn_only", "warning"), ValidationMode.WARN),
    **dict.fromkeys(("enforce", "on", "true", "1", ""), ValidationMode.ENFORCE),
    **dict.fromkeys(("required", "strict", "require"), ValidationMode.REQUIRED),
}

# Unicode White_Space, which is what the reference's trim() removes. str.strip() with no
# argument would also remove U+001C..U+001F and so accept values the reference refuses.
_WHITE_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def parse_mode(text: str | None) -> ValidationMode:
    """Read ``SCHEMA_VALIDATION_MODE`` (trimmed, any case); unset or empty is ``enforce``.
    Anything that is not one of the reference's spellings raises ``ValueError``."""
    if text is None:
        return ValidationMode.ENFORCE
    mode = _MODE_ALIASES.get(text.strip(_WHITE_SPACE).lower())
    if mode is None:
        raise ValueError(
            f"SCHEMA_VALIDATION_MODE {text!r} is not recognised; use disabled "
            "(off, none, false, 0), warn (warnonly, warn_only, warning), enforce "
            "(on, true, 1, empty) or required (strict, require)"
        )
    return mode


# --- errors and results ---------------------------------------------------------------------


class SchemaReason(enum.StrEnum):
    """Why the registry refuses a registration or a status change. Every reason this
    module raises is here; ``api/http/errors.py`` maps each to its status."""

    INVALID_EVENT_TYPE = "INVALID_EVENT_TYPE"
    INVALID_COMPATIBILITY = "INVALID_COMPATIBILITY"
    INVALID_DESCRIPTION = "INVALID_DESCRIPTION"
    DESCRIPTION_TOO_LONG = "DESCRIPTION_TOO_LONG"
    INVALID_SCHEMA = "INVALID_SCHEMA"
    SCHEMA_TOO_LARGE = "SCHEMA_TOO_LARGE"
    INVALID_STATUS = "INVALID_STATUS"


class SchemaInputError(ValueError):
    """A registration or status change the registry refuses, with its reason."""

    def __init__(self, reason: SchemaReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SchemaUnusable(Exception):
    """A registered schema that cannot be evaluated: a ``$ref``, reached through the
    payload's content, that does not resolve. The schema is at fault, not the payload."""

    def __init__(self, schema: SchemaRecord, message: str) -> None:
        super().__init__(message)
        self.schema = schema
        self.message = message


class PayloadError(TypedDict):
    """One way a payload fails its schema: ``path`` is a JSON Pointer into the payload
    (``""`` for the payload itself)."""

    path: str
    message: str


# --- the registry ---------------------------------------------------------------------------


def _storable_event_type(event_type: str) -> bool:
    """The storable-text rule (``ves.storable``) with the envelope's bounds: a type that
    could not be stored cannot have a schema, so a lookup by it finds nothing."""
    return is_storable(event_type, min_bytes=1, max_bytes=MAX_EVENT_TYPE_BYTES)


def _json_pointer(parts: Iterable[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True, slots=True)
class SchemaActor:
    """Who changes the registry, for its audit entries."""

    actor: str
    actor_type: str
    request_id: str | None = None


def _schema_audit(
    action: str, who: SchemaActor | None, details: dict[str, Any] | None = None
) -> AuditEntry | None:
    """The audit entry of a registry change; the store adds the schema's id and version."""
    if who is None:
        return None
    return AuditEntry(
        action=action,
        actor=who.actor,
        actor_type=who.actor_type,
        request_id=who.request_id,
        details={} if details is None else details,
    )


class SchemaRegistry:
    """Registration, lookup and payload validation over a :class:`SchemaStore`.

    Compiled validators are cached by schema id: a schema's document never changes once
    registered (only its status does), so an entry never goes stale. The cache is bounded
    and least-recently-used entries are dropped first.
    """

    def __init__(
        self,
        store: SchemaStore,
        *,
        cache_size: int = DEFAULT_VALIDATOR_CACHE_SIZE,
        latest_ttl_seconds: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._store = store
        self._cache_size = cache_size
        self._validators: OrderedDict[uuid.UUID, Validator] = OrderedDict()
        # Every ingest batch asks for the latest active schema of its event types; a short
        # TTL saves that query. Changes through this registry drop the entry at once;
        # those made through another process arrive through the store's change feed
        # (``forget``), and anything the feed cannot tell within ``latest_ttl_seconds``.
        self._latest_ttl = latest_ttl_seconds
        # Bumped by every forget: a lookup that began before one must not cache what it
        # read for a whole TTL.
        self._generation = 0
        self._monotonic = monotonic
        self._latest: dict[tuple[uuid.UUID, str], tuple[float, SchemaRecord | None]] = {}

    async def register(
        self,
        tenant_id: uuid.UUID,
        event_type: str,
        schema_json: Any,
        description: str | None = None,
        compatibility: str = DEFAULT_COMPATIBILITY,
        created_by: str | None = None,
        actor: SchemaActor | None = None,
    ) -> SchemaRecord:
        """Store ``schema_json`` (a decoded JSON value) as the next version of
        (tenant, event_type). Raises :class:`SchemaInputError` for bad input. With
        ``actor``, a ``schema.register`` audit entry commits with the schema."""
        fault = text_fault(
            event_type, field="event_type", min_bytes=1, max_bytes=MAX_EVENT_TYPE_BYTES
        )
        if fault is not None:
            raise SchemaInputError(SchemaReason.INVALID_EVENT_TYPE, fault.message)
        if compatibility not in SCHEMA_COMPATIBILITIES:
            raise SchemaInputError(
                SchemaReason.INVALID_COMPATIBILITY,
                f"compatibility must be one of {', '.join(SCHEMA_COMPATIBILITIES)}",
            )
        if description is not None:
            fault = text_fault(description, field="description", max_bytes=MAX_DESCRIPTION_BYTES)
            if fault is not None and fault.fault is TextFault.TOO_LONG:
                raise SchemaInputError(
                    SchemaReason.DESCRIPTION_TOO_LONG,
                    f"description exceeds {MAX_DESCRIPTION_BYTES} UTF-8 bytes",
                )
            if fault is not None:
                raise SchemaInputError(SchemaReason.INVALID_DESCRIPTION, fault.message)
        # bool is an int in Python (0 == False): only a real object or true/false is a
        # JSON Schema, whatever a decoder or validator would let through.
        if not isinstance(schema_json, dict) and type(schema_json) is not bool:
            raise SchemaInputError(
                SchemaReason.INVALID_SCHEMA, "a JSON Schema is an object, true or false"
            )
        text = _schema_text(schema_json)
        # Compact JSON writes NUL as an escape, so only a lone surrogate or the size fail.
        fault = text_fault(text, field="schema", max_bytes=MAX_SCHEMA_BYTES)
        if fault is not None and fault.fault is TextFault.TOO_LONG:
            raise SchemaInputError(
                SchemaReason.SCHEMA_TOO_LARGE,
                f"schema exceeds {MAX_SCHEMA_BYTES} bytes as compact JSON",
            )
        if fault is not None:
            raise SchemaInputError(
                SchemaReason.INVALID_SCHEMA, "schema contains text that is not UTF-8"
            )
        _check_schema(schema_json)
        _probe(schema_json)
        record = await self._store.put_schema(
            tenant_id,
            event_type,
            text,
            compatibility=compatibility,
            description=description,
            created_by=created_by,
            audit=_schema_audit("schema.register", actor, {"compatibility": compatibility}),
        )
        self._forget(tenant_id, event_type)
        return record

    async def get(self, schema_id: uuid.UUID) -> SchemaRecord | None:
        return await self._store.get_schema(schema_id)

    async def list_schemas(
        self, tenant_id: uuid.UUID, event_type: str | None = None
    ) -> list[SchemaRecord]:
        if event_type is not None and not _storable_event_type(event_type):
            return []
        return await self._store.list_schemas(tenant_id, event_type)

    async def get_version(
        self, tenant_id: uuid.UUID, event_type: str, version: int
    ) -> SchemaRecord | None:
        if not _storable_event_type(event_type):
            return None
        return await self._store.get_schema_version(tenant_id, event_type, version)

    async def latest(self, tenant_id: uuid.UUID, event_type: str) -> SchemaRecord | None:
        """The latest ``active`` version, the one ingest validates against."""
        if not _storable_event_type(event_type):
            return None
        key = (tenant_id, event_type)
        now = self._monotonic()
        hit = self._latest.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        found = await self._store.latest_active_schema(tenant_id, event_type)
        if self._latest_ttl > 0 and generation == self._generation:
            if len(self._latest) > 10_000:  # bound memory under many event types
                self._latest.clear()
            self._latest[key] = (now + self._latest_ttl, found)
        return found

    def _forget(self, tenant_id: uuid.UUID, event_type: str) -> None:
        self._generation += 1
        self._latest.pop((tenant_id, event_type), None)

    def forget(self, tenant_id: uuid.UUID | None = None, event_type: str | None = None) -> None:
        """Drop the cached latest version of one event type, of a tenant's every type,
        or (both None) everything."""
        if tenant_id is not None and event_type is not None:
            self._forget(tenant_id, event_type)
            return
        self._generation += 1
        for key in [k for k in self._latest if tenant_id in (None, k[0])]:
            del self._latest[key]

    async def set_status(
        self, schema_id: uuid.UUID, status: str, actor: SchemaActor | None = None
    ) -> SchemaRecord | None:
        if status not in SCHEMA_STATUSES:
            raise SchemaInputError(
                SchemaReason.INVALID_STATUS, f"status must be one of {', '.join(SCHEMA_STATUSES)}"
            )
        record = await self._store.set_schema_status(
            schema_id, status, _schema_audit("schema.status", actor)
        )
        if record is not None:
            self._forget(record.tenant_id, record.event_type)
        return record

    async def delete(self, schema_id: uuid.UUID, actor: SchemaActor | None = None) -> bool:
        record = await self._store.get_schema(schema_id)
        deleted = await self._store.delete_schema(schema_id, _schema_audit("schema.delete", actor))
        self._validators.pop(schema_id, None)
        if record is not None:
            self._forget(record.tenant_id, record.event_type)
        return deleted

    async def validate_payload(
        self,
        tenant_id: uuid.UUID,
        event_type: str,
        payload: Any,
        version: int | None = None,
    ) -> tuple[SchemaRecord | None, list[PayloadError]]:
        """Check ``payload`` against a version (or the latest active one). No schema:
        ``(None, [])``. Raises :class:`SchemaUnusable` if the schema cannot be evaluated."""
        if version is None:
            schema = await self.latest(tenant_id, event_type)
        else:
            schema = await self.get_version(tenant_id, event_type, version)
        if schema is None:
            return None, []
        return schema, self.payload_errors(schema, payload)

    def validator(self, schema: SchemaRecord) -> Validator:
        """The compiled validator of ``schema``, from the cache when it is there."""
        cached = self._validators.get(schema.id)
        if cached is not None:
            self._validators.move_to_end(schema.id)
            return cached
        compiled: Validator = Draft202012Validator(load_json(schema.schema_json))
        self._validators[schema.id] = compiled
        if len(self._validators) > self._cache_size:
            self._validators.popitem(last=False)
        return compiled

    def payload_errors(self, schema: SchemaRecord, payload: Any) -> list[PayloadError]:
        """At most MAX_REPORTED_ERRORS failures of ``payload`` against ``schema``."""
        return _payload_errors(schema, self.validator(schema), payload)


def _schema_text(schema_json: Any) -> str:
    """Compact JSON text of the document, key order kept. NaN and infinities are refused
    rather than stored as text no JSON parser (nor PostgreSQL) accepts."""
    try:
        return json.dumps(schema_json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise SchemaInputError(
            SchemaReason.INVALID_SCHEMA, "schema holds NaN or Infinity, which JSON cannot carry"
        ) from None
    except TypeError:
        raise SchemaInputError(SchemaReason.INVALID_SCHEMA, "schema is not JSON") from None
    except RecursionError:
        raise SchemaInputError(SchemaReason.INVALID_SCHEMA, "schema is nested too deeply") from None


def _check_schema(schema_json: Any) -> None:
    try:
        Draft202012Validator.check_schema(schema_json)
    except SchemaError as exc:
        where = _json_pointer(exc.absolute_path) or "the schema"
        raise SchemaInputError(
            SchemaReason.INVALID_SCHEMA,
            f"not a valid JSON Schema (Draft 2020-12) at {where}: {exc.message}",
        ) from None
    except RecursionError:
        raise SchemaInputError(SchemaReason.INVALID_SCHEMA, "schema is nested too deeply") from None


def _probe(schema_json: Any) -> None:
    """Evaluate the schema once, against ``null``: a ``$ref`` at its root that does not
    resolve, or a cycle of references that consumes no input, fails every payload alike
    and is refused now rather than at ingest. (References reached only through some
    payload's content can only be found when such a payload comes.)"""
    try:
        for _ in Draft202012Validator(schema_json).iter_errors(None):
            pass
    except referencing.exceptions.Unresolvable as exc:
        raise SchemaInputError(
            SchemaReason.INVALID_SCHEMA, f"unresolvable $ref {_ref_of(exc)}"
        ) from None
    except RecursionError:
        raise SchemaInputError(
            SchemaReason.INVALID_SCHEMA, "schema refers to itself endlessly"
        ) from None


def _ref_of(exc: referencing.exceptions.Unresolvable) -> str:
    """The reference that failed, as the schema's author wrote it (the library's own
    message names its internals)."""
    return repr(str(getattr(exc, "ref", "")))[:200]


def _payload_errors(schema: SchemaRecord, validator: Validator, payload: Any) -> list[PayloadError]:
    try:
        found = itertools.islice(validator.iter_errors(payload), MAX_REPORTED_ERRORS)
        return [
            PayloadError(path=_json_pointer(error.absolute_path), message=error.message)
            for error in found
        ]
    except referencing.exceptions.Unresolvable as exc:
        raise SchemaUnusable(
            schema,
            f"schema {schema.event_type} v{schema.version} has an unresolvable $ref {_ref_of(exc)}",
        ) from None
    except RecursionError:
        # A recursive schema meeting a payload nested deeper than Python can follow. Counted
        # against the payload: were it the schema's fault (skipped outside required mode),
        # deep nesting alone would carry any payload past enforce.
        return [PayloadError(path="", message="payload is nested too deeply to validate")]


# --- the per-event schema stage -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchemaWarning:
    """Something the stage noticed but, in this mode, let through."""

    event_id: uuid.UUID
    event_type: str
    message: str


@dataclass(slots=True)
class SchemaStageResult:
    """Events that go on to the sequencer (in request order), the ones rejected here, and
    the warnings (already logged)."""

    accepted: list[VesEventEnvelope] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    warnings: list[SchemaWarning] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _LookupFailed:
    message: str


_Lookup = SchemaRecord | None | _LookupFailed
_Key = tuple[uuid.UUID, str]


async def check_events(
    registry: SchemaRegistry, mode: ValidationMode, events: Sequence[VesEventEnvelope]
) -> SchemaStageResult:
    """The handler-level schema stage (REFERENCE_MAP §4.3), per event:

    * plaintext: a payload failing the latest active schema is rejected in enforce and
      required; no active schema is rejected only in required; a failed lookup (or a
      schema that cannot be evaluated) is rejected only in required;
    * encrypted: enforce lets it through unlooked-at; warn and required look the schema
      up, and required rejects when there is none (or the lookup fails).

    Warn never rejects. Whatever is let through despite a problem becomes a warning.
    """
    if mode is ValidationMode.DISABLED:
        return SchemaStageResult(accepted=list(events))
    wanted = [env for env in events if _looks_up(mode, env)]
    schemas = await _lookup_all(registry, {(env.tenant_id, env.event_type) for env in wanted})
    # Compile on the loop, where the cache lives; only validation runs in a thread.
    validators = {
        key: registry.validator(found)
        for key, found in schemas.items()
        if isinstance(found, SchemaRecord)
    }
    if any(env.payload_kind != PAYLOAD_KIND_ENCRYPTED for env in wanted) and validators:
        # Validation is pure CPU and a payload may be up to a megabyte: off the loop.
        result = await asyncio.to_thread(_decide_all, mode, events, schemas, validators)
    else:
        result = _decide_all(mode, events, schemas, validators)
    for warning in result.warnings:
        logger.warning(
            "schema stage (%s): event %s (%s): %s",
            mode.value,
            warning.event_id,
            warning.event_type,
            warning.message,
        )
    return result


def _looks_up(mode: ValidationMode, env: VesEventEnvelope) -> bool:
    if env.payload_kind == PAYLOAD_KIND_ENCRYPTED:
        return mode in (ValidationMode.WARN, ValidationMode.REQUIRED)
    return mode is not ValidationMode.DISABLED


async def _lookup_all(registry: SchemaRegistry, keys: set[_Key]) -> dict[_Key, _Lookup]:
    """One lookup per distinct (tenant, event_type), run concurrently."""

    async def one(key: _Key) -> _Lookup:
        try:
            return await registry.latest(*key)
        except StoreError as exc:
            logger.warning("schema lookup failed: %s: %s", type(exc).__name__, str(exc)[:300])
            return _LookupFailed("schema lookup failed: the database did not answer")

    ordered = sorted(keys)
    found = await asyncio.gather(*(one(key) for key in ordered))
    return dict(zip(ordered, found, strict=True))


def _decide_all(
    mode: ValidationMode,
    events: Sequence[VesEventEnvelope],
    schemas: dict[_Key, _Lookup],
    validators: dict[_Key, Validator],
) -> SchemaStageResult:
    result = SchemaStageResult()
    for env in events:
        problem, rejects = _problem(mode, env, schemas, validators)
        if problem is None:
            result.accepted.append(env)
        elif rejects:
            result.rejections.append(Rejection(env.event_id, REJECTION_REASON, problem))
        else:
            result.accepted.append(env)
            result.warnings.append(SchemaWarning(env.event_id, env.event_type, problem))
    return result


def _problem(
    mode: ValidationMode,
    env: VesEventEnvelope,
    schemas: dict[_Key, _Lookup],
    validators: dict[_Key, Validator],
) -> tuple[str | None, bool]:
    """What is wrong with ``env`` (None: nothing, or nothing this mode looks at) and
    whether this mode rejects for it."""
    if not _looks_up(mode, env):
        return None, False
    key = (env.tenant_id, env.event_type)
    found = schemas[key]
    required = mode is ValidationMode.REQUIRED
    if isinstance(found, _LookupFailed):
        return found.message, required
    if found is None:
        if mode is ValidationMode.ENFORCE:
            return None, False
        return f"no active schema registered for event type {env.event_type!r}", required
    if env.payload_kind == PAYLOAD_KIND_ENCRYPTED:
        return None, False  # only the schema's existence can be checked
    try:
        errors = _payload_errors(found, validators[key], env.payload)
    except SchemaUnusable as exc:
        return exc.message, required
    if not errors:
        return None, False
    return _describe(found, errors), mode is not ValidationMode.WARN


def _describe(schema: SchemaRecord, errors: list[PayloadError]) -> str:
    first = errors[0]
    where = first["path"] or "payload"
    if len(errors) >= MAX_REPORTED_ERRORS:
        more = f" (and at least {len(errors) - 1} more)"
    elif len(errors) > 1:
        more = f" (and {len(errors) - 1} more)"
    else:
        more = ""
    return (
        f"payload does not match schema {schema.event_type} v{schema.version}: "
        f"{where}: {first['message']}{more}"
    )


def make_stage(
    registry: SchemaRegistry, mode: ValidationMode
) -> Callable[
    [Sequence[VesEventEnvelope]], Awaitable[tuple[list[VesEventEnvelope], list[Rejection]]]
]:
    """:func:`check_events` bound to a registry and mode, in the shape the ingest handler
    takes its schema stage: (events that pass, rejections). Warnings are only logged."""

    async def stage(
        events: Sequence[VesEventEnvelope],
    ) -> tuple[list[VesEventEnvelope], list[Rejection]]:
        result = await check_events(registry, mode, events)
        return result.accepted, result.rejections

    return stage
