"""Composition root: builds the database, services and front ends, and serves them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack

import uvicorn
from fastapi import FastAPI
from rich.console import Console

from mailmoat.api.app import INBOUND_PREFIX, create_api
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.bootstrap import FirstStart, bootstrap, open_services
from mailmoat.config import Role, Settings, parse_listen
from mailmoat.failures import listen_failure, masked_url
from mailmoat.redact import mask_log_handlers
from mailmoat.services.container import Services
from mailmoat.smtp_processes import SmtpChildren, exit_with_parent

log = logging.getLogger("mailmoat")


def create_web(services: Services, limiter: RateLimiter) -> FastAPI:
    """The HTTP application: the APIs, with the Domain Console mounted at /console."""
    from mailmoat.console.app import MOUNT, create_console

    web = create_api(services, limiter)
    web.mount(MOUNT, create_console(services))
    return web


def _banner(settings: Settings, first: FirstStart | None, console: Console) -> None:
    api_host, api_port = parse_listen(settings.api_listen)
    base = settings.effective_public_url
    serves_api = settings.role in (Role.ALL, Role.API)
    console.print(f"[bold]mailmoat[/bold] role={settings.role.value}")
    console.print(f"  database : {masked_url(settings.effective_database_url)}", soft_wrap=True)
    if serves_api:
        console.print(f"  API      : http://{api_host}:{api_port}{INBOUND_PREFIX}/")
        console.print(f"  API docs : {base}{INBOUND_PREFIX}/docs")
        console.print(f"  console  : {base}/console/ (entered through login links)")
        console.print(
            f"  webhooks : {base}/api/v0.1/<account>/ (addresses "
            f"<token>@{settings.effective_webhook_domain})"
        )
    if settings.role in (Role.ALL, Role.SMTP):
        console.print(
            f"  SMTP     : {settings.smtp_listen} (scanner {settings.scanner.value}, "
            f"max message {settings.smtp_max_message_size} bytes, "
            f"{settings.smtp_processes} process{'es' if settings.smtp_processes > 1 else ''})"
        )
        if serves_api:
            console.print(f"  metrics  : http://{api_host}:{api_port}/metrics")
    if settings.role in (Role.ALL, Role.WORKER):
        console.print(
            f"  delivery : {settings.delivery_concurrency} at once, STARTTLS "
            f"{settings.delivery_tls.value}, DSNs "
            + ("off" if not settings.dsn else f"via {settings.dsn_relay or 'MX'}")
        )
    if first is not None:
        console.print(
            f"\nFirst start: created customer [bold]{first.customer}[/bold] with this API key "
            "(shown once, keep it):"
        )
        console.print(f"  [bold green]{first.api_key}[/bold green]\n", soft_wrap=True)
    console.file.flush()  # operators tail this through pipes and journals


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (uvicorn[standard] brings it), else asyncio's.

    uvicorn picks uvloop only when it creates the loop itself; ``serve`` runs it
    inside a loop of its own, so the choice is made here.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class _ApiServer(uvicorn.Server):
    """uvicorn that stops on SIGINT/SIGTERM and returns, instead of re-raising the
    signal at the end (which would kill the process before SMTP, the spool writer
    and the extra SMTP processes are shut down)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def _wait_for_signal(*, with_parent: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watch = asyncio.create_task(exit_with_parent(stop)) if with_parent else None
    await stop.wait()
    if watch is not None:
        watch.cancel()


def _bound(service: str, address: str, setting: str, *, reuse_port: bool = False) -> socket.socket:
    """A socket bound to ``address``; one that cannot be raises ``OperatorError``.

    Listening addresses are bound before the database is opened and anything starts,
    so that an address in use is told at once, in one line.
    """
    host, port = parse_listen(address)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise listen_failure(service, address, setting, exc) from exc
    return sock


async def serve(settings: Settings, console: Console | None = None) -> None:
    console = console or Console()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    mask_log_handlers()
    if settings.role in (Role.ALL, Role.SMTP) and not settings.smtp_child:
        from mailmoat.smtp_runtime import check_smtp_tls

        check_smtp_tls(settings)
        # Only a check: running_smtp binds the SMTP address itself, once the database is open.
        reuse_port = settings.smtp_processes > 1
        smtp_option = "--smtp-listen (MAILMOAT_SMTP_LISTEN)"
        _bound("SMTP", settings.smtp_listen, smtp_option, reuse_port=reuse_port).close()
    api_socket = None
    if settings.role in (Role.ALL, Role.API) and not settings.smtp_child:
        api_option = "--api-listen (MAILMOAT_API_LISTEN)"
        api_socket = _bound("the API", settings.api_listen, api_option)
    try:
        await _serve(settings, console, api_socket)
    finally:
        if api_socket is not None:
            api_socket.close()


async def _serve(settings: Settings, console: Console, api_socket: socket.socket | None) -> None:
    async with open_services(settings) as services, AsyncExitStack() as stack:
        first = await bootstrap(services)
        # Delivery first, SMTP second: on the way out SMTP stops first, so the last
        # mail accepted still finds this process's worker there to take it.
        if settings.role in (Role.ALL, Role.WORKER):
            from mailmoat.delivery_runtime import running_delivery

            await stack.enter_async_context(running_delivery(settings, services))
            if not settings.smtp_child:
                from mailmoat.housekeeping import running_housekeeping

                await stack.enter_async_context(running_housekeeping(services))
        if settings.role in (Role.ALL, Role.SMTP):
            from mailmoat.smtp_runtime import running_smtp

            await stack.enter_async_context(running_smtp(settings, services))
            if settings.smtp_processes > 1 and not settings.smtp_child:
                children = SmtpChildren(settings, settings.smtp_processes - 1)
                await children.start()
                stack.push_async_callback(children.stop)
        if settings.smtp_child:
            await _wait_for_signal(with_parent=True)
            return
        _banner(settings, first, console)
        if api_socket is not None:
            host, port = parse_listen(settings.api_listen)
            limiter = RateLimiter(settings.rate_limit, settings.redis_url)
            config = uvicorn.Config(
                create_web(services, limiter),
                host=host,
                port=port,
                log_level=settings.log_level.lower(),
                access_log=False,
                server_header=False,
            )
            mask_log_handlers()  # uvicorn.Config has just installed handlers of its own
            await _ApiServer(config).serve(sockets=[api_socket])
        else:
            await _wait_for_signal()
