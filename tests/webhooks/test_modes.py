"""Sync mode (the webhook's answer is the SMTP reply), queued mode (accept, then POST
with retries) and redelivery, with what the incoming statuses show of each."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.delivery.conftest import MailroomFactory
from tests.served import free_port
from tests.webhooks.conftest import (
    Account,
    Answer,
    Hooks,
    Listener,
    PosterFactory,
    converse,
    simple_message,
)


def differences(a: Any, b: Any, path: str = "") -> dict[str, tuple[Any, Any]]:
    """Where two JSON documents differ, by path."""
    if isinstance(a, dict) and isinstance(b, dict):
        found: dict[str, tuple[Any, Any]] = {}
        for key in a.keys() | b.keys():
            found |= differences(a.get(key), b.get(key), f"{path}.{key}")
        return found
    return {} if a == b else {path: (a, b)}


def only_attempt(status: dict[str, Any]) -> dict[str, Any]:
    assert len(status["attempts"]) == 1, status["attempts"]
    attempt: dict[str, Any] = status["attempts"][0]
    return attempt


async def sync_post(hooks: Hooks, answer: Answer) -> tuple[int, str, dict[str, Any]]:
    """Send one message to a new sync address whose webhook answers ``answer``;
    returns the DATA reply and the message's status."""
    hooks.listener.answer(answer)
    address = await hooks.address()
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.rcpt == [(250, "2.1.5 Recipient OK")]
    assert transcript.data is not None
    [hit] = await hooks.listener.wait_for(1)
    [status] = await hooks.account.statuses()
    assert status["id"] == hit.header("X-Mailmoat-Id")
    assert status["address_id"] == address["id"]
    assert status["reply"] == f"{transcript.data[0]} {transcript.data[1]}"
    assert only_attempt(status)["target"] == hooks.listener.url()
    return transcript.data[0], transcript.data[1], status


async def test_sync_200_is_250(hooks: Hooks) -> None:
    code, text, status = await sync_post(hooks, Answer(200, b"thanks"))
    assert code == 250
    assert text == f"2.0.0 Ok: delivered to the webhook as {status['id']}"
    assert (status["status"], status["status_category"], status["state"]) == (
        200,
        "successful",
        "delivered",
    )
    attempt = only_attempt(status)
    assert (attempt["outcome"], attempt["status"], attempt["response"]) == ("delivered", 200, None)
    assert attempt["reply"].startswith("250 ")


async def test_sync_403_is_554_with_the_text(hooks: Hooks) -> None:
    code, text, status = await sync_post(
        hooks, Answer(403, b"no such customer", "text/plain; charset=utf-8")
    )
    assert code == 554
    assert "no such customer" in text and text.startswith("5."), text
    assert (status["status"], status["status_category"]) == (403, "rejected")
    attempt = only_attempt(status)
    assert (attempt["outcome"], attempt["status"]) == ("failed", 403)
    assert attempt["response"] == "no such customer"
    assert attempt["reply"].startswith("554 ") and "no such customer" in attempt["reply"]


async def test_sync_4xx_that_is_not_text_is_not_in_the_reply(hooks: Hooks) -> None:
    body = b'{"error": "secret internals"}'
    code, text, status = await sync_post(hooks, Answer(422, body, "application/json"))
    assert code == 554
    assert "secret internals" not in text and "422" in text
    assert only_attempt(status)["response"] == body.decode()


async def test_sync_500_is_450(hooks: Hooks) -> None:
    code, text, status = await sync_post(
        hooks, Answer(500, b"database down", "text/plain; charset=utf-8")
    )
    assert code == 450
    assert text.startswith("4.") and "500" in text, text
    assert (status["status"], status["status_category"]) == (500, "delayed")
    attempt = only_attempt(status)
    assert (attempt["outcome"], attempt["status"], attempt["response"]) == (
        "deferred",
        500,
        "database down",
    )


async def test_sync_timeout_is_450(hooks: Hooks, make_poster: PosterFactory) -> None:
    make_poster(timeout=0.5)
    started = asyncio.get_running_loop().time()
    code, text, status = await sync_post(hooks, Answer(200, delay=3.0))
    assert asyncio.get_running_loop().time() - started < 2.5  # the poster gave up, not SMTP
    assert code == 450
    assert text.startswith("4.4.2") and "did not answer" in text, text
    assert (status["status"], status["status_category"]) == (None, "delayed")
    attempt = only_attempt(status)
    assert (attempt["outcome"], attempt["status"], attempt["response"]) == (
        "unreachable",
        None,
        None,
    )


async def test_sync_unreachable_target_is_450(hooks: Hooks) -> None:
    address = await hooks.account.create_address(f"http://127.0.0.1:{free_port()}/hook")
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 450, transcript
    assert "unreachable" in transcript.data_text
    [status] = await hooks.account.statuses()
    assert (status["status"], status["status_category"]) == (None, "delayed")
    assert only_attempt(status)["outcome"] == "unreachable"


async def test_a_long_error_body_is_cut_to_2048_bytes(hooks: Hooks) -> None:
    body = ("x" * 1000 + "\n").encode() * 5  # 5005 bytes
    code, text, status = await sync_post(hooks, Answer(500, body, "text/plain"))
    assert code == 450
    assert len(text) < 300, text  # the reply carries only the start of it
    response = only_attempt(status)["response"]
    assert response == body[:2048].decode()
    assert len(response) == 2048


async def test_a_long_refusal_is_cut_in_the_smtp_reply(hooks: Hooks) -> None:
    body = b"no such customer " * 300
    code, text, status = await sync_post(hooks, Answer(404, body, "text/plain"))
    assert code == 554
    assert text.startswith("5.7.1 HTTP 404: no such customer") and len(text) < 300, text
    assert only_attempt(status)["response"] == body[:2048].decode()


async def test_sync_binary_error_body_is_kept(hooks: Hooks, request: pytest.FixtureRequest) -> None:
    """A failing answer's body with a NUL byte (say, gzip) still leaves a status."""
    body = b"\x1f\x8b\x08\x00binary"
    hooks.listener.answer(Answer(500, body, "application/octet-stream"))
    address = await hooks.address()
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 450, transcript
    [status] = await hooks.account.statuses()
    # Kept as text, the NUL shown as U+FFFD (PostgreSQL's text refuses NUL).
    assert only_attempt(status)["response"] == body.decode("utf-8", "replace").replace(
        "\x00", "\ufffd"
    )


# --------------------------------------------------------------------------- queued mode


@pytest.fixture
async def worked(
    make_mailroom: MailroomFactory,
    listener: Listener,
    account: Account,
    make_poster: PosterFactory,
    private_targets: None,
) -> Hooks:
    """A gateway with its delivery worker (FAST retries), posting to loopback."""
    mailroom = await make_mailroom(webhook_allow_private=True, webhook_timeout=5.0)
    make_poster()
    return Hooks(mailroom.gateway, listener, account)


async def test_queued_retries_until_the_webhook_takes_it(worked: Hooks) -> None:
    gate = asyncio.Event()
    worked.listener.answer(
        Answer(500, b"boom", gate=gate), Answer(502, b"bad gateway"), then=Answer(200)
    )
    address = await worked.address(mode="queued")
    transcript = await worked.send(simple_message("queued one"), address["email"])
    # the SMTP reply came while the first POST is still waiting for its answer
    assert transcript.data_code == 250, transcript
    assert transcript.data_text.startswith("2.0.0 Ok: queued as ")
    message_id = transcript.queued_id
    await worked.listener.wait_for(1)
    early = await worked.account.status(message_id)
    assert early["status_category"] == "delayed" and early["attempts"] == []
    gate.set()
    status = await worked.account.wait_status(message_id, "successful", attempts=3)
    assert status["state"] == "delivered" and status["status"] == 200
    attempts = status["attempts"]
    assert [(a["status"], a["outcome"]) for a in attempts] == [
        (500, "deferred"),
        (502, "deferred"),
        (200, "delivered"),
    ]
    assert [a["response"] for a in attempts] == ["boom", "bad gateway", None]
    assert attempts[0]["at"] < attempts[1]["at"] < attempts[2]["at"]
    hits = worked.listener.hits
    assert len(hits) == 3
    assert {h.header("X-Mailmoat-Id") for h in hits} == {message_id}
    documents = [h.json() for h in hits]
    assert differences(documents[0], documents[1]) == {}  # the same post, again
    assert differences(documents[0], documents[2]) == {}
    assert documents[0]["envelope"]["mailmoat"]["message_id"] == message_id


async def test_queued_refusal_fails_for_good(worked: Hooks) -> None:
    worked.listener.answer(then=Answer(410, b"gone for good", "text/plain"))
    address = await worked.address(mode="queued")
    transcript = await worked.send(simple_message("refused later"), address["email"])
    assert transcript.data_code == 250, transcript
    status = await worked.account.wait_status(transcript.queued_id, "rejected")
    assert status["state"] == "failed" and status["status"] == 410
    attempt = only_attempt(status)
    assert (attempt["outcome"], attempt["response"]) == ("failed", "gone for good")
    await asyncio.sleep(0.8)  # longer than the retry schedule: no second POST
    assert len(worked.listener.hits) == 1


async def test_queued_post_over_tls(
    make_mailroom: MailroomFactory,
    listener: Listener,
    account: Account,
    private_targets: None,
    certificate: tuple[Path, Path],
) -> None:
    """The worker tells from mailmoat's Received field that the client used STARTTLS."""
    cert, key = certificate
    mailroom = await make_mailroom(
        webhook_allow_private=True, gateway_options={"tls_cert": cert, "tls_key": key}
    )
    address = await account.create_address(listener.url(), mode="queued")
    for starttls in (True, False):
        transcript = await converse(
            mailroom.gateway.port, simple_message(), [address["email"]], starttls=starttls
        )
        assert transcript.data_code == 250, transcript
        [*_, hit] = await listener.wait_for(2 if not starttls else 1)
        assert hit.json()["envelope"]["tls"] is starttls


async def test_queued_binary_error_body_is_kept(
    worked: Hooks, request: pytest.FixtureRequest
) -> None:
    body = b"\x1f\x8b\x08\x00binary"
    worked.listener.answer(Answer(500, body, "application/octet-stream"), then=Answer(200))
    address = await worked.address(mode="queued")
    transcript = await worked.send(simple_message(), address["email"])
    assert transcript.data_code == 250, transcript
    status = await worked.account.wait_status(
        transcript.queued_id, "successful", attempts=2, within=4.0
    )
    kept = body.decode("utf-8", "replace").replace("\x00", "\ufffd")
    assert [a["response"] for a in status["attempts"]] == [kept, None]


# --------------------------------------------------------------------------- redelivery


async def test_redeliver_after_the_webhook_is_fixed(worked: Hooks) -> None:
    worked.listener.answer(Answer(403, b"no such customer", "text/plain"), then=Answer(200))
    address = await worked.address()  # sync
    transcript = await worked.send(simple_message("refused at first"), address["email"])
    assert transcript.data_code == 554, transcript
    [refused] = await worked.account.statuses()
    assert refused["status_category"] == "rejected"
    response = await worked.account.client.post(f"/incoming_statuses/{refused['id']}/redeliver")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "queued"
    assert response.json()["status_category"] == "delayed"
    status = await worked.account.wait_status(refused["id"], "successful", attempts=2)
    assert status["state"] == "delivered" and status["status"] == 200
    assert [(a["status"], a["outcome"]) for a in status["attempts"]] == [
        (403, "failed"),
        (200, "delivered"),
    ]
    first, second = worked.listener.hits
    assert first.header("X-Mailmoat-Id") == second.header("X-Mailmoat-Id") == refused["id"]
    # the redelivery (built from the record) describes the message as the first post did;
    # spf.domain aside: see test_a_post_from_the_record_matches_the_sync_post
    assert set(differences(first.json(), second.json())) <= {".envelope.spf.domain"}


async def test_redeliver_what_the_webhook_received(worked: Hooks) -> None:
    """A message the webhook took can be replayed; one of another account cannot."""
    address = await worked.address()
    transcript = await worked.send(simple_message(), address["email"])
    assert transcript.data_code == 250, transcript
    [done] = await worked.account.statuses()
    response = await worked.account.client.post(f"/incoming_statuses/{done['id']}/redeliver")
    assert response.status_code == 200, response.text
    status = await worked.account.wait_status(done["id"], "successful", attempts=2)
    assert [a["status"] for a in status["attempts"]] == [200, 200]
    assert len(worked.listener.hits) == 2


async def test_a_post_from_the_record_matches_the_sync_post(worked: Hooks) -> None:
    """Without sender authentication (MAILMOAT_AUTH_CHECKS=false), a replayed post
    describes the message exactly as its sync post did."""
    address = await worked.address()
    transcript = await worked.send(simple_message(), address["email"])
    assert transcript.data_code == 250, transcript
    [done] = await worked.account.statuses()
    response = await worked.account.client.post(f"/incoming_statuses/{done['id']}/redeliver")
    assert response.status_code == 200, response.text
    await worked.account.wait_status(done["id"], "successful", attempts=2)
    first, second = worked.listener.hits
    assert differences(first.json(), second.json()) == {}


async def wait_state(account: Account, status_id: str, state: str) -> dict[str, Any]:
    for _ in range(200):
        found = await account.status(status_id)
        if found["state"] == state:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"status stayed {found}")


async def delayed_then_redelivered(worked: Hooks, then: Answer) -> str:
    """A sync message the webhook answered 500 (450), redelivered to a webhook that now
    answers ``then``."""
    worked.listener.answer(Answer(500, b"down", "text/plain"), then=then)
    address = await worked.address()
    transcript = await worked.send(simple_message(), address["email"])
    assert transcript.data_code == 450, transcript
    [delayed] = await worked.account.statuses(status_category="delayed")
    response = await worked.account.client.post(f"/incoming_statuses/{delayed['id']}/redeliver")
    assert response.status_code == 200, response.text
    return str(delayed["id"])


async def test_a_redelivered_delayed_message_is_only_successful(worked: Hooks) -> None:
    status_id = await delayed_then_redelivered(worked, Answer(200))
    status = await worked.account.wait_status(status_id, "successful", attempts=2)
    assert status["state"] == "delivered"
    assert [s["id"] for s in await worked.account.statuses(status_category="successful")] == [
        status_id
    ]
    assert await worked.account.statuses(status_category="delayed") == []


async def test_a_redelivered_delayed_message_refused_for_good_is_rejected(
    worked: Hooks,
) -> None:
    status_id = await delayed_then_redelivered(worked, Answer(410, b"gone", "text/plain"))
    status = await wait_state(worked.account, status_id, "failed")
    assert [a["status"] for a in status["attempts"]] == [500, 410]
    assert status["status_category"] == "rejected"
    assert [s["id"] for s in await worked.account.statuses(status_category="rejected")] == [
        status_id
    ]
