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
    VES_STRICT_FORMAT_VALIDATION: str = "false"
    MAX_EVENTS_PER_BATCH: int = Field(default=1000, ge=1)
    MAX_EVENT_PAYLOAD_SIZE: int = Field(default=1024 * 1024, ge=1)
    CACHE_AGENT_KEY_TTL_SECS: float = Field(default=30.0, ge=0)

    @property
    def migrate_on_startup(self) -> bool:
        return self.DB_MIGRATE_ON_STARTUP.strip().lower() not in FALSY

    @property
    def strict_format(self) -> bool:
        return self.VES_STRICT_FORMAT_VALIDATION.strip().lower() in {"1", "true", "on", "yes"}
