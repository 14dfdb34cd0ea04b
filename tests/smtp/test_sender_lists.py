"""The three list tiers and their precedence, decided at RCPT time through real SMTP.

Every message carries GTUBE: unlisted it is quarantined (the default policy), a
safelisted sender skips scanning and is queued, a blocklisted one is refused.
"""

from __future__ import annotations

import aiosmtplib
import httpx
import pytest

from tests.api.helpers import add_user
from tests.smtp.conftest import DOMAIN, GTUBE, Gateway, message

USER = f"bob@{DOMAIN}"
SENDER = "alice@mail.sender.test"

# (tier, list, item)
Entry = tuple[str, str, str]


async def add_entry(client: httpx.AsyncClient, tier: str, listname: str, item: str) -> None:
    path = {
        "account": f"/lists/{listname}",
        "domain": f"/domains/{DOMAIN}/lists/{listname}",
        "user": f"/users/{USER}/lists/{listname}",
    }[tier]
    response = await client.post(path, json={"item": item})
    assert response.status_code == 201, response.text


CASES: list[tuple[str, list[Entry], str]] = [
    ("nothing listed", [], "quarantined"),
    ("account blocklist", [("account", "blocklist", SENDER)], "refused"),
    ("account safelist", [("account", "safelist", SENDER)], "account-safelist"),
    ("domain blocklist", [("domain", "blocklist", SENDER)], "refused"),
    ("domain safelist", [("domain", "safelist", SENDER)], "domain-safelist"),
    ("user blocklist", [("user", "blocklist", SENDER)], "refused"),
    ("user safelist", [("user", "safelist", SENDER)], "user-safelist"),
    (
        "domain safelist beats account blocklist",
        [("account", "blocklist", SENDER), ("domain", "safelist", SENDER)],
        "domain-safelist",
    ),
    (
        "domain blocklist beats account safelist",
        [("account", "safelist", SENDER), ("domain", "blocklist", SENDER)],
        "refused",
    ),
    (
        "user safelist beats domain blocklist",
        [("domain", "blocklist", SENDER), ("user", "safelist", SENDER)],
        "user-safelist",
    ),
    (
        "user blocklist beats domain and account safelists",
        [
            ("account", "safelist", SENDER),
            ("domain", "safelist", SENDER),
            ("user", "blocklist", SENDER),
        ],
        "refused",
    ),
    (
        "within a tier safelist beats blocklist",
        [("domain", "blocklist", SENDER), ("domain", "safelist", SENDER)],
        "domain-safelist",
    ),
    (
        "within a tier safelist beats blocklist, whatever the item type",
        [("user", "blocklist", SENDER), ("user", "safelist", "127.0.0.1")],
        "user-safelist",
    ),
    (
        "domain item matches the sender domain",
        [("domain", "blocklist", "mail.sender.test")],
        "refused",
    ),
    ("domain item matches subdomains", [("domain", "blocklist", "sender.test")], "refused"),
    ("domain item is not a suffix match", [("domain", "blocklist", "der.test")], "quarantined"),
    (
        "other address does not match",
        [("domain", "blocklist", "eve@mail.sender.test")],
        "quarantined",
    ),
    (
        "address match ignores case",
        [("domain", "safelist", "Alice@Mail.Sender.Test")],
        "domain-safelist",
    ),
    ("client IP", [("account", "blocklist", "127.0.0.1")], "refused"),
    ("client CIDR range", [("domain", "safelist", "127.0.0.0/8")], "domain-safelist"),
    ("CIDR range without the client", [("domain", "blocklist", "10.0.0.0/8")], "quarantined"),
    ("IPv6 range never matches an IPv4 client", [("domain", "blocklist", "::/0")], "quarantined"),
]


@pytest.mark.parametrize(("entries", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_list_tiers(gateway: Gateway, entries: list[Entry], expected: str) -> None:
    await add_user(gateway.api, USER)
    for entry in entries:
        await add_entry(gateway.api, *entry)
    content = message(body=f"{GTUBE}\r\n").encode()
    if expected == "refused":
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await gateway.send(content, sender=SENDER, recipients=[USER])
        [error] = refused.value.recipients
        assert error.code == 550
        assert "blocklist" in error.message
        [record] = await gateway.messages()
        assert record["state"] == "rejected"
        assert record["reason"].endswith("-blocklist")
        return
    errors, _ = await gateway.send(content, sender=SENDER, recipients=[USER])
    assert errors == {}
    record = await gateway.only_message()
    if expected == "quarantined":
        assert (record["state"], record["reason"]) == ("quarantined", "spam-score")
    else:
        assert (record["state"], record["verdict"], record["reason"]) == (
            "queued",
            "unscanned",
            expected,
        )


async def test_null_sender_matches_only_ip_entries(gateway: Gateway) -> None:
    await add_entry(gateway.api, "domain", "blocklist", "sender.test")
    errors, _ = await gateway.send(message(), sender="", recipients=[USER])
    assert errors == {}
    await add_entry(gateway.api, "domain", "blocklist", "127.0.0.1")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await gateway.send(message(), sender="", recipients=[USER])


async def test_blocklist_refuses_only_the_listed_users_recipient(gateway: Gateway) -> None:
    """A user-tier blocklist refuses that user; other users of the domain still get the mail."""
    await add_user(gateway.api, USER)
    await add_entry(gateway.api, "user", "blocklist", SENDER)
    errors, reply = await gateway.send(
        message(), sender=SENDER, recipients=[USER, f"carol@{DOMAIN}"]
    )
    assert set(errors) == {USER}
    assert reply.startswith("2.0.0")
    states = sorted(m["state"] for m in await gateway.messages())
    assert states == ["queued", "rejected"]
