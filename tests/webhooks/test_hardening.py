"""Posts go where mailmoat checked, within one deadline; patterns and names that
would let one customer hurt the others are refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import aiosmtplib
import pytest
from sqlalchemy import update

from mailmoat.config import Settings
from mailmoat.db.tables import CustomDomain
from mailmoat.services.container import Services
from mailmoat.webhook_runtime import webhook_delivery
from tests.api.helpers import provision_names
from tests.conftest import TenantFactory
from tests.dnsserver import LocalDnsServer
from tests.webhooks.conftest import Account, AccountFactory, Answer, Hooks, Listener, simple_message


@pytest.fixture
def dns() -> Iterator[LocalDnsServer]:
    with LocalDnsServer() as server:
        yield server


@pytest.fixture
async def resolving_poster(
    services: Services, dns: LocalDnsServer
) -> AsyncIterator[Callable[[bool], None]]:
    """``resolving_poster(allow_private)``: the sync poster, resolving through the
    test's DNS server only."""
    previous = services.intake.webhook_poster
    made = []

    def use(allow_private: bool) -> None:
        settings = Settings(
            webhook_allow_private=allow_private,
            webhook_timeout=3.0,
            dns_servers=f"127.0.0.1:{dns.port}",
        )
        poster = webhook_delivery(settings, services)
        made.append(poster)
        services.intake.webhook_poster = poster

    yield use
    services.intake.webhook_poster = previous
    for poster in made:
        await poster.client.close()


async def test_a_name_is_resolved_by_mailmoat_and_kept_in_the_host_header(
    hooks: Hooks, resolving_poster: Callable[[bool], None], dns: LocalDnsServer
) -> None:
    """hook.example.test exists only in mailmoat's resolver: the post reaches the
    address that resolver gave, with the name in Host."""
    dns.zone["hook.example.test"] = {"A": ["127.0.0.1"]}
    resolving_poster(True)
    address = await hooks.account.create_address(
        f"http://hook.example.test:{hooks.listener.port}/named"
    )
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 250, transcript
    [hit] = hooks.listener.hits
    assert hit.header("host") == f"hook.example.test:{hooks.listener.port}"
    assert hit.path == "/named"
    assert ("hook.example.test", "A") in dns.queries


async def test_a_name_resolving_to_loopback_is_refused_at_post_time(
    hooks: Hooks, resolving_poster: Callable[[bool], None], dns: LocalDnsServer
) -> None:
    dns.zone["inside.example.test"] = {"A": ["127.0.0.1"]}
    resolving_poster(False)
    address = await hooks.account.create_address(
        f"http://inside.example.test:{hooks.listener.port}/x"
    )
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 450, transcript
    assert "private or loopback" in transcript.data_text
    # The same policy, and the same words, as for downstream mail servers.
    assert "refused by address policy: 127.0.0.1 is a loopback address" in transcript.data_text
    assert hooks.listener.hits == []
    assert hooks.listener.hits == []


async def test_a_redirect_is_resolved_again(
    hooks: Hooks, resolving_poster: Callable[[bool], None]
) -> None:
    """Every hop is resolved by mailmoat: a redirect to a name its resolver does not
    know is not followed anywhere."""
    resolving_poster(True)
    hooks.listener.answer(
        Answer(307, b"", None, headers=(("Location", "http://nowhere.example.test/"),))
    )
    address = await hooks.address()
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 450, transcript
    assert len(hooks.listener.hits) == 1
    [status] = await hooks.account.statuses()
    assert "nowhere.example.test" in status["attempts"][-1]["target"]


async def test_the_timeout_covers_the_whole_post(hooks: Hooks, make_poster: object) -> None:
    """An answer trickling in (headers late) still ends at the deadline: 450."""
    make_poster(timeout=0.5)  # type: ignore[operator]
    hooks.listener.answer(Answer(200, b"ok", delay=3.0))
    address = await hooks.address()
    started = time.monotonic()
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 450, transcript
    assert time.monotonic() - started < 2.5
    assert "did not answer within 0.5" in transcript.data_text


async def test_a_huge_error_answer_is_not_read_whole(hooks: Hooks) -> None:
    body = b"x" * (3 * 1024 * 1024)
    hooks.listener.answer(Answer(500, body, "text/plain"))
    address = await hooks.address()
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 450, transcript
    [status] = await hooks.account.statuses()
    assert len(status["attempts"][0]["response"]) == 2048


async def test_a_non_ascii_error_text_becomes_ascii_in_the_reply(hooks: Hooks) -> None:
    hooks.listener.answer(Answer(403, "Kunde unbekannt: Müller".encode(), "text/plain"))
    address = await hooks.address()
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 554, transcript
    assert transcript.data_text.isascii()
    assert "Kunde unbekannt: M ller" in transcript.data_text


# -- what the management API refuses ----------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", "invalid escape"),  # back-references need backtracking
        (r"(?!admin)[a-z]+", "invalid perl operator"),  # so does lookaround
        (r"[a-z", "missing ]"),
        (r"\pL{1000}", "too large"),  # beyond the memory a pattern may use
    ],
)
@pytest.mark.usefixtures("private_targets")
async def test_patterns_that_cannot_match_in_linear_time_are_refused(
    account: Account, listener: Listener, pattern: str, why: str
) -> None:
    address = await account.create_address(listener.url())
    refused = await account.add_domain("patterns.example", address["id"], pattern, expect=400)
    assert set(refused) == {"code", "message", "errors"}, refused
    assert "regular expression" in refused["message"] and why in refused["message"], refused


async def _noop_worst_gap(port: int, stop: asyncio.Event) -> float:
    """The longest wait, in seconds, for NOOP on a session of its own (asked every
    20 ms) until ``stop`` is set: how long the gateway made other clients wait."""
    worst = 0.0
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60) as smtp:
        while not stop.is_set():
            began = time.monotonic()
            await asyncio.sleep(0.02)  # a stall during the pause counts too
            await smtp.noop()
            worst = max(worst, time.monotonic() - began)
    return worst


@pytest.mark.parametrize("pattern", ["(?:a?){26}a{26}", "(a?){30}a{30}", "(a+)+$", "(x|xx)+y"])
async def test_a_pattern_of_any_shape_matches_without_stalling_the_gateway(
    hooks: Hooks, pattern: str
) -> None:
    """Shapes a backtracking engine takes exponential time on are accepted and match
    in linear time: long recipients at such a domain leave the gateway answering."""
    address = await hooks.address()
    await hooks.account.add_domain("stall.example", address["id"], pattern)
    stop = asyncio.Event()
    prober = asyncio.create_task(_noop_worst_gap(hooks.gateway.port, stop))
    codes = {}
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=hooks.gateway.port, timeout=60) as smtp:
        await smtp.ehlo()
        await smtp.mail("alice@sender.test")
        await asyncio.sleep(0.1)  # the prober is talking
        for length in (40, 41, 59, 64, 200, 1000, 5000):
            try:
                codes[length] = (await smtp.rcpt("a" * length + "!@stall.example")).code
            except aiosmtplib.SMTPResponseException as exc:
                codes[length] = exc.code
    stop.set()
    worst = await prober
    assert worst < 0.2 + 0.02, f"the gateway stalled for {worst:.2f} s"
    assert all(500 <= code < 600 for code in codes.values()), codes


async def test_matching_results_are_those_of_the_pattern(hooks: Hooks) -> None:
    """A pattern that needs no backtracking trick keeps its meaning, in any case."""
    address = await hooks.address()
    await hooks.account.add_domain("shape.example", address["id"], "(?:a?){26}a{26}")
    transcript = await hooks.send(
        simple_message(),
        "a" * 40 + "@shape.example",
        "A" * 26 + "@shape.example",
        "a" * 25 + "@shape.example",
        "a" * 53 + "@shape.example",
    )
    assert [code for code, _ in transcript.rcpt] == [250, 250, 550, 550], transcript


async def test_a_stored_pattern_that_can_no_longer_be_matched_defers_its_mail(
    hooks: Hooks, services: Services
) -> None:
    """A pattern kept from before patterns were checked by RE2 (here with a lookahead)
    does not bounce mail and does not accept it unfiltered: 451, try again later."""
    address = await hooks.address()
    await hooks.account.add_domain("old.example", address["id"], "[a-z]+")
    async with services.db.write() as session:
        await session.execute(
            update(CustomDomain)
            .where(CustomDomain.name_ascii == "old.example")
            .values(pattern="(?!admin)[a-z]+")
        )
    transcript = await hooks.send(simple_message(), "sales@old.example")
    [(code, _)] = transcript.rcpt
    assert code == 451, transcript
    assert hooks.listener.hits == []


async def test_an_accepted_pattern_still_routes(hooks: Hooks) -> None:
    address = await hooks.address()
    await hooks.account.add_domain("quick.example", address["id"], r"^[a-z]+(\.[a-z]+)?$")
    refused = await hooks.send(simple_message(), "a" * 60 + "!@quick.example")
    assert [code for code, _ in refused.rcpt] == [550], refused
    accepted = await hooks.send(simple_message(), "first.last@quick.example")
    assert accepted.data_code == 250, accepted


@pytest.mark.parametrize("name", ["co.uk", "*.co.uk", "com", "*.com"])
@pytest.mark.usefixtures("private_targets")
async def test_public_suffixes_are_refused(account: Account, listener: Listener, name: str) -> None:
    address = await account.create_address(listener.url())
    refused = await account.add_domain(name, address["id"], expect=400)
    # A single label is not even a domain name; co.uk is one, but nobody's.
    assert "public suffix" in refused["message"] or "two labels" in refused["message"]


@pytest.mark.parametrize("name", ["mail.victim.example", "*.victim.example", "a.b.victim.example"])
@pytest.mark.usefixtures("private_targets")
async def test_names_under_another_customers_domain_are_refused(
    account: Account,
    listener: Listener,
    make_tenant: TenantFactory,
    make_account: AccountFactory,
    name: str,
) -> None:
    victim = await make_tenant("victim")
    await provision_names(victim.client, victim.subscription, "victim.example")
    address = await account.create_address(listener.url())
    refused = await account.add_domain(name, address["id"], expect=409)
    assert "another customer" in refused["message"]
    # Under one's own domain it is fine.
    mine = await make_account(victim)
    own = await mine.create_address(listener.url())
    await mine.add_domain(name, own["id"])


@pytest.mark.usefixtures("private_targets")
async def test_names_under_another_customers_custom_domain_are_refused(
    account: Account, listener: Listener, make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    other = await make_account(await make_tenant("other"))
    theirs = await other.create_address(listener.url())
    await other.add_domain("*.theirs.example", theirs["id"])
    address = await account.create_address(listener.url())
    await account.add_domain("eu.theirs.example", address["id"], expect=409)
    await account.add_domain("x.eu.theirs.example", address["id"], expect=409)


@pytest.mark.parametrize(
    "target",
    [
        "http://[::7f00:1]/",  # IPv4-compatible loopback
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
        "http://[::ffff:192.168.1.1]/",
        "http://example.com:0/",
    ],
)
async def test_targets_refused(services: Services, account: Account, target: str) -> None:
    response = await account.client.post("/addresses", json={"target": target})
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("path", ["/addresses", "/incoming_statuses"])
async def test_a_huge_offset_is_a_clear_error(account: Account, path: str) -> None:
    response = await account.client.get(path, params={"offset": 10**30})
    assert response.status_code == 400, response.text


async def test_the_record_exists_before_the_post_in_sync_mode(hooks: Hooks) -> None:
    """While the webhook still thinks, the message is kept and shows as delayed; once
    it answers 200, delivered, with the attempt."""
    gate = asyncio.Event()
    hooks.listener.answer(Answer(200, gate=gate))
    address = await hooks.address()
    sending = asyncio.create_task(hooks.send(simple_message("in flight"), address["email"]))
    await hooks.listener.wait_for(1)
    [during] = await hooks.account.statuses()
    assert during["status_category"] == "delayed" and during["attempts"] == []
    gate.set()
    transcript = await sending
    assert transcript.data_code == 250, transcript
    [after] = await hooks.account.statuses()
    assert after["id"] == during["id"]
    assert after["status_category"] == "successful" and after["status"] == 200
    assert [a["outcome"] for a in after["attempts"]] == ["delivered"]
    # Only delivered: no longer counted among the delayed ones.
    assert await hooks.account.statuses(status_category="delayed") == []
