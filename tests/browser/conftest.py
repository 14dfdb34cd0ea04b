"""Browser fixtures for the Domain Console: a real HTTP server, Chromium, mail.

The console is served by uvicorn on a loopback port, in the test's event loop and
over the test's ``services``; Debian's Chromium (never a downloaded browser) is
driven by Playwright. Mail comes in through the SMTP gateway of tests/smtp and is
delivered by the worker of tests/delivery to a ``Downstream`` sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    async_playwright,
    expect,
)

from mailmoat.api.ratelimit import RateLimiter
from mailmoat.app import create_web
from mailmoat.services.container import Services
from tests.conftest import PUBLIC_URL, Tenant
from tests.delivery import conftest as delivery_fixtures
from tests.delivery.conftest import Mailroom, MailroomFactory, mx
from tests.downstream import Downstream
from tests.served import free_port
from tests.smtp.conftest import DOMAIN

# The delivery fixtures (gateway + worker + sink), usable here as in tests/delivery.
make_gateway = delivery_fixtures.make_gateway
make_mailroom = delivery_fixtures.make_mailroom
downstream = delivery_fixtures.downstream
bounces = delivery_fixtures.bounces

CHROMIUM = Path("/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 10_000  # for every browser wait: generous, and only reached on failure

expect.set_options(timeout=TIMEOUT_MS)


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl-C still stops pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class ConsoleServer:
    base_url: str  # http://127.0.0.1:<port>

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@pytest.fixture
async def console_server(services: Services) -> AsyncIterator[ConsoleServer]:
    """The API with the console mounted at /console, served for real on loopback."""
    port = free_port()
    config = uvicorn.Config(
        create_web(services, RateLimiter(0)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped it
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.02)
        yield ConsoleServer(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium: required on CI, else its absence skips the browser tests."""
    if not CHROMIUM.is_file():
        reason = f"browser tests need Chromium at {CHROMIUM} (Debian package 'chromium')"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    """Chromium launched once for the run; never a browser Playwright downloads."""
    args = ["--disable-dev-shm-usage"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to sandbox as root
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), args=args)
        yield launched
        await launched.close()


@dataclass
class Browsing:
    """Browser contexts (separate cookie jars: separate people) on the console server."""

    browser: Browser
    server: ConsoleServer
    tenant: Tenant
    contexts: list[BrowserContext] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what a user would see break

    async def context(self, **options: Any) -> BrowserContext:
        settings: dict[str, Any] = {"viewport": DESKTOP, "base_url": self.server.base_url}
        context = await self.browser.new_context(**(settings | options))
        context.set_default_timeout(TIMEOUT_MS)
        context.on("page", self._watch)
        self.contexts.append(context)
        return context

    async def page(self, **options: Any) -> Page:
        """A page in a new context of its own."""
        return await (await self.context(**options)).new_page()

    def _watch(self, page: Page) -> None:
        def console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                self.problems.append(f"{page.url}: {message.text}")

        def response(response: Response) -> None:
            kind = response.request.resource_type
            if kind in ("stylesheet", "image", "font", "script") and response.status >= 400:
                self.problems.append(f"{response.url}: {kind} answered {response.status}")

        page.on("console", console)
        page.on("response", response)
        page.on("requestfailed", lambda r: self.problems.append(f"{r.url}: {r.failure}"))

    async def login_link(self, domain: str = DOMAIN, tenant: Tenant | None = None) -> str:
        """A fresh login link from the API, pointing at the console server."""
        client = (tenant or self.tenant).client
        response = await client.get(f"/domains/{domain}/login-link")
        assert response.status_code == 200, response.text
        link: str = response.json()["loginLink"]
        assert link.startswith(f"{PUBLIC_URL}/console/login/"), link
        return self.server.base_url + link.removeprefix(PUBLIC_URL)

    async def sign_in(self, page: Page, link: str, domain: str = DOMAIN) -> None:
        """Open a login link and continue, as a domain admin would."""
        opened = await page.goto(link)
        assert opened is not None and opened.status == 200
        await expect(page.get_by_role("heading", name=f"Sign in to {domain}")).to_be_visible()
        async with page.expect_response(lambda r: r.request.method == "POST") as posting:
            await page.get_by_role("button", name="Continue to the console").click()
        posted = await posting.value
        if posted.status != 303:  # say what the admin saw instead of waiting for the log
            shown = re.search(r"<h1>(.*?)</h1>", await posted.text(), re.S)
            raise AssertionError(
                f"signing in answered {posted.status}, showing "
                f"{shown.group(1).strip() if shown else 'no heading'!r} "
                f"(request sent Origin {await posted.request.header_value('origin')!r}, "
                f"Sec-Fetch-Site {await posted.request.header_value('sec-fetch-site')!r})"
            )
        await expect(page).to_have_url(self.server.url("/console/messages"))
        await expect(page.get_by_role("heading", name=f"Messages for {domain}")).to_be_visible()

    async def signed_in_page(self, domain: str = DOMAIN, **options: Any) -> Page:
        page = await self.page(**options)
        await self.sign_in(page, await self.login_link(domain), domain)
        return page

    def assert_no_problems(self) -> None:
        assert self.problems == [], "\n".join(self.problems)


@pytest.fixture
async def browsing(
    browser: Browser, console_server: ConsoleServer, tenant: Tenant
) -> AsyncIterator[Browsing]:
    found = Browsing(browser, console_server, tenant)
    yield found
    for context in found.contexts:
        await context.close()


@pytest.fixture
async def mailroom(make_mailroom: MailroomFactory, downstream: Downstream) -> Mailroom:
    """Gateway and delivery worker for example.com, its mail delivered to ``downstream``."""
    room = await make_mailroom()
    await room.route(mx(downstream.port))
    return room
