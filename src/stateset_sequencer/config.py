"""One settings object, read from the environment with the reference's variable names."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

FALSY = {"0", "false", "off", "no"}


class Settings(BaseSettings):
    """Environment configuration. Unset means the embedded default: SQLite under ./data."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=True, extra="ignore")

    DATABASE_URL: str | None = None
    READ_DATABASE_URL: str | None = None
    DATA_DIR: Path = Path("./data")
    MAX_DB_CONNECTIONS: int = Field(default=10, ge=1, le=1000)
    DB_STATEMENT_TIMEOUT_MS: int | None = Field(default=None, ge=1)
    DB_MIGRATE_ON_STARTUP: str = "true"
    VES_SEQUENCER_ID: str | None = None
    VES_SEQUENCER_SIGNING_KEY: str | None = None
    VES_SEQUENCER_SIGNING_KEY_FILE: str | None = None
    VES_STRICT_FORMAT_VALIDATION: str = "false"
    MAX_EVENTS_PER_BATCH: int = Field(default=1000, ge=1)
    MAX_EVENT_PAYLOAD_SIZE: int = Field(default=1024 * 1024, ge=1)
    # Bytes of events in one read page (store.paging); a page always holds one event.
    MAX_PAGE_BYTES: int = Field(default=4 * 1024 * 1024, ge=1)
    CACHE_AGENT_KEY_TTL_SECS: float = Field(default=30.0, ge=0)
    # Key, API-key and schema changes told to every node at once (store ChangeFeed,
    # PostgreSQL LISTEN/NOTIFY); "off" leaves only the cache TTLs to bound staleness.
    CHANGE_FEED: str = "on"

    # --- the HTTP service -----------------------------------------------------------------
    HOST: str = "0.0.0.0"  # noqa: S104 - a service listens on every interface by default
    PORT: int = Field(default=8080, ge=0, le=65535)
    SEQUENCER_ENV: str | None = None
    ENVIRONMENT: str | None = None
    AUTH_MODE: str = "required"
    ALLOW_AUTH_DISABLED: str = "false"
    BOOTSTRAP_ADMIN_API_KEY: str | None = None
    JWT_SECRET: str | None = None
    JWT_ISSUER: str = "stateset-sequencer"
    JWT_AUDIENCE: str = "stateset-api"
    API_KEY_CACHE_TTL_SECS: float = Field(default=5.0, ge=0)
    MAX_API_KEYS_PER_AGENT: int = Field(default=20, ge=1)
    RATE_LIMIT_PER_MINUTE: int | None = Field(default=None, ge=1)
    RATE_LIMIT_WINDOW_SECONDS: float = Field(default=60.0, gt=0)
    RATE_LIMIT_MAX_ENTRIES: int = Field(default=10_000, ge=1)
    ADMIN_IP_ALLOWLIST: str | None = None
    TRUST_PROXY_HEADERS: str = "false"
    TRUST_PROXY_ALLOWLIST: str = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
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

    # --- anchoring (the chain client arrives with the anchoring issue; doctor probes it) ---
    L2_RPC_URL: str | None = None
    L2_CHAIN_ID: str | None = None

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

    @property
    def citus(self) -> bool:
        return _truthy(self.SEQUENCER_TEST_CITUS)

    @property
    def strict(self) -> bool:
        """Under CI a component that cannot be started fails the run instead of skipping."""
        return _truthy(self.CI)
