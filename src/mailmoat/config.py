"""Settings from flags and MAILMOAT_* environment variables."""

from __future__ import annotations

import enum
import socket
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailmoat.db.contents import DEFAULT_INLINE_MAX
from mailmoat.db.database import normalize_database_url, sqlite_url_for
from mailmoat.delivery.relay import TlsMode
from mailmoat.domain.addresses import AddressPolicy, parse_ip
from mailmoat.domain.retry import RetrySchedule
from mailmoat.services.console_policy import ConsolePolicy
from mailmoat.services.sending_domains import SendingPolicy


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


class ScannerKind(enum.StrEnum):
    BUILTIN = "builtin"
    SPAMD = "spamd"
    RSPAMD = "rspamd"
    NONE = "none"


class ScannerFailure(enum.StrEnum):
    """What to do with mail when the scanner cannot answer."""

    TEMPFAIL = "tempfail"
    ACCEPT = "accept"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILMOAT_", extra="ignore")

    data_dir: Path = Field(Path("./var"), description="where the SQLite database and spool live")
    database_url: str | None = Field(None, description="postgresql://… or sqlite:///…")
    inline_content_max: int = Field(
        DEFAULT_INLINE_MAX,
        ge=0,
        description="messages up to this many bytes are kept in the database, in the "
        "transaction of their record; larger ones in spool files; 0 = always files",
    )
    redis_url: str | None = Field(None, description="redis://… for shared rate limits")
    api_listen: str = "127.0.0.1:8080"
    smtp_listen: str = "127.0.0.1:2525"
    role: Role = Role.ALL
    secret_key: str | None = Field(None, description="HMAC key for API keys and login links")
    rate_limit: int = Field(100, ge=0, description="API requests per second per customer; 0=off")
    public_url: str | None = Field(None, description="base URL of login links")
    login_link_ttl: int = Field(900, ge=30, description="login-link lifetime in seconds")
    console_session_idle: int = Field(
        1800, ge=60, description="seconds of inactivity that end a Domain Console session"
    )
    console_session_max: int = Field(
        43200, ge=60, description="longest a Domain Console session lasts, in seconds"
    )
    quarantine_retention_days: float = Field(
        7.0, gt=0, description="days quarantined mail is kept before it is deleted"
    )
    key_cache_seconds: float = Field(
        5.0, ge=0, le=300, description="how long a node trusts an API key it has checked"
    )
    log_level: str = "info"
    health_min_free_space: int = Field(
        100 * 1024 * 1024,
        ge=0,
        description="bytes that must be free in the data directory (spool, SQLite) for "
        "/healthz to answer 200",
    )
    health_check_interval: float = Field(
        5.0, ge=0, le=300, description="seconds /healthz reuses the result of its checks"
    )

    # SMTP intake
    smtp_hostname: str = Field(
        default_factory=socket.gethostname,
        description="name in the SMTP greeting, Received and Authentication-Results headers",
    )
    smtp_max_message_size: int = Field(
        25 * 1024 * 1024, ge=1024, description="SIZE limit in bytes; larger mail gets 552"
    )
    smtp_max_line_length: int = Field(
        65536, ge=998, le=1024 * 1024, description="bytes per line of a message; longer: 500"
    )
    smtp_memory_budget: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="bytes of messages being processed that one SMTP process holds at once",
    )
    smtp_max_header_size: int = Field(
        1024 * 1024, ge=1024, description="header section limit in bytes; larger gets 552 5.3.4"
    )
    smtp_max_hops: int = Field(
        100, ge=1, description="Received fields a message may have; more gets 554 5.4.6 (a loop)"
    )
    smtp_max_recipients: int = Field(100, ge=1, le=10000)
    smtp_max_errors: int = Field(
        20, ge=1, description="error replies a session may get before it is closed with 421"
    )
    smtp_max_connections: int = Field(1000, ge=1, description="concurrent SMTP sessions")
    smtp_max_connections_per_ip: int = Field(50, ge=1, description="per client IP")
    smtp_timeout: float = Field(300.0, ge=5, description="seconds a session may stay idle")
    smtp_tls_cert: Path | None = Field(None, description="PEM certificate chain for STARTTLS")
    smtp_tls_key: Path | None = Field(None, description="PEM private key for STARTTLS")
    smtp_proxy_protocol: bool = Field(False, description="expect a HAProxy PROXY header")
    smtp_processes: int = Field(
        1, ge=1, le=64, description="processes accepting SMTP on the one port (SO_REUSEPORT)"
    )
    smtp_child: bool = Field(
        False, description="set by mailmoat in the extra SMTP processes it starts itself"
    )

    # Filtering
    scanner: ScannerKind = ScannerKind.BUILTIN
    spam_threshold: float = Field(5.0, description="built-in scanner: score at which mail is spam")
    spamd_address: str = Field("127.0.0.1:783", description="SpamAssassin spamd HOST:PORT")
    rspamd_url: str = Field("http://127.0.0.1:11333", description="rspamd normal worker")
    scanner_timeout: float = Field(20.0, gt=0)
    scanner_failure: ScannerFailure = ScannerFailure.TEMPFAIL
    auth_checks: bool = Field(True, description="verify SPF, DKIM and DMARC")
    dns_servers: str = Field(
        "", description="comma-separated HOST[:PORT] resolvers; empty = the system's"
    )
    dns_timeout: float = Field(3.0, gt=0, description="seconds per DNS query")

    # Delivery
    delivery_concurrency: int = Field(
        100, ge=1, le=10000, description="messages a worker process delivers at once"
    )
    delivery_per_destination: int = Field(
        20, ge=1, le=1000, description="connections to one downstream server at once"
    )
    delivery_tls: TlsMode = Field(
        TlsMode.OPPORTUNISTIC,
        description="STARTTLS to downstream servers: none, "
        "opportunistic, required (not verified) or verify (certificate and name checked)",
    )
    delivery_connect_timeout: float = Field(30.0, gt=0, description="seconds to connect")
    delivery_timeout: float = Field(120.0, gt=0, description="seconds per SMTP command")
    delivery_retry_first: float = Field(
        300.0, gt=0, description="seconds before the first retry; doubles after each"
    )
    delivery_retry_max: float = Field(3600.0, gt=0, description="longest wait between retries")
    delivery_lifetime: float = Field(
        5 * 86400.0, gt=0, description="seconds after arrival at which mailmoat gives up"
    )
    delivery_lease: float = Field(
        300.0, ge=1, description="seconds a claimed message stays with a worker that died"
    )
    delivery_poll_interval: float = Field(
        1.0, gt=0, le=60, description="seconds between looks at the queue when idle"
    )
    webhook_address_domain: str = Field(
        "", description="domain of generated webhook addresses; default: the SMTP host name"
    )
    webhook_timeout: float = Field(30.0, gt=0, description="seconds a webhook has to answer")
    webhook_allow_private: bool = Field(
        False, description="allow webhook targets on private, loopback and link-local addresses"
    )
    downstream_allow_private: bool = Field(
        False,
        description="allow downstream servers and DSN recipients' mail servers on private, "
        "loopback and link-local addresses (mailmoat's own SMTP listener stays refused)",
    )
    dsn: bool = Field(True, description="send a bounce (DSN) to the sender of undeliverable mail")
    dsn_relay: str = Field(
        "", description="HOST:PORT to send DSNs through; empty = the sender domain's MX"
    )
    dsn_include_body: bool = Field(False, description="DSNs carry the whole original message")

    # Sending domains: the DNS records customers publish for the domains they send from
    sending_spf_mechanism: str = Field(
        "",
        description="SPF mechanism a sending domain's record must contain, e.g. "
        "include:_spf.example.net or ip4:192.0.2.0/24; default: a:<SMTP host name>",
    )
    sending_return_path_prefix: str = Field(
        "mm-bounces", description="bounces for a sending domain go to <prefix>.<domain>"
    )
    sending_return_path_target: str = Field(
        "", description="host the <prefix>.<domain> CNAMEs point at; default: the SMTP host name"
    )

    @field_validator("api_listen", "smtp_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value:
            normalize_database_url(value)  # its error names the URL without its password
        return value

    @field_validator("dsn_relay")
    @classmethod
    def _relay(cls, value: str) -> str:
        if value:
            parse_listen(value)
        return value

    @model_validator(mode="after")
    def _retry_bounds(self) -> Settings:
        if self.delivery_retry_max < self.delivery_retry_first:
            raise ValueError("delivery_retry_max must be at least delivery_retry_first")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.smtp_tls_cert is None) != (self.smtp_tls_key is None):
            raise ValueError(
                "set both MAILMOAT_SMTP_TLS_CERT and MAILMOAT_SMTP_TLS_KEY, or neither"
            )
        return self

    @model_validator(mode="after")
    def _sending_records(self) -> Settings:
        # Values the operator set must be right; defaults derived from the machine's
        # name (which may not be a valid host name) must not stop mailmoat starting.
        SendingPolicy(
            spf_mechanism=self.sending_spf_mechanism.strip() or "a:sending.invalid",
            return_path_prefix=self.sending_return_path_prefix.strip().lower(),
            return_path_target=self.sending_return_path_target.strip() or "sending.invalid",
        )
        return self

    @property
    def sending_policy(self) -> SendingPolicy:
        host = self.smtp_hostname.strip().rstrip(".").lower()
        prefix = self.sending_return_path_prefix.strip().lower()
        try:
            return SendingPolicy(
                spf_mechanism=self.sending_spf_mechanism.strip() or f"a:{host}",
                return_path_prefix=prefix,
                return_path_target=self.sending_return_path_target.strip() or host,
            )
        except ValueError:  # the host name is not usable in DNS records
            return SendingPolicy(
                spf_mechanism=self.sending_spf_mechanism.strip() or "a:sending.invalid",
                return_path_prefix=prefix,
                return_path_target=self.sending_return_path_target.strip() or "sending.invalid",
            )

    @property
    def address_policy(self) -> AddressPolicy:
        """The address policy of SMTP targets: downstream servers and DSN recipients' MX."""
        names: set[str] = set()
        addresses: set[str] = set()
        for host in (self.smtp_hostname, urlsplit(self.public_url or "").hostname or ""):
            host = host.strip().rstrip(".").lower()
            ip = parse_ip(host)
            if ip is not None:
                addresses.add(str(ip))
            elif host:
                names.add(host)
        for listen in (self.smtp_listen, self.api_listen):
            ip = parse_ip(parse_listen(listen)[0])
            if ip is not None and not ip.is_unspecified:
                addresses.add(str(ip))
        smtp_host, smtp_port = parse_listen(self.smtp_listen)
        smtp_ip = parse_ip(smtp_host)
        # A listener given by name: any address of this machine may be it.
        listener = (str(smtp_ip) if smtp_ip is not None else "::", smtp_port)
        return AddressPolicy(
            allow_private=self.downstream_allow_private,
            own_names=frozenset(names),
            own_addresses=frozenset(addresses),
            smtp_listeners=frozenset([listener]),
        )

    @property
    def webhook_address_policy(self) -> AddressPolicy:
        """The same policy for webhook targets, with their own allowance."""
        return self.address_policy.allowing(self.webhook_allow_private)

    @property
    def retry_schedule(self) -> RetrySchedule:
        return RetrySchedule(
            first=timedelta(seconds=self.delivery_retry_first),
            longest=timedelta(seconds=self.delivery_retry_max),
            lifetime=timedelta(seconds=self.delivery_lifetime),
        )

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

    def child_environment(self, **overrides: object) -> dict[str, str]:
        """These settings as MAILMOAT_* variables, for a child process to read back."""
        values = self.model_dump() | overrides
        environment = {}
        for name, value in values.items():
            if value is None:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, enum.Enum):
                text = str(value.value)
            else:
                text = str(value)
            environment[f"MAILMOAT_{name.upper()}"] = text
        return environment

    @property
    def metrics_dir(self) -> Path:
        """Where processes of one node share their metrics when there are several."""
        return self.data_dir / "metrics"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def effective_webhook_domain(self) -> str:
        return (self.webhook_address_domain or self.smtp_hostname).strip().rstrip(".").lower()

    @property
    def login_link_lifetime(self) -> timedelta:
        return timedelta(seconds=self.login_link_ttl)

    @property
    def console_policy(self) -> ConsolePolicy:
        return ConsolePolicy(
            session_idle=timedelta(seconds=self.console_session_idle),
            session_max=timedelta(seconds=self.console_session_max),
            quarantine_retention=timedelta(days=self.quarantine_retention_days),
            secure_cookies=self.effective_public_url.startswith("https://"),
        )
