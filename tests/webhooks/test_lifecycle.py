"""Addresses over time (deletion, changes), names shared with filtered domains, and
what filtering does to webhook mail (spam is posted, blocklisted senders are not)."""

from __future__ import annotations

from tests.api.helpers import provision
from tests.conftest import Tenant, TenantFactory
from tests.smtp.conftest import GTUBE
from tests.webhooks.conftest import ADDRESS_DOMAIN, Answer, Hooks, simple_message


async def test_changing_an_address(hooks: Hooks) -> None:
    address = await hooks.address("/before")
    response = await hooks.account.client.put(
        f"/addresses/{address['id']}",
        json={"target": hooks.listener.url("/after"), "target_format": "raw", "nickname": "n"},
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["email"], changed["mode"], changed["nickname"]) == (
        address["email"],
        "sync",
        "n",
    )
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 250, transcript
    [hit] = hooks.listener.hits
    assert hit.path == "/after"
    assert hit.form()[0].name == "message"


async def test_deleting_an_address_keeps_its_messages_in_the_log(hooks: Hooks) -> None:
    """As documented: mail to it is refused from now on; its messages stay in the log."""
    address = await hooks.address()
    transcript = await hooks.send(simple_message("kept"), address["email"])
    assert transcript.data_code == 250, transcript
    [status] = await hooks.account.statuses()
    response = await hooks.account.client.delete(f"/addresses/{address['id']}")
    assert response.status_code == 204
    response = await hooks.account.client.get(f"/addresses/{address['id']}")
    assert response.status_code == 404
    logged = await hooks.gateway.tenant.client.get(f"/messages/{status['id']}")
    assert logged.status_code == 200, logged.text
    assert logged.json()["subject"] == "kept"
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.rcpt == [(550, "5.1.1 No such recipient here")]


async def test_deleting_an_address_removes_its_custom_domains(hooks: Hooks) -> None:
    address = await hooks.address()
    await hooks.account.add_domain("gone.test", address["id"])
    response = await hooks.account.client.delete(f"/addresses/{address['id']}")
    assert response.status_code == 204
    assert (await hooks.account.client.get("/custom_domains")).json() == []
    transcript = await hooks.send(simple_message(), "x@gone.test")
    assert transcript.rcpt == [(550, "5.7.1 Relaying denied: recipient domain is not served here")]


async def test_an_idn_custom_domain(hooks: Hooks) -> None:
    address = await hooks.address()
    created = await hooks.account.add_domain("bücher.test", address["id"])
    assert created["domain"] == "bücher.test"
    transcript = await hooks.send(simple_message(), "info@xn--bcher-kva.test")
    assert transcript.rcpt == [(250, "2.1.5 Recipient OK")] and transcript.data_code == 250
    assert len(hooks.listener.hits) == 1


async def test_a_custom_domain_cannot_be_provisioned_by_someone_else(
    hooks: Hooks, make_tenant: TenantFactory
) -> None:
    address = await hooks.address()
    await hooks.account.add_domain("shop.test", address["id"])
    other: Tenant = await make_tenant("other")
    response = await other.client.post(
        "/domains", json={"domain": "shop.test", "subscriptionHandle": other.subscription}
    )
    assert response.status_code == 409, response.text


async def test_the_address_domain_cannot_be_provisioned(hooks: Hooks) -> None:
    address = await hooks.address()
    tenant = hooks.gateway.tenant
    await provision(tenant.client, ADDRESS_DOMAIN, tenant.subscription, status=400)
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 250, transcript
    assert len(hooks.listener.hits) == 1


async def test_spam_is_posted_flagged_not_refused(hooks: Hooks) -> None:
    address = await hooks.address()
    transcript = await hooks.send(simple_message("spam", f"{GTUBE}\r\n"), address["email"])
    assert transcript.data_code == 250, transcript
    [hit] = hooks.listener.hits
    document = hit.json()
    mailmoat = document["envelope"]["mailmoat"]
    assert mailmoat["verdict"] == "spam" and mailmoat["score"] >= 1000
    assert "GTUBE" in [rule["name"] for rule in mailmoat["rules"]]
    assert "GTUBE" in document["envelope"]["spamd"]["symbols"]
    assert document["headers"]["x_spam_flag"] == "YES"


async def test_a_forged_spam_flag_is_removed(hooks: Hooks) -> None:
    address = await hooks.address(target_format="raw")
    forged = simple_message("ham").replace(b"\r\n\r\n", b"\r\nX-Spam-Flag: YES\r\n\r\n", 1)
    transcript = await hooks.send(forged, address["email"])
    assert transcript.data_code == 250, transcript
    [hit] = hooks.listener.hits
    assert b"X-Spam-Flag" not in hit.form()[0].value


async def test_a_blocklisted_sender_is_refused_and_listed(hooks: Hooks) -> None:
    response = await hooks.gateway.tenant.client.post(
        "/lists/blocklist", json={"item": "spammer.test"}
    )
    assert response.status_code == 201, response.text
    address = await hooks.address()
    transcript = await hooks.send(simple_message(), address["email"], sender="x@spammer.test")
    assert transcript.rcpt == [(550, "5.7.1 Sender is blocked by the recipient's blocklist")]
    assert hooks.listener.hits == []
    [status] = await hooks.account.statuses()
    assert (status["status_category"], status["from"]) == ("rejected", "x@spammer.test")
    transcript = await hooks.send(simple_message(), address["email"])  # others still pass
    assert transcript.data_code == 250


async def test_other_2xx_answers_are_250(hooks: Hooks) -> None:
    hooks.listener.answer(Answer(201, b""), Answer(204, b"", None), Answer(299, b"odd"))
    address = await hooks.address()
    for _ in range(3):
        transcript = await hooks.send(simple_message(), address["email"])
        assert transcript.data_code == 250, transcript
    statuses = await hooks.account.statuses(status_category="successful")
    assert sorted(s["status"] for s in statuses) == [201, 204, 299]
