"""The RCPT stage through real sockets: what a client can and cannot make mailmoat do
without completing a transaction, and the small rules of the session around it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import func, select

from mailmoat.config import Settings
from mailmoat.db.tables import MessageRecipient, Recipient
from mailmoat.services.container import Services
from mailmoat.smtp_runtime import smtp_options
from tests.api.helpers import provision_names
from tests.conftest import TenantFactory
from tests.smtp.conftest import DOMAIN, GTUBE, HOSTNAME, Gateway, GatewayFactory, message
from tests.tls import self_signed

LIMITED = "limited.example"


async def _users(services: Services) -> list[tuple[str, bool]]:
    async with services.db.read() as session:
        rows = await session.execute(select(Recipient.email, Recipient.filter))
        return sorted((email, bool(filtered)) for email, filtered in rows)


async def _user_count(services: Services) -> int:
    async with services.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Recipient)) or 0)


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One whole reply (the last line of a multi-line one)."""
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        if len(line) < 4 or line[3:4] != b"-":
            return line


async def test_recipients_without_mail_create_no_users(
    make_gateway: GatewayFactory, make_tenant: TenantFactory, services: Services
) -> None:
    gateway = await make_gateway()
    limited = await make_tenant("limited", protected_address_limit=3)
    await provision_names(limited.client, limited.subscription, LIMITED)
    before = await _user_count(services)
    async with gateway.client() as smtp:
        await smtp.ehlo()
        for n in range(300):
            assert (await smtp.mail("spammer@sender.test")).code == 250
            assert (await smtp.rcpt(f"guess{n}@{LIMITED}")).code == 250
            assert (await smtp.rset()).code == 250
    assert await _user_count(services) == before

    # The limit is untouched: a real recipient's first message is still filtered.
    errors, _ = await gateway.send(message(body=f"{GTUBE}\r\n"), recipients=[f"real@{LIMITED}"])
    assert errors == {}
    log = await limited.client.get(f"/domains/{LIMITED}/messages")
    (record,) = log.json()["messages"]
    assert (record["verdict"], record["state"]) == ("spam", "quarantined")  # default policy
    # Accepted mail creates its user, filtered while the limit has room, and the
    # record names it.
    assert await _users(services) == [(f"real@{LIMITED}", True)]
    async with services.db.read() as session:
        linked = await session.scalar(
            select(Recipient.email)
            .join(MessageRecipient, MessageRecipient.recipient_id == Recipient.id)
            .where(MessageRecipient.message_id == record["id"])
        )
    assert linked == f"real@{LIMITED}"


async def test_the_limit_is_shared_first_come_first_served(
    make_gateway: GatewayFactory, make_tenant: TenantFactory, services: Services
) -> None:
    gateway = await make_gateway()
    limited = await make_tenant("limited", protected_address_limit=1)
    await provision_names(limited.client, limited.subscription, LIMITED)
    async with gateway.client() as smtp:
        await smtp.mail("alice@sender.test")
        assert (await smtp.rcpt(f"first@{LIMITED}")).code == 250
        # The first recipient takes the limit's last place: the second would be
        # an unfiltered user, whose mail waits for a transaction of its own.
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as deferred:
            await smtp.rcpt(f"second@{LIMITED}")
        assert deferred.value.code == 452
        assert (await smtp.data(message(body=f"{GTUBE}\r\n").encode())).code == 250
    errors, _ = await gateway.send(message(body=f"{GTUBE}\r\n"), recipients=[f"second@{LIMITED}"])
    assert errors == {}
    assert await _users(services) == [(f"first@{LIMITED}", True), (f"second@{LIMITED}", False)]
    log = (await limited.client.get(f"/domains/{LIMITED}/messages")).json()["messages"]
    by_rcpt = {m["recipients"][0]: m for m in log}
    assert by_rcpt[f"first@{LIMITED}"]["state"] == "quarantined"
    assert (by_rcpt[f"second@{LIMITED}"]["verdict"], by_rcpt[f"second@{LIMITED}"]["reason"]) == (
        "unscanned",
        "filter-off",
    )


async def test_refused_mail_creates_no_user(gateway: Gateway, services: Services) -> None:
    response = await gateway.api.put(f"/domains/{DOMAIN}/settings", json={"abusePolicy": "block"})
    assert response.status_code == 200, response.text
    before = await _user_count(services)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await gateway.send(message(body=f"{GTUBE}\r\n"), recipients=[f"nobody@{DOMAIN}"])
    assert refused.value.code == 550
    assert await _user_count(services) == before
    (record,) = await gateway.messages()
    assert record["state"] == "rejected"  # still in the log


async def test_concurrent_first_messages_create_one_user(
    gateway: Gateway, services: Services
) -> None:
    results = await asyncio.gather(
        *(gateway.send(message(), recipients=[f"new@{DOMAIN}"]) for _ in range(4))
    )
    assert all(errors == {} for errors, _ in results)
    assert await _users(services) == [(f"new@{DOMAIN}", True)]
    assert len(await gateway.messages()) == 4


async def test_a_recipient_is_logged_as_written_and_is_one_user_in_any_case(
    gateway: Gateway, services: Services
) -> None:
    await gateway.send(message(), recipients=[f"John.Doe@{DOMAIN.upper()}"])
    await gateway.send(message(), recipients=[f"john.doe@{DOMAIN}"])
    assert await _users(services) == [(f"john.doe@{DOMAIN}", True)]
    logged = sorted(m["recipients"][0] for m in await gateway.messages())
    assert logged == [f"John.Doe@{DOMAIN}", f"john.doe@{DOMAIN}"]
    # The log finds both, whichever spelling is asked for.
    assert len(await gateway.messages(recipient=f"JOHN.DOE@{DOMAIN}")) == 2


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), HOSTNAME)


async def test_no_auth_is_offered_before_or_after_starttls(
    make_gateway: GatewayFactory, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    gateway = await make_gateway(tls_cert=cert, tls_key=key)
    async with gateway.client() as smtp:
        await smtp.ehlo()
        assert "auth" not in smtp.esmtp_extensions
        await smtp.starttls(validate_certs=False)
        await smtp.ehlo()
        assert "starttls" not in smtp.esmtp_extensions
        assert "auth" not in smtp.esmtp_extensions
        assert "size" in smtp.esmtp_extensions
        reply = await smtp.execute_command(b"AUTH", b"PLAIN", b"AGFsaWNlAHNlY3JldA==")
        assert reply.code == 502, reply
        assert "5.5.1" in reply.message
        # The session goes on: mail is received as without AUTH.
        errors, _ = await smtp.sendmail("alice@sender.test", [f"bob@{DOMAIN}"], message())
        assert errors == {}


async def test_a_session_is_closed_after_too_many_errors(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()  # the default limit: 20
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        assert (await _reply(reader)).startswith(b"220")
        writer.write(b"EHLO client.test\r\nMAIL FROM:<spammer@sender.test>\r\n")
        assert (await _reply(reader)).startswith(b"250")
        assert (await _reply(reader)).startswith(b"250")
        codes = []
        for n in range(2000):
            writer.write(f"RCPT TO:<user{n}@elsewhere.test>\r\n".encode())
            reply = await _reply(reader)
            codes.append(reply[:3])
            if not reply.startswith(b"550"):
                break
        assert codes == [b"550"] * 20 + [b"421"], codes
        assert await asyncio.wait_for(reader.read(), 5) == b""  # disconnected
    finally:
        writer.close()


def test_the_error_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILMOAT_SMTP_MAX_ERRORS", raising=False)
    assert smtp_options(Settings()).max_errors == 20  # as Postfix's smtpd_hard_error_limit
    monkeypatch.setenv("MAILMOAT_SMTP_MAX_ERRORS", "5")
    assert smtp_options(Settings()).max_errors == 5


async def test_accepted_mail_starts_the_error_count_afresh(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_errors=3)
    async with gateway.client() as smtp:
        for _ in range(3):
            await smtp.mail("alice@sender.test")
            for n in range(2):
                with pytest.raises(aiosmtplib.SMTPRecipientRefused):
                    await smtp.rcpt(f"user{n}@elsewhere.test")
            await smtp.rcpt(f"bob@{DOMAIN}")
            assert (await smtp.data(message().encode())).code == 250
        await smtp.mail("alice@sender.test")
        for n in range(2):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused):
                await smtp.rcpt(f"user{n}@elsewhere.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as closing:
            await smtp.rcpt("user@elsewhere.test")
        assert closing.value.code == 550
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await smtp.noop()


async def test_a_non_ascii_recipient_needs_smtputf8(gateway: Gateway) -> None:
    async with gateway.client() as smtp:
        await smtp.ehlo()
        await smtp.mail("alice@sender.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt(f"jürgen@{DOMAIN}", encoding="utf-8")
        assert refused.value.code == 553
        assert "5.6.7" in refused.value.message
        await smtp.rset()
        await smtp.mail("alice@sender.test", options=["SMTPUTF8"])
        assert (await smtp.rcpt(f"jürgen@{DOMAIN}", encoding="utf-8")).code == 250
        assert (await smtp.data(message(to=f"bob@{DOMAIN}").encode())).code == 250
    (record,) = await gateway.messages()
    assert record["recipients"] == [f"jürgen@{DOMAIN}"]


async def test_a_non_ascii_sender_needs_smtputf8(gateway: Gateway) -> None:
    async with gateway.client() as smtp:
        await smtp.ehlo()
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await smtp.mail("jörg@sender.test", encoding="utf-8")
        assert refused.value.code == 553
        assert "5.6.7" in refused.value.message
        assert (await smtp.mail("jörg@sender.test", options=["SMTPUTF8"], encoding="utf-8")).code
        assert (await smtp.rcpt(f"bob@{DOMAIN}")).code == 250
        assert (await smtp.data(message().encode())).code == 250
    (record,) = await gateway.messages()
    assert record["mailFrom"] == "jörg@sender.test"


async def test_an_address_that_is_not_utf8_is_refused_as_invalid(gateway: Gateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        assert (await _reply(reader)).startswith(b"220")
        writer.write(b"EHLO client.test\r\n")
        assert (await _reply(reader)).startswith(b"250")
        writer.write(b"MAIL FROM:<j\xff\xfe@sender.test> SMTPUTF8\r\n")
        assert (await _reply(reader)).startswith(b"553 5.1.7")
        writer.write(b"MAIL FROM:<alice@sender.test> SMTPUTF8\r\n")
        assert (await _reply(reader)).startswith(b"250")
        writer.write(b"RCPT TO:<j\xff\xfe@example.com>\r\n")
        assert (await _reply(reader)).startswith(b"553 5.1.3")  # not 451: no retrying
    finally:
        writer.close()
    assert await gateway.messages() == []
