"""Which mail reaches a webhook: generated addresses, custom domains (catch-all,
pattern, wildcard), the per-address size limit, and transactions that mix routes."""

from __future__ import annotations

import aiosmtplib
import pytest

from tests.api.helpers import assert_error
from tests.conftest import TenantFactory
from tests.smtp.conftest import DOMAIN, Gateway, GatewayFactory
from tests.webhooks.conftest import (
    ADDRESS_DOMAIN,
    Account,
    AccountFactory,
    Hooks,
    Listener,
    simple_message,
)

OK = (250, "2.1.5 Recipient OK")
NO_SUCH = (550, "5.1.1 No such recipient here")
RELAYING = (550, "5.7.1 Relaying denied: recipient domain is not served here")
NEW_TRANSACTION = (452, "4.5.3 Send mail for this recipient in a new transaction")
TOO_BIG = (552, "5.3.4 Message too big for this address")


async def rcpt_reply(hooks: Hooks, recipient: str) -> tuple[int, str]:
    """The RCPT reply for ``recipient``; a message is posted when it is accepted."""
    transcript = await hooks.send(simple_message(), recipient)
    [reply] = transcript.rcpt
    if reply[0] == 250:
        assert transcript.data_code == 250, transcript
    return reply


async def test_custom_domain_catch_all(hooks: Hooks) -> None:
    address = await hooks.address("/a")
    created = await hooks.account.add_domain("catchall.test", address["id"])
    assert (created["domain"], created["address_id"], created["pattern"]) == (
        "catchall.test",
        address["id"],
        None,
    )
    for recipient in ("anyone@catchall.test", "Some.Body+tag@CatchAll.test"):
        assert await rcpt_reply(hooks, recipient) == OK
    hits = hooks.listener.hits
    assert [h.path for h in hits] == ["/a", "/a"]
    assert [h.json()["envelope"]["to"].lower() for h in hits] == [
        "anyone@catchall.test",
        "some.body+tag@catchall.test",
    ]
    statuses = await hooks.account.statuses(address_id=address["id"])
    assert len(statuses) == 2


async def test_custom_domain_pattern(hooks: Hooks) -> None:
    address = await hooks.address()
    await hooks.account.add_domain("shop.test", address["id"], "^(support|sales)$")
    assert await rcpt_reply(hooks, "support@shop.test") == OK
    assert await rcpt_reply(hooks, "Sales@shop.test") == OK  # any case
    for refused in ("other@shop.test", "support2@shop.test", "xsales@shop.test"):
        assert await rcpt_reply(hooks, refused) == NO_SUCH, refused
    assert len(hooks.listener.hits) == 2


async def test_wildcard_custom_domain_and_an_exact_one(hooks: Hooks) -> None:
    wild = await hooks.address("/wild")
    exact = await hooks.address("/exact")
    await hooks.account.add_domain("*.example.org", wild["id"])
    assert await rcpt_reply(hooks, "x@eu.example.org") == OK
    assert await rcpt_reply(hooks, "x@a.b.example.org") == RELAYING  # one label only
    assert await rcpt_reply(hooks, "x@example.org") == RELAYING  # not the parent itself
    await hooks.account.add_domain("us.example.org", exact["id"])
    assert await rcpt_reply(hooks, "x@us.example.org") == OK
    assert await rcpt_reply(hooks, "y@eu.example.org") == OK
    assert [h.path for h in hooks.listener.hits] == ["/wild", "/exact", "/wild"]


async def test_custom_domain_refusals(
    hooks: Hooks, make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    address = await hooks.address()
    account = hooks.account
    # example.com is provisioned (filtered) for this customer by make_gateway
    await account.add_domain(DOMAIN, address["id"], expect=409)
    await account.add_domain(DOMAIN.upper(), address["id"], expect=409)
    await account.add_domain("taken.test", address["id"])
    await account.add_domain("taken.test", address["id"], expect=409)
    await account.add_domain(ADDRESS_DOMAIN, address["id"], expect=400)
    await account.add_domain("bad.test", address["id"], "([", expect=400)
    await account.add_domain("a.*.test", address["id"], expect=400)
    other = await make_account(await make_tenant("other"))
    theirs = await other.create_address(hooks.listener.url("/theirs"))
    await other.add_domain("taken.test", theirs["id"], expect=409)  # another customer's
    await account.add_domain("mine.test", theirs["id"], expect=404)  # not my address
    listed = (await account.client.get("/custom_domains")).json()
    assert [d["domain"] for d in listed] == ["taken.test"]


async def test_unknown_tokens_are_refused(hooks: Hooks) -> None:
    address = await hooks.address()
    token = address["email"].split("@")[0]
    assert await rcpt_reply(hooks, f"0123456789abcdef@{ADDRESS_DOMAIN}") == NO_SUCH
    assert await rcpt_reply(hooks, f"0123456789abcdef+{token}@{ADDRESS_DOMAIN}") == NO_SUCH
    assert await rcpt_reply(hooks, f"{token.upper()}+Anything.Here@{ADDRESS_DOMAIN}") == OK
    response = await hooks.account.client.delete(f"/addresses/{address['id']}")
    assert response.status_code == 204
    assert await rcpt_reply(hooks, address["email"]) == NO_SUCH
    assert hooks.listener.hits[0].json()["envelope"]["to"].lower() == (
        f"{token}+anything.here@{ADDRESS_DOMAIN}"
    )
    assert len(hooks.listener.hits) == 1


async def test_a_webhook_address_shares_no_transaction(hooks: Hooks) -> None:
    one = (await hooks.address("/one"))["email"]
    two = (await hooks.address("/two"))["email"]
    normal = f"bob@{DOMAIN}"
    message = simple_message()
    transcript = await hooks.send(message, one, normal)
    assert transcript.rcpt == [OK, NEW_TRANSACTION] and transcript.data_code == 250
    transcript = await hooks.send(message, normal, one)
    assert transcript.rcpt == [OK, NEW_TRANSACTION] and transcript.data_code == 250
    transcript = await hooks.send(message, one, two)
    assert transcript.rcpt == [OK, NEW_TRANSACTION] and transcript.data_code == 250
    assert [h.path for h in hooks.listener.hits] == ["/one", "/one"]
    assert hooks.listener.hits[0].json()["envelope"]["recipients"] == [one]


async def test_one_address_twice_is_one_post(hooks: Hooks) -> None:
    email = (await hooks.address())["email"]
    token, _, domain = email.partition("@")
    tagged = f"{token}+x@{domain}"
    transcript = await hooks.send(simple_message(), email, tagged)
    assert transcript.rcpt == [OK, OK] and transcript.data_code == 250
    [hit] = hooks.listener.hits
    envelope = hit.json()["envelope"]
    assert (envelope["to"], envelope["recipients"]) == (email, [email, tagged])
    [status] = await hooks.account.statuses()
    assert (status["to"], status["recipients"]) == (email, [email, tagged])


async def test_sync_mail_without_a_poster_is_a_temporary_failure(
    make_gateway: GatewayFactory, listener: Listener, account: Account, private_targets: None
) -> None:
    """A gateway whose intake has no webhook poster (the SMTP role did not set one)."""
    gateway: Gateway = await make_gateway()
    assert gateway.services.intake.webhook_poster is None
    hooks = Hooks(gateway, listener, account)
    address = await hooks.address()
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 451, transcript
    assert "not available" in transcript.data_text
    assert listener.hits == []


# --------------------------------------------------------------------------- size


async def test_max_size(hooks: Hooks) -> None:
    address = await hooks.address(max_size=2048)
    assert address["max_size"] == 2048
    email = address["email"]
    big = simple_message("too big", size=5 * 1024)
    declared = await hooks.send(big, email)  # SIZE=5120 at MAIL FROM
    assert declared.rcpt == [TOO_BIG] and declared.data is None
    undeclared = await hooks.send(big, email, declare_size=False)
    assert undeclared.rcpt == [OK] and undeclared.data == TOO_BIG
    understated = await hooks.send(big, email, declared_size=1000)
    assert understated.rcpt == [OK] and understated.data == TOO_BIG
    assert hooks.listener.hits == []
    exact = await hooks.send(simple_message("just fits", size=2048), email)
    assert exact.rcpt == [OK] and exact.data_code == 250, exact
    over = await hooks.send(simple_message("one too many", size=2049), email)
    assert over.rcpt == [TOO_BIG]
    assert len(hooks.listener.hits) == 1
    refused = await hooks.account.statuses(status_category="max_size")
    assert len(refused) == 4
    for status in refused:
        assert status["address_id"] == address["id"]
        assert status["to"] == email and status["recipients"] == [email]
        assert status["status"] is None and status["attempts"] == []
        assert status["state"] == "rejected"
        assert status["reply"] == " ".join(map(str, TOO_BIG))
    [fits] = await hooks.account.statuses(status_category="successful")
    assert fits["subject"] == "just fits"


async def test_max_size_limits(hooks: Hooks) -> None:
    for size in (1000, 25 * 1024 * 1024 + 1):
        response = await hooks.account.client.post(
            "/addresses", json={"target": hooks.listener.url(), "max_size": size}
        )
        assert_error(response, 400)
    default = await hooks.address()
    assert default["max_size"] == 25 * 1024 * 1024


async def test_max_size_at_the_gateway_with_smtp_size_declared_by_aiosmtplib(
    hooks: Hooks,
) -> None:
    """aiosmtplib's sendmail declares SIZE itself when the server advertises it."""
    address = await hooks.address(max_size=2048)
    async with hooks.gateway.client() as smtp:
        await smtp.ehlo()
        assert "size" in smtp.esmtp_extensions
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await hooks.gateway.send(simple_message(size=5000), recipients=[address["email"]])
    assert [(r.code, r.message) for r in refused.value.recipients] == [TOO_BIG]
    [status] = await hooks.account.statuses()
    assert status["status_category"] == "max_size"
    assert hooks.listener.hits == []
