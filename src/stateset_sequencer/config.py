"""One settings object, read from the environment with the reference's variable names."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

FALSY = {"0", "false", "off", "no"}


class Settings(BaseSettings):
    """Environment configuration. Unset means the embedded default: SQLite under ./data."""

    # Never echo a value in an error: several settings hold secrets.
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=True, extra="ignore", hide_input_in_errors=True
    )

    DATABASE_URL: str | None = None
    DATABASE_URL_FILE: str | None = None
    READ_DATABASE_URL: str | None = None
    READ_DATABASE_URL_FILE: str | None = None
    DATA_DIR: Path = Path("./data")
    MAX_DB_CONNECTIONS: int = Field(default=10, ge=1, le=1000)
    DB_STATEMENT_TIMEOUT_MS: int | None = Field(default=None, ge=1)
    DB_MIGRATE_ON_STARTUP: str = "true"
    VES_SEQUENCER_ID: str | None = None
    VES_SEQUENCER_SIGNING_KEY: str | None = None
    VES_SEQUENCER_SIGNING_KEY_FILE: str | None = None
    VES_STRICT_FORMAT_VALIDATION: str = "false"
    # Refuse new ves_version 1 events (their command_id and base_version are unsigned);
    # a bool, so that a misspelt value stops start-up instead of leaving V1 open.
    REQUIRE_SIGNED_EXECUTION_CONTROLS: bool = False
    MAX_EVENTS_PER_BATCH: int = Field(default=1000, ge=1)
    MAX_EVENT_PAYLOAD_SIZE: int = Field(default=1024 * 1024, ge=1)
    # Bytes of events in one read page (store.paging); a page always holds one event.
    MAX_PAGE_BYTES: int = Field(default=4 * 1024 * 1024, ge=1)
    CACHE_AGENT_KEY_TTL_SECS: float = Field(default=30.0, ge=0)
    # Key, API-key and schema changes told to every node at once (store ChangeFeed,
    # PostgreSQL LISTEN/NOTIFY); "off" leaves only the cache TTLs to bound staleness.
    CHANGE_FEED: str = "on"
    # The projection worker (runtime/projections.py): one leader across every process on
    # the database folds new events into documents, a batch per stream per pass.
    PROJECTION_WORKER_ENABLED: bool = True
    PROJECTION_POLL_INTERVAL_MS: int = Field(default=100, ge=1)
    PROJECTION_BATCH_SIZE: int = Field(default=100, ge=1, le=10_000)
    # The commit worker (runtime/commits.py): one leader across every process commits each
    # stream's new events once COMMIT_MAX_EVENTS are pending or the oldest of them is
    # COMMIT_INTERVAL_SECS old (the reference commits only on request).
    COMMIT_WORKER_ENABLED: bool = True
    COMMIT_MAX_EVENTS: int = Field(default=1024, ge=1, le=1 << 20)
    COMMIT_INTERVAL_SECS: float = Field(default=60.0, gt=0)
    COMMIT_POLL_INTERVAL_MS: int = Field(default=1000, ge=1)
    # How often a singleton worker that does not lead tries its leader lock again (and
    # how often a leader on PostgreSQL proves its lock's session alive).
    LEADER_LOCK_RETRY_SECS: float = Field(default=5.0, gt=0)

    # --- the HTTP service -----------------------------------------------------------------
    HOST: str = "0.0.0.0"  # noqa: S104 - a service listens on every interface by default
    PORT: int = Field(default=8080, ge=0, le=65535)
    # Server processes behind PORT and GRPC_PORT (serve --workers, runtime/workers.py):
    # unset means one per CPU on PostgreSQL and 1 on SQLite, whose embedded store only one
    # process may serve. Each opens up to MAX_DB_CONNECTIONS connections of its own.
    SERVER_WORKERS: int | None = Field(default=None, ge=1, le=256)
    # The gRPC API (docs/GRPC.md) beside HTTP: on GRPC_PORT, unset meaning PORT + 1 as in
    # the reference; GRPC_DISABLED=true leaves it out.
    GRPC_PORT: int | None = Field(default=None, ge=0, le=65535)
    GRPC_DISABLED: bool = False
    GRPC_REQUEST_TIMEOUT_SECS: float = Field(default=30.0, gt=0)
    # The largest message either way; a bigger one is refused with RESOURCE_EXHAUSTED
    # before it is parsed. 16 MiB holds a batch of 1000 events of 16 KiB.
    GRPC_MAX_MESSAGE_BYTES: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Live streams (docs/STREAMS.md), gRPC and Server-Sent Events alike. A subscriber whose
    # transport takes nothing for STREAM_STALL_TIMEOUT_MS is cut off, told where to resume.
    STREAM_STALL_TIMEOUT_MS: int = Field(default=30_000, ge=1)
    STREAM_PAGE_EVENTS: int = Field(default=100, ge=1, le=1000)
    # How often a watched stream's head is read back while nothing is heard, in case a
    # notification was lost; faster while the database's notification link is down.
    STREAM_RECHECK_MS: int = Field(default=5_000, ge=10)
    STREAM_RECHECK_DISCONNECTED_MS: int = Field(default=500, ge=10)
    STREAM_MAX_SUBSCRIBERS: int = Field(default=1000, ge=1)
    SEQUENCER_ENV: str | None = None
    ENVIRONMENT: str | None = None
    AUTH_MODE: str = "required"
    ALLOW_AUTH_DISABLED: str = "false"
    BOOTSTRAP_ADMIN_API_KEY: str | None = None
    BOOTSTRAP_ADMIN_API_KEY_FILE: str | None = None
    JWT_SECRET: str | None = None
    JWT_SECRET_FILE: str | None = None
    JWT_ISSUER: str = "stateset-sequencer"
    JWT_AUDIENCE: str = "stateset-api"
    API_KEY_CACHE_TTL_SECS: float = Field(default=5.0, ge=0)
    MAX_API_KEYS_PER_AGENT: int = Field(default=20, ge=1)
    RATE_LIMIT_PER_MINUTE: int | None = Field(default=None, ge=1)
    RATE_LIMIT_WINDOW_SECONDS: float = Field(default=60.0, gt=0)
    RATE_LIMIT_MAX_ENTRIES: int = Field(default=10_000, ge=1)
    # "memory": each process counts alone; "postgres": every process on the database
    # counts against one budget, failing closed (docs/RATE_LIMITS.md).
    RATE_LIMIT_BACKEND: str = "memory"
    ADMIN_IP_ALLOWLIST: str | None = None
    TRUST_PROXY_HEADERS: str = "false"
    # No implicit trust: TRUST_PROXY_HEADERS=true needs the proxies named (docs/EDGE.md).
    TRUST_PROXY_ALLOWLIST: str = ""
    # Browser origins allowed by CORS (comma list, or "*" outside production); unset: off.
    CORS_ALLOW_ORIGINS: str | None = None
    REQUEST_TIMEOUT_SECS: float = Field(default=30.0, gt=0)
    # Request bodies, per route (api/http/middleware.py): MAX_BODY_SIZE_BYTES is the
    # ingest routes' limit; the schema registry's bodies carry a schema of up to 100 KiB;
    # every other route's JSON is small.
    MAX_BODY_SIZE_BYTES: int = Field(default=10 * 1024 * 1024, ge=1)
    MAX_SCHEMA_BODY_BYTES: int = Field(default=256 * 1024, ge=1)
    MAX_JSON_BODY_BYTES: int = Field(default=16 * 1024, ge=1)
    # Refused credentials (api/http/failures.py): one audit row per source, reason and
    # minute; a source refused this many times in a minute gets 429 until it ends.
    AUTH_FAILURE_LIMIT_PER_MINUTE: int | None = Field(default=100, ge=1)
    AUTH_FAILURE_MAX_SOURCES: int = Field(default=10_000, ge=1)
    # Connections (api/http/connections.py): idle keep-alive, the time a request head may take
    # to arrive, and how many connections are served at once (the rest get 503).
    HTTP_KEEPALIVE_TIMEOUT_SECS: float = Field(default=15.0, gt=0)
    HTTP_HEADER_TIMEOUT_SECS: float = Field(default=10.0, gt=0)
    HTTP_MAX_CONNECTIONS: int = Field(default=1000, ge=1)
    # Public self-registration (POST /api/v1/agents/register): off unless "true"; each
    # client address gets this many registrations per window.
    PUBLIC_AGENT_REGISTRATION_ENABLED: str = "false"
    PUBLIC_AGENT_REGISTRATION_RATE_LIMIT_PER_MINUTE: int = Field(default=30, ge=1)
    PUBLIC_AGENT_REGISTRATION_WINDOW_SECONDS: float = Field(default=60.0, gt=0)
    PUBLIC_AGENT_REGISTRATION_MAX_ENTRIES: int = Field(default=10_000, ge=1)
    SCHEMA_VALIDATION_MODE: str = "enforce"
    SCHEMA_CACHE_TTL_SECS: float = Field(default=5.0, ge=0)
    LOG_LEVEL: str = "info"
    LOG_FORMAT: str = "json"  # json | console

    # --- anchoring (docs/ANCHORING.md): the three of L2_RPC_URL, SET_REGISTRY_ADDRESS and
    # SEQUENCER_PRIVATE_KEY, or none (anchoring off); L2_CHAIN_ID is read from the node
    # when unset and checked against it when set. runtime/core.chain_config parses them.
    L2_RPC_URL: str | None = None
    L2_CHAIN_ID: str | None = None
    SET_REGISTRY_ADDRESS: str | None = None
    SEQUENCER_PRIVATE_KEY: str | None = None
    SEQUENCER_PRIVATE_KEY_FILE: str | None = None
    # The anchor worker (leader-elected, started only when anchoring is configured): every
    # ANCHOR_INTERVAL_SECS it sends up to ANCHOR_BATCH_THRESHOLD commitments, each stream in
    # order; every ANCHOR_FINALITY_POLL_SECS it confirms those ANCHOR_FINALITY_CONFIRMATIONS
    # blocks deep and re-anchors those a reorg dropped. Defaults are the reference's.
    ANCHOR_WORKER_ENABLED: bool = True
    ANCHOR_INTERVAL_SECS: float = Field(default=60.0, gt=0)
    ANCHOR_BATCH_THRESHOLD: int = Field(default=10, ge=1, le=1000)
    ANCHOR_FINALITY_CONFIRMATIONS: int = Field(default=6, ge=1, le=10_000)
    ANCHOR_FINALITY_POLL_SECS: float = Field(default=30.0, gt=0)
    ANCHOR_RPC_TIMEOUT_SECS: float = Field(default=30.0, gt=0)
    ANCHOR_RECEIPT_TIMEOUT_SECS: float = Field(default=120.0, gt=0)
    # The chain client's circuit breaker (the reference's numbers): this many transport
    # failures within the window open it, for this long before one trial call.
    ANCHOR_BREAKER_FAILURES: int = Field(default=5, ge=1)
    ANCHOR_BREAKER_WINDOW_SECS: float = Field(default=120.0, gt=0)
    ANCHOR_BREAKER_OPEN_SECS: float = Field(default=60.0, gt=0)

    _secret_file_warnings: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        """``<NAME>_FILE``: the secret read from a file, once, here (docs/EDGE.md)."""
        for name in (*SECRET_FILE_SETTINGS, SIGNING_KEY_SETTING):
            path = _given(getattr(self, f"{name}_FILE"))
            if path is None:
                continue
            if _given(getattr(self, name)) is not None:
                raise ValueError(f"set {name} or {name}_FILE, not both")
            if name == SIGNING_KEY_SETTING:
                continue  # read by sequencer.identity, with its own owner-only rule
            value, warning = read_secret_file(path, f"{name}_FILE", production=self.is_production)
            # The value replaces the path, so that re-validating a copy of these settings
            # (cli.common.with_overrides) sees one of the two only.
            setattr(self, name, value)
            setattr(self, f"{name}_FILE", None)
            if warning is not None:
                self._secret_file_warnings.append(warning)
        return self

    @property
    def secret_file_warnings(self) -> list[str]:
        """Secret files read despite loose permissions (outside production only)."""
        return list(self._secret_file_warnings)

    @property
    def grpc_port(self) -> int:
        if self.GRPC_PORT is not None:
            return self.GRPC_PORT
        # PORT 0 asks for any free port; so does the gRPC port then.
        return 0 if self.PORT == 0 else min(self.PORT + 1, 65535)

    @property
    def change_feed(self) -> bool:
        return self.CHANGE_FEED.strip().lower() not in FALSY

    @property
    def migrate_on_startup(self) -> bool:
        return self.DB_MIGRATE_ON_STARTUP.strip().lower() not in FALSY

    @property
    def strict_format(self) -> bool:
        return self.VES_STRICT_FORMAT_VALIDATION.strip().lower() in {"1", "true", "on", "yes"}

    @property
    def is_production(self) -> bool:
        """As the reference decides it: any environment name but the development ones
        (an unknown name counts as production, so a typo fails safe)."""
        return self.environment_name not in DEVELOPMENT_ENVS

    @property
    def environment_name(self) -> str:
        """The environment's name as set (empty when neither variable is)."""
        return (self.SEQUENCER_ENV or self.ENVIRONMENT or "").strip().lower()

    @property
    def auth_disabled(self) -> bool:
        return self.AUTH_MODE.strip().lower() == "disabled"

    @property
    def allow_auth_disabled(self) -> bool:
        return _truthy(self.ALLOW_AUTH_DISABLED)

    @property
    def trust_proxy_headers(self) -> bool:
        return _truthy(self.TRUST_PROXY_HEADERS)

    @property
    def public_registration_enabled(self) -> bool:
        return _truthy(self.PUBLIC_AGENT_REGISTRATION_ENABLED)


DEVELOPMENT_ENVS = {"", "local", "dev", "development", "test", "testing", "ci", "staging"}


def _truthy(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "on", "yes"}


# Settings that hold a secret, each also given as ``<NAME>_FILE``: the path of a file that
# holds the value, as secret stores mount them. The receipt key's file
# (VES_SEQUENCER_SIGNING_KEY_FILE) predates this and keeps its own reader.
SECRET_FILE_SETTINGS = (
    "DATABASE_URL",
    "READ_DATABASE_URL",
    "BOOTSTRAP_ADMIN_API_KEY",
    "JWT_SECRET",
    "SEQUENCER_PRIVATE_KEY",
)
SIGNING_KEY_SETTING = "VES_SEQUENCER_SIGNING_KEY"
SECRET_FILE_MAX_BYTES = 64 * 1024


def _given(value: str | None) -> str | None:
    # Empty counts as unset, so that ``NAME= NAME_FILE=...`` overrides an inherited NAME.
    return value if value is not None and value.strip() else None


def read_secret_file(path_text: str, setting: str, *, production: bool) -> tuple[str, str | None]:
    """A secret file's value (UTF-8, non-empty, at most 64 KiB, trailing newlines
    dropped) and a warning when others may read it; in production such a file is
    refused. Every refusal is a ``ValueError`` naming the setting and the file."""
    path = Path(path_text.strip())
    try:
        # O_NONBLOCK: a FIFO or device named by mistake must not hang the start.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ValueError(f"{setting}: {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path} ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{setting}: {path} is not a regular file")
        data = b""
        while len(data) <= SECRET_FILE_MAX_BYTES:  # one byte past the bound is enough
            chunk = os.read(fd, SECRET_FILE_MAX_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path} ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > SECRET_FILE_MAX_BYTES:
        raise ValueError(f"{setting}: {path} is larger than {SECRET_FILE_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{setting}: {path} is not UTF-8 text") from None
    text = text.rstrip("\r\n")
    if not text.strip():
        raise ValueError(f"{setting}: {path} is empty")
    if "\x00" in text:
        raise ValueError(f"{setting}: {path} holds a NUL byte, not a text secret")
    mode = stat.S_IMODE(info.st_mode)
    warning = None
    if mode & 0o077:
        fix = (
            f"{setting}: {path} has mode {mode:04o}; a secret file must be readable by "
            f"its owner only (chmod 600 {path})"
        )
        if production:
            raise ValueError(fix)
        warning = fix
    return text, warning


class TestEnvironment(BaseSettings):
    """What the test support (``stateset_sequencer.testing``) reads from the environment:
    a PostgreSQL server to use, and whether a missing component is a failure (CI)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=True, extra="ignore")

    SEQUENCER_TEST_DATABASE_URL: str | None = None
    # Set on a server whose shared_preload_libraries has citus: every scratch database
    # then gets the extension, with the server as a coordinator that holds shards, so the
    # suites run on a distributed schema (docs/SCALING.md). Never set in CI.
    SEQUENCER_TEST_CITUS: str = ""
    CI: str = ""
    # Set by pytest-xdist in each worker: which slice of loopback ports is the worker's.
    PYTEST_XDIST_WORKER: str = ""
    PYTEST_XDIST_WORKER_COUNT: str = ""

    @property
    def citus(self) -> bool:
        return _truthy(self.SEQUENCER_TEST_CITUS)

    @property
    def strict(self) -> bool:
        """Under CI a component that cannot be started fails the run instead of skipping."""
        return _truthy(self.CI)
