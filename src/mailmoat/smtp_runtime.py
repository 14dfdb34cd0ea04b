"""Composition of the SMTP role: scanner, sender authentication, pipeline and server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mailmoat.config import ScannerFailure, Settings, parse_listen
from mailmoat.db.bayes_store import DatabaseTokenStore
from mailmoat.failures import OperatorError, listen_failure, reason
from mailmoat.pipeline.auth import SenderAuthenticator
from mailmoat.pipeline.dns import DnsResolver, parse_dns_servers
from mailmoat.pipeline.engine import Pipeline
from mailmoat.scanners.factory import build_scanner
from mailmoat.services.container import Services
from mailmoat.smtp.server import SmtpOptions, SmtpServer, tls_context
from mailmoat.webhook_runtime import webhook_delivery


def smtp_options(settings: Settings) -> SmtpOptions:
    return SmtpOptions(
        hostname=settings.smtp_hostname,
        max_message_size=settings.smtp_max_message_size,
        max_header_size=settings.smtp_max_header_size,
        max_hops=settings.smtp_max_hops,
        max_recipients=settings.smtp_max_recipients,
        max_errors=settings.smtp_max_errors,
        max_connections=settings.smtp_max_connections,
        max_connections_per_ip=settings.smtp_max_connections_per_ip,
        timeout=settings.smtp_timeout,
        tls_cert=settings.smtp_tls_cert,
        tls_key=settings.smtp_tls_key,
        proxy_protocol=settings.smtp_proxy_protocol,
        max_line_length=settings.smtp_max_line_length,
        memory_budget=settings.smtp_memory_budget,
        incoming_dir=settings.data_dir / "incoming",
    )


def check_smtp_tls(settings: Settings) -> None:
    """Load the STARTTLS certificate and key; ``OperatorError`` if they cannot be."""
    if settings.smtp_tls_cert is None or settings.smtp_tls_key is None:
        return
    try:
        tls_context(settings.smtp_tls_cert, settings.smtp_tls_key)
    except OSError as exc:  # ssl.SSLError included
        raise OperatorError(
            f"cannot load the STARTTLS certificate {settings.smtp_tls_cert} and key "
            f"{settings.smtp_tls_key}: {reason(exc)}; check MAILMOAT_SMTP_TLS_CERT and "
            "MAILMOAT_SMTP_TLS_KEY (PEM files mailmoat may read)"
        ) from exc


@asynccontextmanager
async def running_smtp(
    settings: Settings, services: Services, *, resolver: DnsResolver | None = None
) -> AsyncIterator[SmtpServer]:
    """Serve SMTP on ``settings.smtp_listen`` until the block ends.

    Certificates that cannot be loaded and an address that cannot be bound raise
    ``OperatorError``.
    """
    check_smtp_tls(settings)
    scanner = build_scanner(
        settings.scanner.value,
        store=DatabaseTokenStore(services.db),
        threshold=settings.spam_threshold,
        spamd_address=settings.spamd_address,
        rspamd_url=settings.rspamd_url,
        timeout=settings.scanner_timeout,
    )
    authenticator = None
    if settings.auth_checks:
        resolver = resolver or DnsResolver(
            parse_dns_servers(settings.dns_servers), settings.dns_timeout
        )
        authenticator = SenderAuthenticator(resolver, settings.smtp_hostname)
    pipeline = Pipeline(
        hostname=settings.smtp_hostname,
        scanner=scanner,
        authenticator=authenticator,
        accept_when_scanner_fails=settings.scanner_failure is ScannerFailure.ACCEPT,
    )
    webhooks = webhook_delivery(settings, services, resolver)
    services.intake.webhook_poster = webhooks
    server = SmtpServer(services.intake, pipeline, smtp_options(settings))
    host, port = parse_listen(settings.smtp_listen)
    try:
        try:
            reuse_port = settings.smtp_processes > 1 or settings.smtp_child
            await server.start(host, port, reuse_port=reuse_port)
        except OSError as exc:
            option = "--smtp-listen (MAILMOAT_SMTP_LISTEN)"
            raise listen_failure("SMTP", settings.smtp_listen, option, exc) from exc
        yield server
    finally:
        await server.stop()
        services.intake.webhook_poster = None
        await webhooks.client.close()
        if scanner is not None:
            await scanner.close()
