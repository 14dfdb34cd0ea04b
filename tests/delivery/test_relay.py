"""The SMTP relay against real downstream servers on real sockets."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mailmoat.delivery.relay import (
    Destination,
    DestinationUnusable,
    Envelope,
    Relay,
    RelayOptions,
    Reply,
    TlsMode,
)
from tests.downstream import Downstream, Received, free_port
from tests.tls import self_signed

RelayFactory = Callable[..., Relay]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def message(message_id: str = "<m1@sender.test>", body: bytes = b"Hello.\r\n") -> bytes:
    return (
        b"From: Alice <alice@sender.test>\r\n"
        b"To: bob@customer.test\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"Message-ID: " + message_id.encode() + b"\r\n"
        b"X-Folded: first part\r\n\tsecond part  \r\n"
        b"\r\n" + body
    )


def envelope(*recipients: str, sender: str = "alice@sender.test", data: bytes = b"") -> Envelope:
    return Envelope(sender, list(recipients or ["bob@customer.test"]), data or message())


def at(server: Downstream) -> Destination:
    return Destination("127.0.0.1", server.port, "downstream.test.")


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    with Downstream() as server:
        yield server


@pytest.fixture
async def make_relay() -> AsyncIterator[RelayFactory]:
    relays: list[Relay] = []

    def make(**options: Any) -> Relay:
        options = {"connect_timeout": 2.0, "command_timeout": 2.0, **options}
        relay = Relay(RelayOptions(helo="relay.test", **options))
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        await relay.close()


@pytest.fixture
def relay(make_relay: RelayFactory) -> Relay:
    return make_relay()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away self-signed certificate for downstream.test."""
    return self_signed(tmp_path_factory.mktemp("tls"), "downstream.test")


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[Destination]:
    """A hand-written server, for misbehaviour aiosmtpd will not produce."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield Destination("127.0.0.1", server.sockets[0].getsockname()[1], "127.0.0.1")
    finally:
        server.close()
        await server.wait_closed()


def scripted_smtp(after_data: str) -> Handler:
    """Plays SMTP up to the end of the message, then: 'close', 'silent' or 'accept-and-close'."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 fake.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-fake.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                while await reader.readline() not in (b".\r\n", b""):
                    pass
                if after_data == "silent":
                    await reader.read()  # until the client gives up
                elif after_data == "accept-and-close":
                    writer.write(b"250 2.0.0 taken\r\n")
                    await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
        writer.close()

    return handle


# -- what arrives ---------------------------------------------------------------------


async def test_message_arrives_byte_identical(relay: Relay, downstream: Downstream) -> None:
    body = (
        b".a line starting with a dot\r\n"
        b".\r\n"
        b"..two dots\r\n"
        b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n"
        b"\r\n"
        b"last line\r\n"
    )
    data = message(body=body)
    replies = await relay.send(at(downstream), envelope("bob@customer.test", data=data))
    assert replies == {"bob@customer.test": Reply(250, "2.0.0 Ok: queued")}
    [received] = downstream.received()
    assert received.data == data
    assert received.mail_from == "alice@sender.test"
    assert received.recipients == ["bob@customer.test"]
    assert received.message_id == "<m1@sender.test>"
    assert received.tls is False
    # The server offers SIZE and 8BITMIME; the body has 8-bit bytes.
    assert f"SIZE={len(data)}" in received.mail_options
    assert "BODY=8BITMIME" in received.mail_options


async def test_null_sender_arrives_as_null_sender(relay: Relay, downstream: Downstream) -> None:
    replies = await relay.send(at(downstream), envelope(sender=""))
    assert all(reply.ok for reply in replies.values())
    [received] = downstream.received()
    assert received.mail_from == ""
    assert "BODY=8BITMIME" not in received.mail_options  # plain ASCII message


async def test_each_recipient_gets_its_own_reply(relay: Relay, downstream: Downstream) -> None:
    refusals = {"gone@customer.test": "550 5.1.1 no such user", "full@customer.test": "450 4.2.1"}
    downstream.rcpt_reply = refusals.get
    replies = await relay.send(
        at(downstream), envelope("gone@customer.test", "full@customer.test", "bob@customer.test")
    )
    assert replies["gone@customer.test"] == Reply(550, "5.1.1 no such user")
    assert replies["gone@customer.test"].permanent
    assert replies["full@customer.test"].code == 450
    assert replies["full@customer.test"].temporary
    assert replies["bob@customer.test"].ok
    [received] = downstream.received()
    assert received.recipients == ["bob@customer.test"]


@pytest.mark.parametrize("refusal", ["451 4.3.0 later", "554 5.6.0 no"])
async def test_data_refusal_applies_to_every_accepted_recipient(
    relay: Relay, downstream: Downstream, refusal: str
) -> None:
    downstream.rcpt_reply = {"gone@customer.test": "550 5.1.1 no such user"}.get
    downstream.data_reply = lambda received: refusal
    replies = await relay.send(
        at(downstream), envelope("a@customer.test", "b@customer.test", "gone@customer.test")
    )
    code, text = refusal.split(" ", 1)
    assert replies == {
        "a@customer.test": Reply(int(code), text),
        "b@customer.test": Reply(int(code), text),
        "gone@customer.test": Reply(550, "5.1.1 no such user"),
    }
    assert downstream.received() == []
    # The connection stays good for the next message.
    downstream.data_reply = None
    assert (await relay.send(at(downstream), envelope()))["bob@customer.test"].ok
    assert len(downstream.received()) == 1
    assert downstream.connections == 1


@pytest.mark.parametrize("refusal", ["451 4.7.1 greylisted", "550 5.7.1 sender blocked"])
async def test_sender_refusal_applies_to_every_recipient(
    relay: Relay, downstream: Downstream, refusal: str
) -> None:
    downstream.mail_reply = lambda sender: refusal
    replies = await relay.send(at(downstream), envelope("a@customer.test", "b@customer.test"))
    code, text = refusal.split(" ", 1)
    assert replies == dict.fromkeys(["a@customer.test", "b@customer.test"], Reply(int(code), text))
    downstream.mail_reply = None
    assert (await relay.send(at(downstream), envelope()))["bob@customer.test"].ok
    assert downstream.connections == 1


async def test_no_data_when_every_recipient_is_refused(
    relay: Relay, downstream: Downstream
) -> None:
    downstream.rcpt_reply = lambda address: "550 5.1.1 no such user"
    replies = await relay.send(at(downstream), envelope("x@customer.test", "y@customer.test"))
    assert {reply.code for reply in replies.values()} == {550}
    downstream.rcpt_reply = None
    assert (await relay.send(at(downstream), envelope()))["bob@customer.test"].ok
    assert len(downstream.received()) == 1
    assert downstream.connections == 1  # reset and reused, not reconnected


async def test_smtputf8_addresses(relay: Relay, downstream: Downstream) -> None:
    replies = await relay.send(
        at(downstream), envelope("jürgen@customer.test", sender="jörg@a.test")
    )
    assert replies["jürgen@customer.test"].ok
    [received] = downstream.received()
    assert (received.mail_from, received.recipients) == ("jörg@a.test", ["jürgen@customer.test"])
    assert "SMTPUTF8" in received.mail_options


async def test_smtputf8_address_to_a_server_without_it(relay: Relay) -> None:
    with Downstream(smtputf8=False) as server:
        replies = await relay.send(
            at(server), envelope("jürgen@customer.test", "bob@customer.test")
        )
        refusal = Reply(553, "5.6.7 downstream does not support SMTPUTF8")
        assert replies == {"jürgen@customer.test": refusal, "bob@customer.test": refusal}
        assert server.received() == []
        # ASCII mail still goes through on the same connection.
        assert (await relay.send(at(server), envelope()))["bob@customer.test"].ok
        assert server.connections == 1


# -- connections ----------------------------------------------------------------------


async def test_sequential_sends_share_one_connection(relay: Relay, downstream: Downstream) -> None:
    for n in range(20):
        replies = await relay.send(at(downstream), envelope(data=message(f"<m{n}@sender.test>")))
        assert replies["bob@customer.test"].ok
    assert downstream.message_ids() == [f"<m{n}@sender.test>" for n in range(20)]
    assert downstream.connections == 1


async def test_concurrent_sends_respect_the_connection_limit(
    make_relay: RelayFactory, downstream: Downstream
) -> None:
    relay = make_relay(per_destination=3)
    ids = [f"<c{n}@sender.test>" for n in range(30)]
    results = await asyncio.gather(
        *(relay.send(at(downstream), envelope(data=message(i))) for i in ids)
    )
    assert all(r["bob@customer.test"].ok for r in results)
    assert sorted(downstream.message_ids()) == sorted(ids)
    assert downstream.max_concurrent == 3
    assert downstream.connections == 3


async def test_connection_renewed_after_messages_per_connection(
    make_relay: RelayFactory, downstream: Downstream
) -> None:
    relay = make_relay(messages_per_connection=2)
    for _ in range(5):
        assert (await relay.send(at(downstream), envelope()))["bob@customer.test"].ok
    assert len(downstream.received()) == 5
    assert downstream.connections == 3


async def until(condition: Callable[[], bool], seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_idle_connection_is_closed(make_relay: RelayFactory, downstream: Downstream) -> None:
    relay = make_relay(idle_timeout=0.2)
    assert (await relay.send(at(downstream), envelope()))["bob@customer.test"].ok
    assert downstream.active == 1
    await until(lambda: downstream.active == 0)
    assert (await relay.send(at(downstream), envelope()))["bob@customer.test"].ok
    assert downstream.connections == 2


@pytest.mark.parametrize("notice", ["before", "during"])
async def test_pooled_connection_dropped_by_the_server(
    relay: Relay, downstream: Downstream, notice: str
) -> None:
    """The server restarted while our connection was idle: the next message still
    arrives, once. "before": the relay sees the close before sending; "during": it
    only finds out when MAIL FROM fails, and retries on a new connection."""
    assert (await relay.send(at(downstream), envelope(data=message("<1@a>"))))[
        "bob@customer.test"
    ].ok
    downstream.stop()
    downstream.start()
    if notice == "before":
        await asyncio.sleep(0.05)
    replies = await relay.send(at(downstream), envelope(data=message("<2@a>")))
    assert replies["bob@customer.test"].ok
    assert downstream.message_ids() == ["<1@a>", "<2@a>"]
    assert downstream.connections == 2


async def test_cancelled_sends_free_their_slot(
    make_relay: RelayFactory, downstream: Downstream
) -> None:
    """One cancelled mid-transaction, one cancelled while waiting for the only slot:
    the next send gets the slot, on a fresh connection (the first one's state is unknown)."""
    relay = make_relay(per_destination=1)

    def slow(received: Received) -> None:
        time.sleep(0.3)  # holds the server thread: the first send is stuck in DATA

    downstream.data_reply = slow
    busy = asyncio.create_task(relay.send(at(downstream), envelope()))
    waiting = asyncio.create_task(relay.send(at(downstream), envelope()))
    await asyncio.sleep(0.1)
    waiting.cancel()
    busy.cancel()
    await asyncio.gather(busy, waiting, return_exceptions=True)
    downstream.data_reply = None
    replies = await asyncio.wait_for(relay.send(at(downstream), envelope()), 5)
    assert replies["bob@customer.test"].ok
    assert downstream.connections == 2


async def test_close_ends_every_session(make_relay: RelayFactory, downstream: Downstream) -> None:
    relay = make_relay(per_destination=3)
    await asyncio.gather(*(relay.send(at(downstream), envelope()) for _ in range(6)))
    assert downstream.active == 3
    await relay.close()
    await until(lambda: downstream.active == 0)


# -- unusable destinations -----------------------------------------------------------


async def test_connection_refused(relay: Relay) -> None:
    destination = Destination("127.0.0.1", free_port(), "mx.customer.test.")
    with pytest.raises(DestinationUnusable) as unusable:
        await relay.send(destination, envelope())
    reply = unusable.value.reply
    assert reply.temporary
    assert reply == Reply(
        421, f"4.4.1 connection refused by mx.customer.test.[127.0.0.1]:{destination.port}"
    )


async def test_server_that_never_greets(make_relay: RelayFactory) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    relay = make_relay(connect_timeout=0.5)
    async with raw_server(mute) as destination:
        started = time.monotonic()
        with pytest.raises(DestinationUnusable) as unusable:
            await relay.send(destination, envelope())
        assert time.monotonic() - started < 1.5
    assert unusable.value.reply.code == 421
    assert unusable.value.reply.text.startswith("4.4.2 timeout")
    assert str(destination) in unusable.value.reply.text


async def test_greeting_refusal(relay: Relay) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 5.7.1 no service for you\r\n")
        await reader.read()
        writer.close()

    async with raw_server(refuse) as destination:
        with pytest.raises(DestinationUnusable) as unusable:
            await relay.send(destination, envelope())
    assert unusable.value.reply == Reply(554, "5.7.1 no service for you")


@pytest.mark.parametrize("after_data", ["close", "silent"])
async def test_connection_lost_during_data_is_temporary(
    make_relay: RelayFactory, after_data: str
) -> None:
    relay = make_relay(command_timeout=0.5)
    async with raw_server(scripted_smtp(after_data)) as destination:
        replies = await relay.send(destination, envelope("a@customer.test", "b@customer.test"))
    for reply in replies.values():
        assert reply.code == 451
        assert reply.text.startswith(f"4.4.2 connection lost with {destination}: ")


async def test_accepted_message_stays_accepted_when_the_server_then_vanishes(
    make_relay: RelayFactory,
) -> None:
    relay = make_relay(messages_per_connection=1)  # so the relay says QUIT right after DATA
    async with raw_server(scripted_smtp("accept-and-close")) as destination:
        replies = await relay.send(destination, envelope())
    assert replies == {"bob@customer.test": Reply(250, "2.0.0 taken")}


# -- STARTTLS -------------------------------------------------------------------------


async def test_opportunistic_tls_upgrades_when_offered(
    relay: Relay, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    with Downstream(tls_cert=cert, tls_key=key) as server:
        assert (await relay.send(at(server), envelope()))["bob@customer.test"].ok
        assert server.received()[0].tls is True


async def test_no_tls_mode_stays_plain(
    make_relay: RelayFactory, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    relay = make_relay(tls=TlsMode.NONE)
    with Downstream(tls_cert=cert, tls_key=key) as server:
        assert (await relay.send(at(server), envelope()))["bob@customer.test"].ok
        assert server.received()[0].tls is False


@pytest.mark.parametrize("mode", [TlsMode.REQUIRED, TlsMode.VERIFY])
async def test_required_tls_not_offered(
    make_relay: RelayFactory, downstream: Downstream, mode: TlsMode
) -> None:
    relay = make_relay(tls=mode)
    with pytest.raises(DestinationUnusable) as unusable:
        await relay.send(at(downstream), envelope())
    assert unusable.value.reply.code == 421
    assert unusable.value.reply.text.startswith("4.7.0 STARTTLS required but not offered")
    assert downstream.received() == []


async def test_verify_refuses_an_untrusted_certificate(
    make_relay: RelayFactory, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    relay = make_relay(tls=TlsMode.VERIFY)
    with Downstream(tls_cert=cert, tls_key=key) as server:
        with pytest.raises(DestinationUnusable) as unusable:
            await relay.send(at(server), envelope())
        assert unusable.value.reply.temporary
        assert "certificate" in unusable.value.reply.text
        assert server.received() == []


async def test_verify_delivers_with_a_trusted_certificate(
    make_relay: RelayFactory, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    trust = ssl.create_default_context(cafile=str(cert))
    relay = make_relay(tls=TlsMode.VERIFY, tls_context=trust)
    with Downstream(tls_cert=cert, tls_key=key) as server:
        assert (await relay.send(at(server), envelope()))["bob@customer.test"].ok
        assert server.received()[0].tls is True
        # The certificate is for downstream.test, not for another name at that address.
        wrong_name = Destination("127.0.0.1", server.port, "other.test")
        with pytest.raises(DestinationUnusable):
            await relay.send(wrong_name, envelope())
        assert len(server.received()) == 1


async def test_required_tls_with_any_certificate(
    make_relay: RelayFactory, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    relay = make_relay(tls=TlsMode.REQUIRED)
    with Downstream(tls_cert=cert, tls_key=key, require_tls=True) as server:
        assert (await relay.send(at(server), envelope()))["bob@customer.test"].ok
        assert server.received()[0].tls is True


@pytest.mark.parametrize("mode", [TlsMode.OPPORTUNISTIC, TlsMode.REQUIRED])
async def test_a_failed_handshake_falls_back_to_plain_text_only_when_opportunistic(
    make_relay: RelayFactory, certificate: tuple[Path, Path], mode: TlsMode
) -> None:
    cert, key = certificate
    relay = make_relay(tls=mode)
    with Downstream(tls_cert=cert, tls_key=key) as server:
        server.broken_tls = True
        if mode is TlsMode.OPPORTUNISTIC:
            assert (await relay.send(at(server), envelope()))["bob@customer.test"].ok
            assert server.received()[0].tls is False
        else:
            with pytest.raises(DestinationUnusable) as unusable:
                await relay.send(at(server), envelope())
            assert unusable.value.reply.text.startswith("4.7.0 TLS with")
            assert server.received() == []


# -- small values ---------------------------------------------------------------------


def test_destination_and_reply_text() -> None:
    assert str(Destination("192.0.2.1", 25, "mx1.example.net.")) == "mx1.example.net.[192.0.2.1]:25"
    assert str(Destination("192.0.2.1", 25, "192.0.2.1")) == "[192.0.2.1]:25"
    assert str(Destination("2001:db8::1", 2525, "2001:db8::1")) == "[2001:db8::1]:2525"
    assert str(Reply(250, "2.0.0 Ok: queued")) == "250 2.0.0 Ok: queued"
    assert str(Reply(550, "5.1.1 first line\n5.1.1 second line")) == (
        "550 5.1.1 first line 5.1.1 second line"
    )
    assert Reply(451, "").temporary and not Reply(451, "").ok
