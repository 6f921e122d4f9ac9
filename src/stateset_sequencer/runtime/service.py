"""Everything a running service holds, built once at start-up in the reference's order:
auth mode, bootstrap key, JWT, store and migrations, the bootstrap key's row, the receipt
signer, then the sequencer.
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from .. import __version__
from ..api.http.failures import FailureAudit
from ..api.http.metrics import Metrics
from ..config import Settings
from ..sequencer import identity
from ..sequencer.auth import (
    API_KEY_PREFIX,
    NIL,
    Authenticator,
    FixedWindowLimiter,
    JwtSettings,
    RateLimits,
    SharedWindowLimiter,
    bootstrap_record,
    mint_api_key,
)
from ..sequencer.commitments import CommitmentEngine
from ..sequencer.ingest import Limits, Sequencer
from ..sequencer.live import LiveEvents
from ..sequencer.schemas import SchemaRegistry, ValidationMode, make_stage, parse_mode
from ..store.factory import DatabaseConfig, open_store
from ..store.ports import Store
from ..store.records import AuditEntry
from ..ves.signing import ReceiptSigner
from .changes import CacheInvalidation
from .commits import CommitWorker
from .core import (
    AnchoringConfigError,
    chain_config,
    database_config,
    receipt_key,
    receipt_key_dir,
)
from .edge import parse_cors_origins
from .projections import ProjectionWorker

if TYPE_CHECKING:
    # Imported where they are built: the Ethereum libraries take a second to import, and
    # every command-line start reaches this module through ``runtime``.
    from ..anchoring.anchorer import Anchorer
    from ..anchoring.chain import Chain, ChainConfig
    from .anchors import AnchorWorker

log = structlog.get_logger("stateset_sequencer.startup")

MIN_SECRET_CHARS = 32
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class StartupError(Exception):
    """The configuration cannot give a safe service; the message says what to change."""


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    sequencer: Sequencer
    authenticator: Authenticator
    rate_limits: RateLimits
    metrics: Metrics
    schemas: SchemaRegistry
    schema_mode: ValidationMode
    auth_failures: FailureAudit
    auth_disabled: bool = False
    admin_allowlist: list[IpNetwork] | None = None
    trusted_proxies: list[IpNetwork] = field(default_factory=list)
    cors_origins: list[str] | None = None  # None: CORS off
    version: str = __version__
    created_bootstrap_key: str | None = None  # set only on the start that minted it
    invalidation: CacheInvalidation | None = None  # None when CHANGE_FEED is off
    projections: ProjectionWorker | None = None  # None when PROJECTION_WORKER_ENABLED is off
    commit_worker: CommitWorker | None = None  # None when COMMIT_WORKER_ENABLED is off
    chain: Chain | None = None  # None: anchoring is not configured
    anchor_worker: AnchorWorker | None = None  # None without a chain or when switched off
    commitments: CommitmentEngine = field(init=False)
    anchorer: Anchorer | None = field(init=False)
    live: LiveEvents = field(init=False)  # started by start_services, closed by close

    def __post_init__(self) -> None:
        self.commitments = CommitmentEngine(self.store, self.store)
        s = self.settings
        self.live = LiveEvents(
            self.store,
            self.store,
            page_events=s.STREAM_PAGE_EVENTS,
            page_bytes=s.MAX_PAGE_BYTES,
            recheck_s=s.STREAM_RECHECK_MS / 1000,
            recheck_disconnected_s=s.STREAM_RECHECK_DISCONNECTED_MS / 1000,
            max_subscribers=s.STREAM_MAX_SUBSCRIBERS,
        )
        self.anchorer = None
        if self.chain is not None:
            from ..anchoring.anchorer import Anchorer

            self.anchorer = Anchorer(
                self.store, self.chain, confirmations=self.settings.ANCHOR_FINALITY_CONFIRMATIONS
            )

    async def close(self) -> None:
        if self.anchor_worker is not None:
            await self.anchor_worker.close()
        if self.chain is not None:
            self.chain.close()
        if self.commit_worker is not None:
            await self.commit_worker.close()  # gives its leader lock up for another node
        if self.projections is not None:
            await self.projections.close()
        if self.invalidation is not None:
            await self.invalidation.close()
        await self.live.close()
        await self.sequencer.aclose()
        await self.auth_failures.close()  # the counted refusals, while the store is open
        await self.store.close()


def parse_networks(text: str | None, what: str) -> list[IpNetwork] | None:
    if text is None or not text.strip():
        return None
    networks: list[IpNetwork] = []
    for part in text.split(","):
        item = part.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise StartupError(f"{what}: {item!r} is not an IP address or CIDR") from None
    return networks or None  # only separators: as empty, the check is off


def _check_auth_settings(settings: Settings) -> None:
    production = settings.is_production
    if settings.auth_disabled:
        if production:
            raise StartupError("AUTH_MODE=disabled is refused in production")
        if not settings.environment_name:
            # Unset would read as development: an explicit name is the operator's word.
            raise StartupError(
                "AUTH_MODE=disabled needs an explicit development environment: set "
                "SEQUENCER_ENV (or ENVIRONMENT) to local, dev, development, test or ci"
            )
        if not settings.allow_auth_disabled:
            raise StartupError("AUTH_MODE=disabled needs ALLOW_AUTH_DISABLED=true as well")
    elif settings.AUTH_MODE.strip().lower() != "required":
        raise StartupError(
            f"AUTH_MODE must be 'required' or 'disabled', not {settings.AUTH_MODE!r}"
        )
    key = settings.BOOTSTRAP_ADMIN_API_KEY
    if key is not None:
        if not key.startswith(API_KEY_PREFIX):
            # The reference would accept the setting and then never match it: fail loudly.
            raise StartupError("BOOTSTRAP_ADMIN_API_KEY must start with 'ss_'")
        if len(key) < MIN_SECRET_CHARS:
            if production:
                raise StartupError("BOOTSTRAP_ADMIN_API_KEY must be at least 32 characters")
            log.warning("short bootstrap admin key", length=len(key))
    secret = settings.JWT_SECRET
    if secret is not None and len(secret) < MIN_SECRET_CHARS:
        if production:
            raise StartupError("JWT_SECRET must be at least 32 characters")
        log.warning("short JWT secret", length=len(secret))


@dataclass(frozen=True, slots=True)
class _Checked:
    """What the settings say, parsed and checked before anything is opened or created."""

    schema_mode: ValidationMode
    chain: ChainConfig | None
    admin_allowlist: list[IpNetwork] | None
    trusted: list[IpNetwork]
    cors_origins: list[str] | None


def _check(settings: Settings) -> _Checked:
    _check_auth_settings(settings)
    try:
        schema_mode = parse_mode(settings.SCHEMA_VALIDATION_MODE)
    except ValueError as exc:
        raise StartupError(f"SCHEMA_VALIDATION_MODE: {exc}") from None
    try:
        chain = chain_config(settings)
    except AnchoringConfigError as exc:
        raise StartupError(str(exc)) from None
    admin_allowlist = parse_networks(settings.ADMIN_IP_ALLOWLIST, "ADMIN_IP_ALLOWLIST")
    trusted = parse_networks(settings.TRUST_PROXY_ALLOWLIST, "TRUST_PROXY_ALLOWLIST") or []
    if settings.trust_proxy_headers and not trusted:
        # Trusting forwarded headers from any peer would let every client pick its address.
        raise StartupError(
            "TRUST_PROXY_HEADERS=true needs TRUST_PROXY_ALLOWLIST: the IPs or CIDRs of the "
            "proxies in front of the service (e.g. 10.0.0.0/8)"
        )
    try:
        cors_origins = parse_cors_origins(
            settings.CORS_ALLOW_ORIGINS, production=settings.is_production
        )
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    for warning in settings.secret_file_warnings:
        log.warning("secret file readable by others", detail=warning)
    return _Checked(schema_mode, chain, admin_allowlist, trusted, cors_origins)


@dataclass(frozen=True, slots=True)
class Preparation:
    """What the one-time preparation of the database settled."""

    signer: ReceiptSigner
    created_bootstrap_key: str | None = None  # set only on the start that minted it


# The supervisor's preparation: one connection migrates, one more is spare.
PREPARE_CONNECTIONS = 2


async def start_services(
    settings: Settings, *, announce: bool = True, prepared: bool = False
) -> Services:
    """Open and prepare everything; on a fresh embedded install this creates the data
    directory, the schema, the receipt key and a bootstrap admin key (printed once).

    ``prepared``: a worker of a supervisor that ran :func:`prepare_service` already
    (runtime/workers.py); it migrates, mints and creates nothing, and only reads the
    receipt key and the sequencer id."""
    checked = _check(settings)
    database = database_config(settings)
    # Before the store opens: a service that could only issue unsigned receipts refuses
    # to start with nothing created.
    key = _receipt_key(settings, database, create=not prepared)
    store = await open_store(
        database,
        max_connections=settings.MAX_DB_CONNECTIONS,
        statement_timeout_ms=settings.DB_STATEMENT_TIMEOUT_MS,
        read_database_url=settings.READ_DATABASE_URL,
    )
    try:
        if prepared:
            preparation = Preparation(await _signer(settings, store, key))
        else:
            preparation = await prepare(settings, store, key)
        services = await _start(settings, store, checked, preparation)
    except BaseException:
        await store.close()
        raise
    if announce:
        _announce(settings, store.capabilities.name, database, key, preparation, checked)
    return services


async def prepare_service(settings: Settings) -> None:
    """What a supervisor of several server processes runs once, before its first worker
    starts (runtime/workers.py): every check :func:`start_services` makes, the receipt key
    (generated when missing, outside production), :func:`prepare` over a store opened for
    that alone, and the start-up announcement, with a minted bootstrap key printed once.
    Nothing is left running; the workers then start with ``prepared=True``."""
    checked = _check(settings)
    database = database_config(settings)
    key = _receipt_key(settings, database, create=True)
    store = await open_store(
        database,
        max_connections=PREPARE_CONNECTIONS,
        statement_timeout_ms=settings.DB_STATEMENT_TIMEOUT_MS,
    )
    try:
        preparation = await prepare(settings, store, key)
        # An unusable RATE_LIMIT_BACKEND stops the supervisor here, not every worker.
        rate_limits(settings, store)
        name = store.capabilities.name
    finally:
        await store.close()
    _announce(settings, name, database, key, preparation, checked)


async def prepare(settings: Settings, store: Store, key: identity.ReceiptKey) -> Preparation:
    """The database made ready to serve: migrations, the bootstrap key's row (or, on a
    fresh install with no credential at all, an admin key minted), the sequencer's id.
    Run once per start, before anything serves: by :func:`start_services` in a single
    process, by :func:`prepare_service` in a supervisor, so that several workers never
    race each other through a first start."""
    if settings.migrate_on_startup:
        applied = await store.migrate()
        if applied:
            log.info("migrations applied", versions=applied)
    if settings.BOOTSTRAP_ADMIN_API_KEY:
        await store.put_api_key(bootstrap_record(settings.BOOTSTRAP_ADMIN_API_KEY))

    created_key: str | None = None
    if not settings.auth_disabled and not settings.BOOTSTRAP_ADMIN_API_KEY:
        active = [k for k in await store.list_api_keys() if k.active]
        if not active and not settings.JWT_SECRET:
            # The reference refuses to start here; a fresh embedded install should just
            # work, so mint an admin key, keep only its hash and show it this once.
            created_key = mint_api_key(NIL)
            await store.put_api_key(
                bootstrap_record(created_key),
                AuditEntry(
                    action="api_key.create",
                    actor="startup",
                    actor_type="system",
                    resource_type="api_key",
                    resource_id=bootstrap_record(created_key).key_hash[:16],
                    details={"bootstrap": True},
                ),
            )
    return Preparation(await _signer(settings, store, key), created_key)


async def _signer(settings: Settings, store: Store, key: identity.ReceiptKey) -> ReceiptSigner:
    try:
        return await identity.receipt_signer(
            store, configured_id=settings.VES_SEQUENCER_ID, key=key
        )
    except identity.IdentityError as exc:
        raise StartupError(str(exc)) from None


async def _start(
    settings: Settings, store: Store, checked: _Checked, preparation: Preparation
) -> Services:
    registry = SchemaRegistry(store, latest_ttl_seconds=settings.SCHEMA_CACHE_TTL_SECS)
    schema_mode = checked.schema_mode
    sequencer = Sequencer(
        store,
        preparation.signer,
        limits=Limits(settings.MAX_EVENTS_PER_BATCH, settings.MAX_EVENT_PAYLOAD_SIZE),
        strict_format=settings.strict_format,
        require_signed_execution_controls=settings.REQUIRE_SIGNED_EXECUTION_CONTROLS,
        key_cache_ttl_seconds=settings.CACHE_AGENT_KEY_TTL_SECS,
        schema_stage=None
        if schema_mode is ValidationMode.DISABLED
        else make_stage(registry, schema_mode),
    )
    jwt_settings = (
        JwtSettings(settings.JWT_SECRET, settings.JWT_ISSUER, settings.JWT_AUDIENCE)
        if settings.JWT_SECRET
        else None
    )
    services = Services(
        settings=settings,
        store=store,
        sequencer=sequencer,
        authenticator=Authenticator(
            store, jwt_settings=jwt_settings, cache_ttl_seconds=settings.API_KEY_CACHE_TTL_SECS
        ),
        rate_limits=rate_limits(settings, store),
        metrics=Metrics(),
        schemas=registry,
        schema_mode=schema_mode,
        auth_failures=FailureAudit(
            store,
            limit_per_minute=settings.AUTH_FAILURE_LIMIT_PER_MINUTE,
            max_sources=settings.AUTH_FAILURE_MAX_SOURCES,
        ),
        auth_disabled=settings.auth_disabled,
        admin_allowlist=checked.admin_allowlist,
        trusted_proxies=checked.trusted,
        cors_origins=checked.cors_origins,
        created_bootstrap_key=preparation.created_bootstrap_key,
        chain=None if checked.chain is None else _chain(checked.chain),
    )
    if settings.change_feed:
        # Last, so that nothing after it can fail and leave the listener running.
        services.invalidation = CacheInvalidation(
            sequencer.keys, services.authenticator, registry, policies=sequencer.policies
        )
        await services.invalidation.start(store)
    await services.live.start()
    if settings.PROJECTION_WORKER_ENABLED:
        # A task that only starts trying its leader lock: it cannot fail start-up.
        services.projections = ProjectionWorker.from_settings(store, settings)
        services.projections.start()
    if settings.COMMIT_WORKER_ENABLED:
        services.commit_worker = CommitWorker.from_settings(store, services.commitments, settings)
        services.commit_worker.start()
    if services.anchorer is not None and settings.ANCHOR_WORKER_ENABLED:
        from .anchors import AnchorWorker

        services.anchor_worker = AnchorWorker.from_settings(store, services.anchorer, settings)
        services.anchor_worker.start()
    return services


def _chain(config: ChainConfig) -> Chain:
    from ..anchoring.chain import Chain

    return Chain(config)


RATE_LIMIT_BACKENDS = ("memory", "postgres")


def rate_limits(settings: Settings, store: Store) -> RateLimits:
    """The tenant budget (per minute) and each key's own (per RATE_LIMIT_WINDOW_SECONDS),
    counted in this process or, with RATE_LIMIT_BACKEND=postgres, in the database for
    every process on it (docs/RATE_LIMITS.md)."""
    backend = settings.RATE_LIMIT_BACKEND.strip().lower()
    if backend not in RATE_LIMIT_BACKENDS:
        raise StartupError(
            f"RATE_LIMIT_BACKEND must be one of {', '.join(RATE_LIMIT_BACKENDS)}, "
            f"not {settings.RATE_LIMIT_BACKEND!r}"
        )
    entries = settings.RATE_LIMIT_MAX_ENTRIES
    if backend == "memory":
        return RateLimits(
            per_tenant_per_minute=settings.RATE_LIMIT_PER_MINUTE,
            tenant=FixedWindowLimiter(60.0, entries),
            credential=FixedWindowLimiter(settings.RATE_LIMIT_WINDOW_SECONDS, entries),
        )
    if not store.rate_budgets_shared:
        # One process serves this database, and its memory limiter already sees every
        # request: a shared table would only add a write per request.
        raise StartupError(
            "RATE_LIMIT_BACKEND=postgres needs a PostgreSQL DATABASE_URL; this database "
            "is served by one process, whose memory limiter already counts every request "
            "(unset RATE_LIMIT_BACKEND or set it to memory)"
        )
    return RateLimits(
        per_tenant_per_minute=settings.RATE_LIMIT_PER_MINUTE,
        tenant=SharedWindowLimiter(store, 60.0, entries),
        credential=SharedWindowLimiter(store, settings.RATE_LIMIT_WINDOW_SECONDS, entries),
    )


def _receipt_key(
    settings: Settings, database: DatabaseConfig, *, create: bool
) -> identity.ReceiptKey:
    try:
        key = receipt_key(settings, database, create=create)
    except identity.IdentityError as exc:
        raise StartupError(str(exc)) from None
    if key is None:
        # Only a worker reads without creating, after its supervisor made or found the key.
        raise StartupError(
            f"no receipt-signing key: the one kept at {receipt_key_dir(settings, database)} "
            "is gone since the server started"
        )
    return key


def _announce(
    settings: Settings,
    database_name: str,
    database: DatabaseConfig,
    key: identity.ReceiptKey,
    preparation: Preparation,
    checked: _Checked,
) -> None:
    if key.beside_data:
        # Loud on every start, not only the first: a second instance on this database
        # with its own generated key would sign receipts no client can check.
        log.warning(
            "receipt-signing key kept beside the data: every instance serving this "
            f"database must sign with this same key; give each {identity.KEY_FILE_SETTING}"
            f"={key.path} (or {identity.KEY_SETTING}), as production requires",
            receipt_key_file=str(key.path),
            generated=key.origin is identity.KeyOrigin.GENERATED,
        )
    log.info(
        "sequencer ready to serve",
        database=database_name,
        location=database.location,
        receipt_key=key.describe(),
        receipt_key_source=key.origin.value,
        sequencer_id=str(preparation.signer.sequencer_id),
        auth="disabled" if settings.auth_disabled else "required",
        schema_validation=checked.schema_mode.value,
    )
    if preparation.created_bootstrap_key is not None:
        # Printed, never logged or stored: only its SHA-256 is kept.
        sys.stdout.write(
            "\n  Bootstrap admin API key (shown once; only its hash is stored):\n"
            f"    {preparation.created_bootstrap_key}\n"
            "  Use it as:  Authorization: ApiKey <key>\n"
            "  Lost it? Mint another with: sequencer-cli api-keys create --admin\n\n"
        )
        sys.stdout.flush()
