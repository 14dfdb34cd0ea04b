"""Signatures of posts and their secret's rotation, Basic auth from the target URL,
the private-address guard, and redirects."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from datetime import datetime, timedelta

import pytest

from mailmoat.delivery import webhook_signing
from tests.api.helpers import assert_error
from tests.delivery.conftest import MailroomFactory
from tests.webhooks.conftest import (
    Account,
    Answer,
    Hit,
    Hooks,
    Listener,
    PosterFactory,
    simple_message,
)

V1 = re.compile(r"v1=([0-9a-f]{64})")


def signed_with(secret: str, hit: Hit) -> str:
    """The documented recipe, computed here: HMAC-SHA256(secret, "<timestamp>." + body)."""
    timestamp = hit.header("X-Mailmoat-Timestamp")
    assert timestamp is not None and timestamp.isdigit()
    signed = timestamp.encode() + b"." + hit.body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def offered(hit: Hit) -> list[str]:
    header = hit.header("X-Mailmoat-Signature")
    assert header is not None
    values = header.split(",")
    assert all(V1.fullmatch(v) for v in values), header
    return [v[3:] for v in values]


def verifies(secret: str, hit: Hit, body: bytes | None = None) -> bool:
    return webhook_signing.verify(
        secret,
        hit.header("X-Mailmoat-Signature") or "",
        hit.header("X-Mailmoat-Timestamp") or "",
        hit.body if body is None else body,
        now=int(time.time()),
    )


async def post_one(hooks: Hooks, address: dict[str, str], count: int) -> Hit:
    transcript = await hooks.send(simple_message(f"post {count}"), address["email"])
    assert transcript.data_code == 250, transcript
    hits = await hooks.listener.wait_for(count)
    assert len(hits) == count
    return hits[-1]


async def test_posts_are_signed_with_the_accounts_secret(hooks: Hooks) -> None:
    address = await hooks.address()
    hit = await post_one(hooks, address, 1)
    secret = (await hooks.account.secret())["secret"]
    assert isinstance(secret, str) and len(secret) >= 32
    timestamp = hit.header("X-Mailmoat-Timestamp")
    assert timestamp is not None and abs(int(timestamp) - time.time()) < 60
    assert offered(hit) == [signed_with(secret, hit)]
    assert verifies(secret, hit)
    altered = bytearray(hit.body)
    altered[len(altered) // 2] ^= 0x01
    assert not verifies(secret, hit, bytes(altered))
    assert hmac.new(
        secret.encode(), f"{timestamp}.".encode() + bytes(altered), hashlib.sha256
    ).hexdigest() not in offered(hit)
    assert not verifies(secret + "x", hit)
    assert not webhook_signing.verify(
        secret,
        hit.header("X-Mailmoat-Signature") or "",
        timestamp,
        hit.body,
        now=int(timestamp) + 301,
    )


async def rotate(account: Account) -> tuple[str, str]:
    """Rotate; returns (old, new) and checks what the API says about the grace."""
    old = (await account.secret())["secret"]
    rotated = await account.rotate()
    new = rotated["secret"]
    assert new != old
    created = datetime.fromisoformat(rotated["created_at"])
    until = datetime.fromisoformat(rotated["previous_valid_until"])
    assert until - created == timedelta(hours=24)
    shown = await account.secret()
    assert (shown["secret"], shown["previous_valid_until"]) == (
        new,
        rotated["previous_valid_until"],
    )
    return old, new


async def test_after_a_rotation_both_secrets_sign(hooks: Hooks, make_poster: PosterFactory) -> None:
    """A poster that reads the secrets after the rotation (a fresh process here) signs
    with the new one and, during the grace, the old one."""
    address = await hooks.address()
    await post_one(hooks, address, 1)
    old, new = await rotate(hooks.account)
    make_poster()
    hit = await post_one(hooks, address, 2)
    assert offered(hit) == [signed_with(new, hit), signed_with(old, hit)]
    assert verifies(new, hit) and verifies(old, hit)
    # a second rotation: only the newest two sign
    _, newest = await rotate(hooks.account)
    make_poster()
    hit = await post_one(hooks, address, 3)
    assert offered(hit) == [signed_with(newest, hit), signed_with(new, hit)]
    assert not verifies(old, hit)


async def test_the_next_post_after_a_rotation_carries_both(hooks: Hooks) -> None:
    address = await hooks.address()
    await post_one(hooks, address, 1)
    old, new = await rotate(hooks.account)
    hit = await post_one(hooks, address, 2)
    assert offered(hit) == [signed_with(new, hit), signed_with(old, hit)]


# --------------------------------------------------------------------------- Basic auth


async def test_credentials_in_the_target_become_basic_auth(hooks: Hooks) -> None:
    hooks.listener.answer(Answer(200), Answer(401, b"who are you", "text/plain"))
    target = hooks.listener.url(userinfo="user:pa%40ss")
    address = await hooks.account.create_address(target)
    for count in (1, 2):
        await hooks.send(simple_message(f"auth {count}"), address["email"])
    first, second = await hooks.listener.wait_for(2)
    expected = "Basic " + base64.b64encode(b"user:pa@ss").decode()
    assert first.header("Authorization") == expected
    assert second.header("Authorization") == expected
    assert first.path == "/hook"
    response = await hooks.account.client.get("/incoming_statuses")
    assert response.status_code == 200
    for secret in ("pa%40ss", "pa@ss", "user:"):
        assert secret not in response.text
    statuses = response.json()
    assert [s["status"] for s in statuses] == [401, 200]  # newest first
    for status in statuses:
        [attempt] = status["attempts"]
        assert attempt["target"] == hooks.listener.url()


# --------------------------------------------------------------------------- the guard


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/hook",
        "http://localhost:{port}/hook",
        "http://[::1]:{port}/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
async def test_private_targets_are_refused_unless_allowed(
    account: Account, listener: Listener, target: str
) -> None:
    response = await account.client.post(
        "/addresses", json={"target": target.format(port=listener.port)}
    )
    assert_error(response, 400, mentions="private")


async def test_public_targets_and_names_are_accepted(account: Account) -> None:
    for target in ("https://93.184.216.34/hook", "https://hooks.example.com/in?x=1"):
        created = await account.create_address(target)
        assert created["target"] == target


async def test_the_poster_refuses_a_private_target(
    hooks: Hooks, make_poster: PosterFactory
) -> None:
    """An address made while private targets were allowed, posted by a poster that does
    not allow them: 450, the status says why, and nothing reaches the listener."""
    address = await hooks.address()
    make_poster(allow_private=False)
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 450, transcript
    assert "private" in transcript.data_text
    [status] = await hooks.account.statuses()
    assert (status["status"], status["status_category"]) == (None, "delayed")
    [attempt] = status["attempts"]
    assert attempt["outcome"] == "unreachable" and "private" in attempt["reply"]
    assert "private" in status["reply"]
    assert hooks.listener.hits == []


async def test_the_worker_refuses_a_private_target(
    make_mailroom: MailroomFactory,
    listener: Listener,
    account: Account,
    private_targets: None,
) -> None:
    mailroom = await make_mailroom(webhook_timeout=5.0)  # webhook_allow_private is False
    hooks = Hooks(mailroom.gateway, listener, account)
    address = await hooks.address(mode="queued")
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 250, transcript
    status = await account.wait_status(transcript.queued_id, "delayed", attempts=1)
    assert status["attempts"][0]["outcome"] == "unreachable"
    assert "private" in status["attempts"][0]["reply"]
    assert listener.hits == []


# --------------------------------------------------------------------------- redirects


def redirect(to: str, status: int = 307) -> Answer:
    return Answer(status, b"", None, headers=(("Location", to),))


async def test_redirects_are_followed_with_the_same_post(hooks: Hooks) -> None:
    hooks.listener.answer(redirect("/second", 301), redirect(hooks.listener.url("/third")))
    address = await hooks.address()
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 250, transcript
    hits = hooks.listener.hits
    assert [h.path for h in hits] == ["/hook", "/second", "/third"]
    assert all(h.method == "POST" and h.body == hits[0].body for h in hits)
    assert len({h.header("X-Mailmoat-Id") for h in hits}) == 1
    [status] = await hooks.account.statuses()
    assert status["attempts"][0]["target"] == hooks.listener.url("/third")


async def test_more_than_three_redirects_are_450(hooks: Hooks) -> None:
    hooks.listener.answer(*(redirect(f"/r{i}") for i in range(4)))
    address = await hooks.address()
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 450, transcript
    assert "redirects" in transcript.data_text
    assert len(hooks.listener.hits) == 4


async def test_credentials_do_not_follow_a_redirect_elsewhere(hooks: Hooks) -> None:
    other = Listener()
    await other.start()
    try:
        hooks.listener.answer(redirect(other.url("/elsewhere")))
        address = await hooks.account.create_address(hooks.listener.url(userinfo="u:p"))
        transcript = await hooks.send(simple_message(), address["email"])
        assert transcript.data_code == 250, transcript
        [first] = hooks.listener.hits
        [moved] = other.hits
        assert first.header("Authorization") is not None
        assert moved.header("Authorization") is None
    finally:
        await other.close()
