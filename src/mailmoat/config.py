"""Settings from flags and MAILMOAT_* environment variables."""

from __future__ import annotations

import enum
from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailmoat.db.database import sqlite_url_for


class Role(enum.StrEnum):
    ALL = "all"
    API = "api"
    SMTP = "smtp"
    WORKER = "worker"


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 hosts in brackets) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen address {value!r} must look like HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILMOAT_", extra="ignore")

    data_dir: Path = Field(Path("./var"), description="where the SQLite database and spool live")
    database_url: str | None = Field(None, description="postgresql://… or sqlite:///…")
    redis_url: str | None = Field(None, description="redis://… for shared rate limits")
    api_listen: str = "127.0.0.1:8080"
    smtp_listen: str = "127.0.0.1:2525"
    role: Role = Role.ALL
    secret_key: str | None = Field(None, description="HMAC key for API keys and login links")
    rate_limit: int = Field(100, ge=0, description="API requests per second per customer; 0=off")
    public_url: str | None = Field(None, description="base URL of login links")
    login_link_ttl: int = Field(900, ge=30, description="login-link lifetime in seconds")
    key_cache_seconds: float = Field(
        5.0, ge=0, le=300, description="how long a node trusts an API key it has checked"
    )
    log_level: str = "info"

    @field_validator("api_listen", "smtp_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or sqlite_url_for(self.data_dir)

    @property
    def effective_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = parse_listen(self.api_listen)
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def login_link_lifetime(self) -> timedelta:
        return timedelta(seconds=self.login_link_ttl)
