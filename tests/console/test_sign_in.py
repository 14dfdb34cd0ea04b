"""Signing in with a login link, the session cookie, sessions ending, signing out."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, update

from mailmoat.api.ratelimit import RateLimiter
from mailmoat.app import create_web
from mailmoat.db.tables import ConsoleSession, LoginLink
from mailmoat.services.console_policy import ConsolePolicy
from mailmoat.services.container import Services
from tests.conftest import Tenant
from tests.console.conftest import (
    COOKIE,
    DOMAIN,
    Console,
    ConsoleFactory,
    World,
    audit_rows,
    link_rows,
    login_token,
    now,
    session_rows,
    sign_in,
    web_client,
)

pytestmark = pytest.mark.usefixtures("services")


def set_cookie_attributes(response: httpx.Response) -> tuple[str, set[str], dict[str, str]]:
    """The console cookie's value, its flags (lower-case) and its attributes."""
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}=")]
    assert len(headers) == 1, response.headers
    first, *rest = [part.strip() for part in headers[0].split(";")]
    flags = {p.lower() for p in rest if "=" not in p}
    attributes = {
        k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in rest if "=" in p)
    }
    return first.partition("=")[2], flags, attributes


async def test_opening_a_link_shows_the_domain_and_does_not_use_it(
    services: Services, tenant: Tenant, anonymous: httpx.AsyncClient, make_gateway: object
) -> None:
    token = await login_token(tenant.client)
    for _ in range(2):  # a mail scanner fetching the link first must not spend it
        response = await anonymous.get(f"/console/login/{token}")
        assert response.status_code == 200, response.text
        assert f"Sign in to {DOMAIN}" in response.text
        assert "set-cookie" not in response.headers
    [link] = await link_rows(services)
    assert link.used_at is None
    assert await session_rows(services) == []


async def test_posting_the_link_signs_in_with_a_strict_cookie(
    services: Services, tenant: Tenant, anonymous: httpx.AsyncClient, make_gateway: object
) -> None:
    token = await login_token(tenant.client)
    response = await anonymous.post(f"/console/login/{token}")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/messages"
    value, flags, attributes = set_cookie_attributes(response)
    assert value
    assert "httponly" in flags
    assert attributes["samesite"].lower() == "strict"
    assert attributes["path"] == "/console"
    assert "secure" not in flags  # plain http, and the policy does not ask for it
    [link] = await link_rows(services)
    assert link.used_at is not None
    [row] = await session_rows(services)
    assert row.domain_id == link.domain_id and row.login_link_id == link.id
    assert value not in row.token_hash and value.split(".")[0] not in row.token_hash
    page = await anonymous.get("/console/messages")
    assert page.status_code == 200
    assert f"Messages for {DOMAIN}" in page.text
    assert "signed in" in [e.action for e in await audit_rows(services)]


async def test_cookie_is_secure_over_https(
    web_app: FastAPI, tenant: Tenant, make_gateway: object
) -> None:
    token = await login_token(tenant.client)
    async with web_client(web_app, "https://testserver") as browser:
        response = await browser.post(f"/console/login/{token}")
    assert response.status_code == 303, response.text
    _, flags, _ = set_cookie_attributes(response)
    assert "secure" in flags


async def test_cookie_is_secure_when_the_policy_says_so(
    services: Services, tenant: Tenant, make_gateway: object
) -> None:
    """Behind a proxy that ends TLS the console sees http: the policy forces Secure."""
    secure = dataclasses.replace(services, console_policy=ConsolePolicy(secure_cookies=True))
    app = create_web(secure, RateLimiter(0))
    token = await login_token(tenant.client)
    async with web_client(app) as browser:
        response = await browser.post(f"/console/login/{token}")
    assert response.status_code == 303, response.text
    _, flags, _ = set_cookie_attributes(response)
    assert "secure" in flags


async def test_a_used_link_is_refused(
    services: Services, tenant: Tenant, web_app: FastAPI, make_gateway: object
) -> None:
    token = await login_token(tenant.client)
    first = await sign_in(web_app, token, DOMAIN)
    await first.http.aclose()
    async with web_client(web_app) as second:
        for method in ("GET", "POST"):
            response = await second.request(method, f"/console/login/{token}")
            assert response.status_code == 410, response.text
            assert "already been used" in response.text
            assert "Nobody was signed in" in response.text
            assert "set-cookie" not in response.headers
        assert (await second.get("/console/messages")).status_code == 401
    assert len(await session_rows(services)) == 1  # only the first sign-in's


async def test_an_expired_link_is_refused(
    services: Services, tenant: Tenant, anonymous: httpx.AsyncClient, make_gateway: object
) -> None:
    token = await login_token(tenant.client)
    async with services.db.write() as session:
        await session.execute(update(LoginLink).values(expires_at=now() - timedelta(seconds=1)))
    for method in ("GET", "POST"):
        response = await anonymous.request(method, f"/console/login/{token}")
        assert response.status_code == 410, response.text
        assert "has expired" in response.text
        assert "set-cookie" not in response.headers
    assert await session_rows(services) == []
    [link] = await link_rows(services)
    assert link.used_at is None


@pytest.mark.parametrize(
    "forged",
    [
        "ml_" + "A" * 43,
        "nonsense",
        "%2e%2e",
    ],
)
async def test_an_unknown_link_is_refused(
    services: Services,
    tenant: Tenant,
    anonymous: httpx.AsyncClient,
    make_gateway: object,
    forged: str,
) -> None:
    real = await login_token(tenant.client)
    for token in (forged, real[:-1] + ("B" if real[-1] != "B" else "C")):
        for method in ("GET", "POST"):
            response = await anonymous.request(method, f"/console/login/{token}")
            assert response.status_code == 404, response.text
            assert "not valid" in response.text
            assert "set-cookie" not in response.headers
    assert await session_rows(services) == []
    [link] = await link_rows(services)
    assert link.used_at is None  # the real link is still good
    assert (await anonymous.post(f"/console/login/{real}")).status_code == 303


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://testserver"},
    ],
)
async def test_a_login_post_from_another_site_is_refused(
    services: Services,
    tenant: Tenant,
    anonymous: httpx.AsyncClient,
    make_gateway: object,
    headers: dict[str, str],
) -> None:
    token = await login_token(tenant.client)
    response = await anonymous.post(f"/console/login/{token}", headers=headers)
    assert response.status_code == 403, response.text
    assert "set-cookie" not in response.headers
    assert await session_rows(services) == []
    [link] = await link_rows(services)
    assert link.used_at is None
    # The same post from the console's own origin works.
    same = await anonymous.post(f"/console/login/{token}", headers={"Origin": "http://testserver"})
    assert same.status_code == 303, same.text


# -- pages without a live session ----------------------------------------------------------

PAGES = ["/", "/messages", "/quarantine", "/lists", "/settings", "/activity"]


async def assert_signed_out(client: httpx.AsyncClient, world: World, message_id: str) -> None:
    for path in [*PAGES, f"/messages/{message_id}"]:
        response = await client.get(f"/console{path}")
        assert response.status_code == 401, (path, response.status_code)
        assert "Please sign in" in response.text
        assert "Secret subject" not in response.text
        assert "alice@sender.test" not in response.text
        assert "csrf" not in response.text


@pytest.fixture
async def message_id(world: World) -> str:
    return await world.send("Secret subject")


async def test_no_cookie(anonymous: httpx.AsyncClient, world: World, message_id: str) -> None:
    await assert_signed_out(anonymous, world, message_id)


async def test_a_forged_cookie(open_console: ConsoleFactory, world: World, message_id: str) -> None:
    console = await open_console()
    secret, _, signature = console.cookie.rpartition(".")
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    for forged in (f"{secret}.{flipped}", f"{secret}x.{signature}", secret, "x.y", ""):
        console.http.cookies.clear()
        console.http.cookies.set(COOKIE, forged)
        await assert_signed_out(console.http, world, message_id)
    console.http.cookies.clear()
    console.http.cookies.set(COOKIE, console.cookie)
    assert (await console.get(f"/messages/{message_id}")).status_code == 200


async def expire(services: Services, **values: object) -> None:
    async with services.db.write() as session:
        await session.execute(update(ConsoleSession).values(**values))


async def test_a_deleted_session(
    services: Services, open_console: ConsoleFactory, world: World, message_id: str
) -> None:
    console = await open_console()
    async with services.db.write() as session:
        await session.execute(delete(ConsoleSession))
    await assert_signed_out(console.http, world, message_id)


async def test_idle_timeout(
    services: Services, open_console: ConsoleFactory, world: World, message_id: str
) -> None:
    console = await open_console()
    idle = services.console_policy.session_idle
    await expire(services, last_seen_at=now() - idle + timedelta(minutes=2))
    assert (await console.get("/messages")).status_code == 200  # not idle long enough yet
    await expire(services, last_seen_at=now() - idle - timedelta(seconds=1))
    await assert_signed_out(console.http, world, message_id)


async def test_activity_keeps_a_session_alive(
    services: Services, open_console: ConsoleFactory, world: World
) -> None:
    console = await open_console()
    idle = services.console_policy.session_idle
    await expire(services, last_seen_at=now() - idle + timedelta(minutes=2))
    assert (await console.get("/messages")).status_code == 200
    [row] = await session_rows(services)
    assert now() - row.last_seen_at < timedelta(minutes=1)


async def test_absolute_expiry(
    services: Services, open_console: ConsoleFactory, world: World, message_id: str
) -> None:
    console = await open_console()
    [row] = await session_rows(services)
    assert row.expires_at - row.created_at == services.console_policy.session_max
    await expire(services, expires_at=now() - timedelta(seconds=1), last_seen_at=now())
    await assert_signed_out(console.http, world, message_id)


async def test_the_401_page_clears_the_cookie(anonymous: httpx.AsyncClient, world: World) -> None:
    anonymous.cookies.set(COOKIE, "x.y")
    response = await anonymous.get("/console/messages")
    assert response.status_code == 401
    headers = response.headers.get_list("set-cookie")
    assert any(h.startswith(f'{COOKIE}=""') or h.startswith(f"{COOKIE}=;") for h in headers)
    assert any("Path=/console" in h and "Max-Age=0" in h for h in headers), headers


async def test_sign_out_ends_the_session(
    services: Services, open_console: ConsoleFactory, world: World, message_id: str
) -> None:
    console = await open_console()
    old_cookie = console.cookie
    response = await console.post("/logout")
    assert response.status_code == 200, response.text
    assert "You are signed out" in response.text
    assert await session_rows(services) == []
    assert "signed out" in [e.action for e in await audit_rows(services)]
    # The browser dropped the cookie; someone who kept a copy cannot use it either.
    await assert_signed_out(console.http, world, message_id)
    console.http.cookies.set(COOKIE, old_cookie)
    await assert_signed_out(console.http, world, message_id)


async def test_two_sessions_are_independent(
    services: Services, open_console: ConsoleFactory, world: World
) -> None:
    first = await open_console()
    second = await open_console()
    assert first.cookie != second.cookie and first.csrf != second.csrf
    assert (await first.post("/logout")).status_code == 200
    assert (await second.get("/messages")).status_code == 200
    assert len(await session_rows(services)) == 1


# -- headers -----------------------------------------------------------------------------


async def test_security_headers_on_every_page(
    open_console: ConsoleFactory, anonymous: httpx.AsyncClient, world: World, message_id: str
) -> None:
    console = await open_console()
    token = await login_token(world.api)
    responses = [await console.get(p) for p in [*PAGES[1:], f"/messages/{message_id}"]]
    responses += [
        await anonymous.get(f"/console/login/{token}"),
        await anonymous.get("/console/login/unknown"),
        await anonymous.get("/console/messages"),
        await console.get("/messages/0123456789abcdef0123456789abcdef"),
        await console.post(f"/messages/{message_id}/release", csrf="wrong"),
    ]
    for response in responses:
        headers = response.headers
        where = (response.request.url.path, response.status_code)
        csp = headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp, where
        assert "frame-ancestors 'none'" in csp, where
        assert "script-src" not in csp, where  # no scripts at all
        assert headers.get("x-frame-options") == "DENY", where
        assert headers.get("referrer-policy") == "no-referrer", where
        assert headers.get("cache-control") == "no-store", where
        assert headers.get("x-content-type-options") == "nosniff", where
    spam = await world.send("Held", spam=True)
    redirect = await console.post(f"/messages/{spam}/release")
    assert redirect.status_code == 303
    assert redirect.headers.get("referrer-policy") == "no-referrer"


async def test_console_root_sends_a_signed_in_admin_to_the_log(
    open_console: ConsoleFactory, world: World
) -> None:
    console: Console = await open_console()
    response = await console.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/messages"


async def test_a_session_ends_with_its_domain(
    services: Services, open_console: ConsoleFactory, world: World, message_id: str
) -> None:
    console = await open_console()
    response = await world.api.delete(f"/domains/{DOMAIN}")
    assert response.status_code == 204, response.text
    await assert_signed_out(console.http, world, message_id)
    assert await session_rows(services) == []


async def test_posts_without_a_session_change_nothing(
    anonymous: httpx.AsyncClient, world: World
) -> None:
    held = await world.send("Held", spam=True)
    for path, form in [
        (f"/messages/{held}/release", {}),
        (f"/messages/{held}/delete", {}),
        ("/lists/add", {"list": "blocklist", "item": "x.example"}),
        ("/settings", {"abuse_policy": "block", "spam_header_name": "X", "spam_header_value": "Y"}),
        ("/logout", {}),
    ]:
        response = await anonymous.post(f"/console{path}", data={"csrf": "x", **form})
        assert response.status_code == 401, (path, response.text)
        assert "Please sign in" in response.text
    assert await world.state(held) == "quarantined"
    assert (await world.api.get(f"/domains/{DOMAIN}/lists/blocklist")).json() == []
    settings = (await world.api.get(f"/domains/{DOMAIN}")).json()["settings"]
    assert settings["abusePolicy"] == "quarantine"


async def test_reflected_input_is_escaped(open_console: ConsoleFactory, world: World) -> None:
    console = await open_console()
    evil = '<script>alert("x")</script>'
    for path, params in [
        ("/lists", {"user": evil}),
        ("/messages", {"since": evil}),
        ("/messages", {"state": evil}),
        ("/messages", {"recipient": evil}),
    ]:
        response = await console.get(path, params=params)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert "<script>" not in response.text, path
    page = await console.page("/messages", subject=evil, sender=evil)
    assert "<script>" not in page and "&lt;script&gt;" in page


async def test_a_cookie_with_non_ascii_characters(
    web_app: FastAPI, open_console: ConsoleFactory, world: World
) -> None:
    console = await open_console()
    secret = console.cookie.rpartition(".")[0]
    transport = httpx.ASGITransport(app=web_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
        for forged in (f"{secret}.\xe9", f"\xe9.{console.cookie.rpartition('.')[2]}"):
            cookie = f"{COOKIE}={forged}".encode("latin-1")
            response = await browser.get("/console/messages", headers={"Cookie": cookie})
            assert response.status_code == 401, response.status_code
            assert "Please sign in" in response.text


async def test_a_link_used_by_concurrent_posts_signs_in_once(
    services: Services, web_app: FastAPI, tenant: Tenant, make_gateway: object
) -> None:
    token = await login_token(tenant.client)
    clients = [web_client(web_app) for _ in range(5)]
    try:
        responses = await asyncio.gather(*(c.post(f"/console/login/{token}") for c in clients))
    finally:
        for client in clients:
            await client.aclose()
    assert sorted(r.status_code for r in responses) == [303, 410, 410, 410, 410]
    assert sum("set-cookie" in r.headers for r in responses) == 1
    assert len(await session_rows(services)) == 1


async def test_the_stylesheet_is_served(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/console/static/console.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
