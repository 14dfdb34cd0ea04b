"""SMTP intake through real sockets: who may send to whom, and what gets recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import pytest

from mailmoat.db.contents import MessageStore
from mailmoat.db.spool import Spool
from mailmoat.pipeline.engine import Pipeline
from mailmoat.scanners.base import ScanInput, ScanResult
from mailmoat.services.container import Services
from mailmoat.services.intake import IntakeService
from mailmoat.smtp.server import SmtpOptions, SmtpServer
from tests.api.helpers import add_user, provision_names
from tests.conftest import Tenant, TenantFactory
from tests.smtp.conftest import DOMAIN, GTUBE, HOSTNAME, Gateway, GatewayFactory, message
from tests.tls import self_signed


async def test_mail_to_a_provisioned_domain_is_accepted_and_logged(gateway: Gateway) -> None:
    errors, reply = await gateway.send(
        message(subject="Quarterly figures", message_id="<q3@sender.test>"),
        sender="alice@sender.test",
        recipients=[f"bob@{DOMAIN}"],
    )
    assert errors == {}
    assert reply.startswith("2.0.0 Ok: queued as ")
    record = await gateway.only_message()
    assert reply.endswith(record["id"])
    assert record["state"] == "queued"
    assert record["verdict"] == "ham"
    assert record["action"] == "accept"
    assert record["mailFrom"] == "alice@sender.test"
    assert record["recipients"] == [f"bob@{DOMAIN}"]
    assert record["clientIp"] == "127.0.0.1"
    assert record["clientHelo"]
    assert record["messageId"] == "<q3@sender.test>"
    assert record["subject"] == "Quarterly figures"
    assert record["score"] is not None and record["score"] < 5
    assert record["size"] > 100
    raw = await gateway.raw(record["id"])
    assert raw.startswith(b"Received: from ")
    unfolded = raw.replace(b"\r\n\t", b" ")
    assert f"by {HOSTNAME} (mailmoat) with ESMTP id {record['id']}".encode() in unfolded
    assert b"Subject: Quarterly figures\r\n" in raw
    assert raw.endswith(b"Shall we meet at noon at the usual place?\r\n")


async def test_unknown_domain_is_refused_no_open_relay(gateway: Gateway) -> None:
    async with gateway.client() as smtp:
        await smtp.mail("alice@sender.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt("someone@elsewhere.test")
        assert refused.value.code == 550
        assert "5.7.1" in refused.value.message
        # Not even a subdomain of a served domain.
        with pytest.raises(aiosmtplib.SMTPRecipientRefused):
            await smtp.rcpt(f"someone@sub.{DOMAIN}")
    assert await gateway.messages() == []


async def test_invalid_recipient_address_is_refused(gateway: Gateway) -> None:
    async with gateway.client() as smtp:
        await smtp.ehlo()
        await smtp.mail("alice@sender.test")
        for bad in ("TO:<bob@@example.com>", "TO:<@example.com>", "TO:<bob@-bad-.example.com>"):
            reply = await smtp.execute_command(b"RCPT", bad.encode())
            assert reply.code in (501, 550, 553), (bad, reply)
    assert await gateway.messages() == []


async def test_alias_domain_mail_is_logged_under_its_domain(gateway: Gateway) -> None:
    response = await gateway.api.post(f"/domains/{DOMAIN}/alias/alias.example")
    assert response.status_code in (200, 201), response.text
    errors, _ = await gateway.send(message(), recipients=["carol@alias.example"])
    assert errors == {}
    record = await gateway.only_message()
    assert record["recipients"] == ["carol@alias.example"]


async def test_users_are_created_as_mail_arrives_within_the_limit(
    make_tenant: TenantFactory, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway()
    limited = await make_tenant("limited", protected_address_limit=1)
    await provision_names(limited.client, limited.subscription, "limited.example")
    for user in ("first", "second"):
        errors, _ = await gateway.send(
            message(body=f"{GTUBE}\r\n"), recipients=[f"{user}@limited.example"]
        )
        assert errors == {}
    for user, filtered in (("first", True), ("second", False)):
        # PUT of an existing user changes nothing and shows it as it is.
        response = await limited.client.put(
            "/users", params={"email_address": f"{user}@limited.example", "admin": "false"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["recipient"]["filter"] is filtered
    log = await limited.client.get("/domains/limited.example/messages")
    by_rcpt = {m["recipients"][0]: m for m in log.json()["messages"]}
    # The filtered user's GTUBE is quarantined (the default policy); the other is not scanned.
    assert by_rcpt["first@limited.example"]["state"] == "quarantined"
    assert by_rcpt["second@limited.example"]["state"] == "queued"
    assert by_rcpt["second@limited.example"]["verdict"] == "unscanned"
    assert by_rcpt["second@limited.example"]["reason"] == "filter-off"


async def test_user_with_filter_off_is_delivered_unscanned(gateway: Gateway) -> None:
    await add_user(gateway.api, f"raw@{DOMAIN}", filter="false")
    errors, _ = await gateway.send(message(body=f"{GTUBE}\r\n"), recipients=[f"raw@{DOMAIN}"])
    assert errors == {}
    record = await gateway.only_message()
    assert (record["state"], record["verdict"], record["reason"]) == (
        "queued",
        "unscanned",
        "filter-off",
    )


async def test_recipients_of_another_customer_wait_for_a_new_transaction(
    gateway: Gateway, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("other")
    await provision_names(other.client, other.subscription, "other.example")
    await provision_names(gateway.api, gateway.tenant.subscription, "second.example")
    async with gateway.client() as smtp:
        await smtp.mail("alice@sender.test")
        assert (await smtp.rcpt(f"bob@{DOMAIN}")).code == 250
        # Same customer, same policy: fine in the same transaction.
        assert (await smtp.rcpt("bob@second.example")).code == 250
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as deferred:
            await smtp.rcpt("eve@other.example")
        assert deferred.value.code == 452
        assert (await smtp.data(message().encode())).code == 250
    assert len(await gateway.messages()) == 1
    assert len(await gateway.messages("second.example")) == 1
    other_log = await other.client.get("/domains/other.example/messages")
    assert other_log.json()["messages"] == []


async def test_recipients_with_different_policies_are_split(gateway: Gateway) -> None:
    await provision_names(gateway.api, gateway.tenant.subscription, "blocking.example")
    response = await gateway.api.put(
        "/domains/blocking.example/settings", json={"abusePolicy": "block"}
    )
    assert response.status_code == 200, response.text
    async with gateway.client() as smtp:
        await smtp.mail("alice@sender.test")
        assert (await smtp.rcpt(f"bob@{DOMAIN}")).code == 250
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as deferred:
            await smtp.rcpt("bob@blocking.example")
        assert deferred.value.code == 452
        assert "4.5.3" in deferred.value.message


async def test_too_many_recipients(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_recipients=2)
    async with gateway.client() as smtp:
        await smtp.mail("alice@sender.test")
        await smtp.rcpt(f"a@{DOMAIN}")
        await smtp.rcpt(f"b@{DOMAIN}")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt(f"c@{DOMAIN}")
        assert refused.value.code == 452


async def test_size_limit_announced_and_enforced(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_message_size=4096)
    async with gateway.client() as smtp:
        await smtp.ehlo()
        assert smtp.esmtp_extensions["size"] == "4096"
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as declared:
            await smtp.mail("alice@sender.test", options=["SIZE=5000"])
        assert declared.value.code == 552
    async with gateway.client() as smtp:
        await smtp.mail("alice@sender.test")  # no SIZE: the limit is only found in DATA
        await smtp.rcpt(f"bob@{DOMAIN}")
        with pytest.raises(aiosmtplib.SMTPDataError) as too_big:
            await smtp.data(message(body=("x" * 76 + "\r\n") * 60).encode())
        assert too_big.value.code == 552
        assert too_big.value.message.startswith("5.3.4")
    # Refused as a whole: its owner sees it in the log, without its content.
    (record,) = await gateway.messages()
    assert record["state"] == "rejected"
    assert record["reason"] == "max-size"
    assert record["smtpReply"].startswith("552 5.3.4")
    assert record["recipients"] == [f"bob@{DOMAIN}"]
    assert record["size"] > 4096


async def test_extensions_advertised(gateway: Gateway) -> None:
    async with gateway.client() as smtp:
        await smtp.ehlo()
        for extension in ("8bitmime", "smtputf8", "size"):
            assert extension in smtp.esmtp_extensions
        assert "starttls" not in smtp.esmtp_extensions  # no certificate configured


async def test_auth_parameter_from_exchange_is_accepted(gateway: Gateway) -> None:
    async with gateway.client() as smtp:
        await smtp.ehlo()
        response = await smtp.mail("alice@sender.test", options=["AUTH=<>"])
        assert response.code == 250
        await smtp.rcpt(f"bob@{DOMAIN}")
        assert (await smtp.data(message().encode())).code == 250


async def test_null_sender_is_accepted(gateway: Gateway) -> None:
    errors, _ = await gateway.send(message(subject="Delivery Status Notification"), sender="")
    assert errors == {}
    assert (await gateway.only_message())["mailFrom"] == ""


async def test_smtputf8_recipient_and_eight_bit_content(gateway: Gateway) -> None:
    body = "Grüße aus Köln, ünïcödé\r\n"
    raw = message(subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?=", body=body).encode()
    async with gateway.client() as smtp:
        await smtp.ehlo()
        await smtp.mail("jörg@sender.test", options=["SMTPUTF8", "BODY=8BITMIME"], encoding="utf-8")
        assert (await smtp.rcpt(f"jürgen@{DOMAIN}", encoding="utf-8")).code == 250
        assert (await smtp.data(raw)).code == 250
    record = await gateway.only_message()
    assert record["subject"] == "Grüße"
    assert record["mailFrom"] == "jörg@sender.test"
    assert body.encode() in await gateway.raw(record["id"])


@pytest.mark.parametrize(
    "raw",
    [
        b"this is not even a header\r\n\r\nbody\r\n",
        b"Subject: broken multipart\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
        b"Subject: =?bogus?x?zzz?=\r\nFrom: <<<>>>\r\nMessage-ID: \r\n\r\n\xff\xfe\x00bin\r\n",
        b"",
        b"Content-Type: text/html\r\n\r\n<html><body>" + b"<b>\r\n" * 5000,
    ],
    ids=["no-headers", "broken-multipart", "garbage-headers", "empty", "deep-html"],
)
async def test_malformed_mime_is_accepted_cleanly(gateway: Gateway, raw: bytes) -> None:
    errors, reply = await gateway.send(raw)
    assert errors == {}
    assert reply.startswith("2.0.0")
    record = await gateway.only_message()
    assert record["state"] in ("queued", "quarantined")
    # The session survives: another message goes through afterwards.
    errors, _ = await gateway.send(message())
    assert errors == {}


async def _smtp_dialogue(port: int, lines: list[bytes]) -> list[bytes]:
    """Send raw lines on a socket (pipelined) and collect every reply line until QUIT."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for line in lines:
        writer.write(line)
    await writer.drain()
    replies: list[bytes] = []
    while True:
        try:
            reply = await asyncio.wait_for(reader.readline(), 5)
        except TimeoutError:
            break
        if not reply:
            break
        replies.append(reply)
    writer.close()
    return replies


async def test_smtp_smuggling_bare_lf_dot_does_not_end_data(gateway: Gateway) -> None:
    smuggled = (
        b"From: alice@sender.test\r\nTo: bob@example.com\r\nSubject: outer\r\n\r\n"
        b"first part\n.\nMAIL FROM:<ceo@bank.test>\nRCPT TO:<bob@example.com>\nDATA\n"
        b"Subject: smuggled\n\nwire money\r\n.\r\n"
    )
    replies = await _smtp_dialogue(
        gateway.port,
        [
            b"EHLO client.test\r\n",
            b"MAIL FROM:<alice@sender.test>\r\n",
            b"RCPT TO:<bob@example.com>\r\n",
            b"DATA\r\n",
            smuggled,
            b"QUIT\r\n",
        ],
    )
    data_replies = [r for r in replies if r.startswith(b"250 2.0.0")]
    assert len(data_replies) == 1, replies
    record = await gateway.only_message()
    assert record["subject"] == "outer"
    assert record["mailFrom"] == "alice@sender.test"
    raw = await gateway.raw(record["id"])
    assert b"MAIL FROM:<ceo@bank.test>\r\n" in raw  # kept as body text, not obeyed
    assert b"\n" not in raw.replace(b"\r\n", b"")  # no bare LF left to smuggle onward


async def test_per_ip_connection_limit(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_connections_per_ip=2)
    first = await asyncio.open_connection("127.0.0.1", gateway.port)
    second = await asyncio.open_connection("127.0.0.1", gateway.port)
    assert (await first[0].readline()).startswith(b"220")
    assert (await second[0].readline()).startswith(b"220")
    third = await asyncio.open_connection("127.0.0.1", gateway.port)
    assert (await third[0].readline()).startswith(b"421 4.7.0")
    for _, writer in (first, second, third):
        writer.close()
    await asyncio.sleep(0.1)
    # Places are given back when sessions end.
    errors, _ = await gateway.send(message())
    assert errors == {}


async def test_idle_session_times_out(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(timeout=5)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    assert (await reader.readline()).startswith(b"220")
    closing = await asyncio.wait_for(reader.read(), 10)
    assert closing == b"" or closing.startswith(b"421")
    writer.close()


async def test_proxy_protocol_gives_the_real_client_address(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(proxy_protocol=True)
    replies = await _smtp_dialogue(
        gateway.port,
        [
            b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 25\r\n",
            b"EHLO client.test\r\n",
            b"MAIL FROM:<alice@sender.test>\r\n",
            b"RCPT TO:<bob@example.com>\r\n",
            b"DATA\r\n",
            message().encode() + b".\r\n",
            b"QUIT\r\n",
        ],
    )
    assert any(r.startswith(b"250 2.0.0") for r in replies), replies
    assert (await gateway.only_message())["clientIp"] == "203.0.113.9"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away self-signed certificate for the gateway's host name."""
    return self_signed(tmp_path_factory.mktemp("tls"), HOSTNAME)


async def test_starttls_with_a_configured_certificate(
    make_gateway: GatewayFactory, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    gateway = await make_gateway(tls_cert=cert, tls_key=key)
    async with gateway.client() as smtp:
        await smtp.ehlo()
        assert "starttls" in smtp.esmtp_extensions
        await smtp.starttls(validate_certs=False)
        assert smtp.get_transport_info("sslcontext") is not None
        errors, _ = await smtp.sendmail("alice@sender.test", [f"bob@{DOMAIN}"], message())
        assert errors == {}
    record = await gateway.only_message()
    raw = (await gateway.raw(record["id"])).replace(b"\r\n\t", b" ")
    assert b"with ESMTPS id" in raw


async def test_storage_failure_is_a_temporary_failure_and_keeps_nothing(
    services: Services, tenant: Tenant, tmp_path: Path
) -> None:
    """A spool that cannot be written (here: its directory is a file) means 451, not 250.

    Every message goes to a spool file here (``inline_max=0``), as large ones do."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    await provision_names(tenant.client, tenant.subscription, DOMAIN)
    store = MessageStore(services.db, Spool(blocked / "spool"), inline_max=0)
    intake = IntakeService(services.db, store, services.commits)
    pipeline = Pipeline(hostname=HOSTNAME, scanner=None, authenticator=None)
    server = SmtpServer(intake, pipeline, SmtpOptions(hostname=HOSTNAME, max_message_size=65536))
    await server.start("127.0.0.1", 0)
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port) as smtp:
            await smtp.mail("alice@sender.test")
            await smtp.rcpt(f"bob@{DOMAIN}")
            with pytest.raises(aiosmtplib.SMTPDataError) as failed:
                await smtp.data(message().encode())
        assert failed.value.code == 451
    finally:
        await server.stop()
    response = await tenant.client.get(f"/domains/{DOMAIN}/messages")
    assert response.json()["messages"] == []


class BrokenScanner:
    """A scanner with a defect: it raises what no scanner should."""

    name = "broken"

    async def scan(self, message: ScanInput) -> ScanResult:
        raise RuntimeError("defect")

    async def close(self) -> None:
        return None


async def test_an_internal_error_is_a_temporary_failure(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(scanner=BrokenScanner())
    with pytest.raises(aiosmtplib.SMTPDataError) as failed:
        await gateway.send(message())
    assert failed.value.code == 451  # the sender keeps the mail and retries
    assert await gateway.messages() == []
