"""Sending domains through /api/v0.1/{account}: DKIM keys, DNS records and their check.

Verification asks a DNS server on loopback that each test fills; nothing else may be
asked (``forbid_other_dns``).
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import select

from mailmoat.api.app import create_api
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.bootstrap import open_services
from mailmoat.config import Settings
from mailmoat.db.tables import AuditEvent, SendingDomain
from mailmoat.pipeline.dns import DnsResolver
from mailmoat.services.container import Services
from mailmoat.services.sending_domains import SendingDomainService, SendingPolicy
from tests import dnsserver
from tests.conftest import Tenant, TenantFactory
from tests.dnsserver import LocalDnsServer

TIMEOUT = 0.25  # per attempt; a lookup gives up after twice that
DOMAIN = "example.test"
ID = re.compile(r"^[0-9a-f]{20}$")

dns_server = dnsserver.fixture()


@pytest.fixture(autouse=True)
def _loopback_dns_only(monkeypatch: pytest.MonkeyPatch) -> None:
    dnsserver.forbid_other_dns(monkeypatch)


@pytest.fixture
def sending(services: Services, dns_server: LocalDnsServer) -> Iterator[SendingDomainService]:
    """The application's own service, asking the test's DNS server for this test."""
    service = services.sending_domains
    before = service.resolver
    service.resolver = DnsResolver(dns_server.servers, timeout=TIMEOUT)
    yield service
    service.resolver = before


def account_client(app: FastAPI, tenant: Tenant, account: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=f"http://testserver/api/v0.1/{account or tenant.handle}",
        headers={"Authorization": f"Bearer {tenant.key}"},
    )


@pytest.fixture
async def client(shared_app: FastAPI, tenant: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    async with account_client(shared_app, tenant) as http:
        yield http


def expect(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json() if response.content else None


def records(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {record["purpose"]: record for record in body["dns_records"]}


def checks(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["purpose"]: check for check in body["checks"]}


def publish(server: LocalDnsServer, body: dict[str, Any], *, spf: str | None = None) -> None:
    """Put the records the API asked for into the zone, as a customer would."""
    wanted = records(body)
    server.zone[wanted["dkim"]["name"]] = {"TXT": [wanted["dkim"]["value"]]}
    server.zone[wanted["spf"]["name"]] = {"TXT": [spf or wanted["spf"]["value"]]}
    server.zone[wanted["return_path"]["name"]] = {"CNAME": [wanted["return_path"]["value"]]}


async def stored_row(services: Services, domain_id: str) -> SendingDomain:
    async with services.db.read() as session:
        row = await session.get(SendingDomain, domain_id)
        assert row is not None
        return row


def p_value(body: dict[str, Any]) -> str:
    value = records(body)["dkim"]["value"]
    match = re.fullmatch(r"v=DKIM1; k=rsa; p=([A-Za-z0-9+/=]+)", value)
    assert match, value
    return match.group(1)


# -- creating ---------------------------------------------------------------------------


async def test_create_answers_with_the_three_records(
    client: httpx.AsyncClient, services: Services
) -> None:
    body = expect(await client.post("/sending_domains", json={"domain": "Example.TEST"}), 201)
    policy = services.sending_domains.policy
    assert ID.match(body["id"])
    assert body["domain"] == DOMAIN
    assert re.fullmatch(r"mm[0-9a-f]{8}", body["selector"]), body["selector"]
    assert [r["purpose"] for r in body["dns_records"]] == ["dkim", "spf", "return_path"]
    wanted = records(body)
    assert wanted["dkim"]["type"] == "TXT"
    assert wanted["dkim"]["name"] == f"{body['selector']}._domainkey.{DOMAIN}"
    assert wanted["spf"] == {
        "purpose": "spf",
        "type": "TXT",
        "name": DOMAIN,
        "value": f"v=spf1 {policy.spf_mechanism} ~all",
    }
    assert wanted["return_path"] == {
        "purpose": "return_path",
        "type": "CNAME",
        "name": f"{policy.return_path_prefix}.{DOMAIN}",
        "value": policy.target,
    }
    assert body["verified"] is False
    assert body["verified_at"] is None and body["checked_at"] is None
    assert body["checks"] == []
    assert expect(await client.get(f"/sending_domains/{body['id']}"), 200) == body


async def test_the_dkim_key_is_rsa_2048_and_matches_the_stored_private_key(
    client: httpx.AsyncClient, services: Services
) -> None:
    body = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    public = serialization.load_der_public_key(base64.b64decode(p_value(body)))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048

    row = await stored_row(services, body["id"])
    assert row.dkim_public_key == p_value(body)
    private = serialization.load_pem_private_key(row.dkim_private_key.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()
    signed = private.sign(b"proof", padding.PKCS1v15(), SHA256())
    public.verify(signed, b"proof", padding.PKCS1v15(), SHA256())  # raises if it does not match

    # What the gateway will do with it: a DKIM signature that verifies against the record.
    message = b"From: a@example.test\r\nTo: b@other.test\r\nSubject: hi\r\n\r\nHello.\r\n"
    selector = body["selector"].encode()
    signature = dkim.sign(message, selector, DOMAIN.encode(), row.dkim_private_key.encode())
    record = records(body)["dkim"]["value"].encode()

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name == selector + b"._domainkey." + DOMAIN.encode() + b"." else None

    assert dkim.verify(signature + message, dnsfunc=dnsfunc)


async def test_the_private_key_is_in_no_response(
    client: httpx.AsyncClient, services: Services, sending: SendingDomainService
) -> None:
    texts = [(await client.post("/sending_domains", json={"domain": DOMAIN})).text]
    domain_id = re.search(r'"id":"([0-9a-f]{20})"', texts[0])
    assert domain_id
    texts += [
        (await client.get("/sending_domains")).text,
        (await client.get(f"/sending_domains/{domain_id[1]}")).text,
        (await client.post(f"/sending_domains/{domain_id[1]}/verify")).text,
    ]
    pem = (await stored_row(services, domain_id[1])).dkim_private_key
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    numbers = private.private_numbers()
    secrets = [n.to_bytes((n.bit_length() + 7) // 8, "big") for n in (numbers.d, numbers.p)]
    # The PEM starts with the modulus, which is public; past it come the secrets.
    key_body = "".join(pem.splitlines()[1:-1])
    assert len(key_body) > 1500
    for text in texts:
        assert "PRIVATE" not in text.upper()
        for start in range(400, len(key_body) - 40, 40):
            assert key_body[start : start + 40] not in text
        for token in re.findall(r"[A-Za-z0-9+/]{100,}", text):
            decoded = base64.b64decode(token[: len(token) // 4 * 4])
            assert not any(secret[:32] in decoded for secret in secrets)


async def test_idn_domain_and_chosen_selector(client: httpx.AsyncClient) -> None:
    body = expect(
        await client.post("/sending_domains", json={"domain": "bücher.example", "selector": "S1"}),
        201,
    )
    assert body["domain"] == "bücher.example"
    assert body["selector"] == "s1"
    assert records(body)["dkim"]["name"] == "s1._domainkey.xn--bcher-kva.example"
    assert records(body)["spf"]["name"] == "xn--bcher-kva.example"
    # The A-label form is the same domain.
    expect(await client.post("/sending_domains", json={"domain": "XN--BCHER-KVA.example."}), 409)


@pytest.mark.parametrize(
    "payload",
    [
        {"domain": "not a domain"},
        {"domain": "localhost"},
        {"domain": "-bad.example"},
        {"domain": "*.example.test"},
        {"domain": ""},
        {"domain": "x" * 64 + ".example"},
        {"domain": DOMAIN, "selector": "bad_selector"},
        {"domain": DOMAIN, "selector": "-x"},
        {"domain": DOMAIN, "selector": ""},
        {"selector": "s1"},
    ],
)
async def test_invalid_input_is_400(client: httpx.AsyncClient, payload: dict[str, str]) -> None:
    body = expect(await client.post("/sending_domains", json=payload), 400)
    assert body["code"] == 400 and body["message"]
    assert expect(await client.get("/sending_domains"), 200) == []


async def test_the_same_domain_twice_is_409_but_another_customer_may_add_it(
    client: httpx.AsyncClient, shared_app: FastAPI, make_tenant: TenantFactory
) -> None:
    first = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    again = expect(await client.post("/sending_domains", json={"domain": "EXAMPLE.test."}), 409)
    assert DOMAIN in again["message"]
    other = await make_tenant("globex")
    async with account_client(shared_app, other) as globex:
        theirs = expect(await globex.post("/sending_domains", json={"domain": DOMAIN}), 201)
    assert theirs["id"] != first["id"]
    assert p_value(theirs) != p_value(first)
    assert theirs["selector"] != first["selector"]  # both can publish their keys at once


async def test_concurrent_adds_of_one_domain_make_one(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(client.post("/sending_domains", json={"domain": DOMAIN}) for _ in range(3))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409]
    assert len(expect(await client.get("/sending_domains"), 200)) == 1


# -- isolation and authentication -------------------------------------------------------


async def test_another_customers_domain_is_404_and_not_listed(
    client: httpx.AsyncClient,
    shared_app: FastAPI,
    make_tenant: TenantFactory,
    sending: SendingDomainService,
) -> None:
    mine = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    other = await make_tenant("globex")
    async with account_client(shared_app, other) as globex:
        theirs = expect(await globex.post("/sending_domains", json={"domain": "globex.test"}), 201)
        assert [d["id"] for d in expect(await globex.get("/sending_domains"), 200)] == [
            theirs["id"]
        ]
        for method, path in [
            ("GET", f"/sending_domains/{mine['id']}"),
            ("POST", f"/sending_domains/{mine['id']}/verify"),
            ("DELETE", f"/sending_domains/{mine['id']}"),
        ]:
            body = expect(await globex.request(method, path), 404)
            assert mine["id"] in body["message"]
    assert [d["id"] for d in expect(await client.get("/sending_domains"), 200)] == [mine["id"]]
    expect(await client.get(f"/sending_domains/{mine['id']}"), 200)
    expect(await client.get(f"/sending_domains/{'0' * 20}"), 404)
    expect(await client.get("/sending_domains/not-an-id"), 400)


async def test_wrong_account_is_403_and_no_key_401(
    shared_app: FastAPI, tenant: Tenant, make_tenant: TenantFactory
) -> None:
    await make_tenant("globex")
    async with account_client(shared_app, tenant, account="globex") as wrong:
        expect(await wrong.get("/sending_domains"), 403)
        expect(await wrong.post("/sending_domains", json={"domain": DOMAIN}), 403)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=shared_app),
        base_url=f"http://testserver/api/v0.1/{tenant.handle}",
    ) as anonymous:
        expect(await anonymous.get("/sending_domains"), 401)
    async with account_client(shared_app, tenant) as right:
        assert expect(await right.get("/sending_domains"), 200) == []


async def test_delete_then_404(client: httpx.AsyncClient) -> None:
    body = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    response = await client.delete(f"/sending_domains/{body['id']}")
    assert response.status_code == 204 and response.content == b""
    expect(await client.get(f"/sending_domains/{body['id']}"), 404)
    expect(await client.delete(f"/sending_domains/{body['id']}"), 404)
    assert expect(await client.get("/sending_domains"), 200) == []
    expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)  # again


# -- verification -------------------------------------------------------------------------


async def test_verify_before_publishing_fails_every_check(
    client: httpx.AsyncClient, sending: SendingDomainService, dns_server: LocalDnsServer
) -> None:
    body = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    result = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    assert result["verified"] is False and result["verified_at"] is None
    assert result["checked_at"] is not None
    assert [c["purpose"] for c in result["checks"]] == ["dkim", "spf", "return_path"]
    for check in result["checks"]:
        assert check["ok"] is False and check["found"] == [], check
    found = checks(result)
    assert found["dkim"]["detail"] == f"no TXT record at {records(body)['dkim']['name']}"
    assert "no SPF record" in found["spf"]["detail"]
    assert "no CNAME record" in found["return_path"]["detail"]
    # The test's server was asked (so no other resolver was).
    asked = {name for name, _type in dns_server.queries}
    assert {r["name"] for r in body["dns_records"]} <= asked
    assert expect(await client.get(f"/sending_domains/{body['id']}"), 200) == result


async def test_verify_after_publishing(
    client: httpx.AsyncClient, sending: SendingDomainService, dns_server: LocalDnsServer
) -> None:
    body = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    publish(dns_server, body)
    # Other TXT records at the domain are no concern; the CNAME may differ in case and end
    # in a dot.
    dns_server.zone[DOMAIN]["TXT"].append("google-site-verification=abc")
    rp = records(body)["return_path"]
    dns_server.zone[rp["name"]] = {"CNAME": [rp["value"].upper() + "."]}

    result = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    assert result["verified"] is True, result["checks"]
    assert result["verified_at"] is not None
    assert all(c["ok"] for c in result["checks"])
    found = checks(result)
    assert found["dkim"]["found"] == [records(body)["dkim"]["value"]]
    assert found["spf"]["found"] == [records(body)["spf"]["value"]]
    assert found["return_path"]["found"] == [rp["value"]]
    assert result["dns_records"] == body["dns_records"]

    again = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    assert again["verified_at"] == result["verified_at"]  # since when, not the last time
    assert again["checked_at"] >= result["checked_at"]
    listed = expect(await client.get("/sending_domains"), 200)
    assert [d["verified"] for d in listed] == [True]


async def test_a_dkim_record_split_into_strings_verifies(
    client: httpx.AsyncClient, sending: SendingDomainService, dns_server: LocalDnsServer
) -> None:
    body = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    publish(dns_server, body)
    key = p_value(body)
    split = ["v=DKIM1; k=rsa; p=" + key[:100], " " + key[100:250] + " ", key[250:]]
    dns_server.zone[records(body)["dkim"]["name"]] = {"TXT": [split]}
    result = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    assert checks(result)["dkim"]["ok"] is True, checks(result)["dkim"]
    assert result["verified"] is True


async def test_a_wrong_key_or_cname_target_fails(
    client: httpx.AsyncClient, sending: SendingDomainService, dns_server: LocalDnsServer
) -> None:
    body = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    publish(dns_server, body)
    other = expect(await client.post("/sending_domains", json={"domain": "other.test"}), 201)
    dkim_name = records(body)["dkim"]["name"]
    dns_server.zone[dkim_name] = {"TXT": [records(other)["dkim"]["value"]]}
    rp_name = records(body)["return_path"]["name"]
    dns_server.zone[rp_name] = {"CNAME": ["bounces.elsewhere.test"]}
    result = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    assert result["verified"] is False
    found = checks(result)
    assert found["dkim"]["ok"] is False
    assert "does not hold this domain's public key" in found["dkim"]["detail"]
    assert found["dkim"]["found"] == [records(other)["dkim"]["value"]]
    assert found["spf"]["ok"] is True
    assert found["return_path"]["ok"] is False
    assert found["return_path"]["found"] == ["bounces.elsewhere.test"]
    assert "not for" in found["return_path"]["detail"]


async def test_two_spf_records_are_not_verified(
    client: httpx.AsyncClient, sending: SendingDomainService, dns_server: LocalDnsServer
) -> None:
    body = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    publish(dns_server, body)
    ours = records(body)["spf"]["value"]
    dns_server.zone[DOMAIN]["TXT"] = [ours, "v=spf1 include:_spf.mailer.test -all"]
    result = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    assert result["verified"] is False
    spf = checks(result)["spf"]
    assert spf["ok"] is False
    assert sorted(spf["found"]) == sorted([ours, "v=spf1 include:_spf.mailer.test -all"])
    assert "2 SPF records" in spf["detail"] and "permerror" in spf["detail"]
    assert checks(result)["dkim"]["ok"] and checks(result)["return_path"]["ok"]


async def test_an_existing_spf_record_gets_the_mechanism_added(
    client: httpx.AsyncClient, sending: SendingDomainService, dns_server: LocalDnsServer
) -> None:
    mechanism = sending.policy.spf_mechanism
    body = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    publish(dns_server, body, spf="v=spf1 mx include:_spf.mailer.test -all")
    result = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    spf = checks(result)["spf"]
    assert spf["ok"] is False and f"does not contain {mechanism}" in spf["detail"]
    merged = f"v=spf1 mx include:_spf.mailer.test {mechanism} -all"
    assert records(result)["spf"]["value"] == merged  # publish this one instead

    dns_server.zone[DOMAIN]["TXT"] = [merged.replace(mechanism, "+" + mechanism.upper())]
    result = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    assert checks(result)["spf"]["ok"] is True
    assert result["verified"] is True


async def test_a_timeout_fails_that_check_with_200(
    client: httpx.AsyncClient, sending: SendingDomainService, dns_server: LocalDnsServer
) -> None:
    body = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    publish(dns_server, body)
    rp_name = records(body)["return_path"]["name"]
    dns_server.timeouts.add(rp_name)
    result = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    assert result["verified"] is False
    found = checks(result)
    assert found["dkim"]["ok"] and found["spf"]["ok"]
    assert found["return_path"]["ok"] is False
    assert found["return_path"]["found"] == []
    assert "lookup" in found["return_path"]["detail"]
    assert "failed" in found["return_path"]["detail"]
    assert rp_name in found["return_path"]["detail"]

    # A verified domain stays verified through a failed lookup; a missing record ends it.
    dns_server.timeouts.clear()
    verified = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    assert verified["verified"] is True
    dns_server.timeouts.add(records(body)["dkim"]["name"])
    still = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    assert still["verified"] is True and still["verified_at"] == verified["verified_at"]
    assert checks(still)["dkim"]["ok"] is False
    dns_server.timeouts.clear()
    del dns_server.zone[rp_name]
    gone = expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    assert gone["verified"] is False and gone["verified_at"] is None


async def test_verify_without_a_resolver_is_503(
    client: httpx.AsyncClient, services: Services
) -> None:
    body = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    service = services.sending_domains
    before = service.resolver
    service.resolver = None
    try:
        expect(await client.post(f"/sending_domains/{body['id']}/verify"), 503)
    finally:
        service.resolver = before


async def test_audit_trail(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    sending: SendingDomainService,
    dns_server: LocalDnsServer,
) -> None:
    body = expect(await client.post("/sending_domains", json={"domain": DOMAIN}), 201)
    expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    publish(dns_server, body)
    expect(await client.post(f"/sending_domains/{body['id']}/verify"), 200)
    expect(await client.delete(f"/sending_domains/{body['id']}"), 204)
    async with services.db.read() as session:
        events = list(
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.customer_id == tenant.customer_id)
                .order_by(AuditEvent.id)
            )
        )
    assert [e.action for e in events] == [
        "added sending domain",
        "sending domain not verified",
        "verified sending domain",
        "deleted sending domain",
    ]
    for event in events:
        assert DOMAIN in event.detail and body["id"] in event.detail
        assert event.actor.startswith("API key")
    assert "dkim failed" in events[1].detail


# -- production wiring ----------------------------------------------------------------------


def test_settings_derive_the_policy_from_the_smtp_host_name() -> None:
    settings = Settings(smtp_hostname="MX.Gateway.test.")
    assert settings.sending_policy == SendingPolicy(
        spf_mechanism="a:mx.gateway.test",
        return_path_prefix="mm-bounces",
        return_path_target="mx.gateway.test",
    )
    chosen = Settings(
        smtp_hostname="mx.gateway.test",
        sending_spf_mechanism="include:_spf.gateway.test",
        sending_return_path_prefix="Bounce",
        sending_return_path_target="bounces.gateway.test",
    ).sending_policy
    assert chosen.spf_default == "v=spf1 include:_spf.gateway.test ~all"
    assert (chosen.return_path_prefix, chosen.target) == ("bounce", "bounces.gateway.test")
    for bad in (
        {"sending_spf_mechanism": "~all"},
        {"sending_spf_mechanism": "a b"},
        {"sending_return_path_prefix": "a.b"},
        {"sending_return_path_target": "not a host"},
    ):
        with pytest.raises(ValidationError):
            Settings(smtp_hostname="mx.gateway.test", **bad)


async def test_open_services_verifies_through_the_configured_dns_servers(
    tmp_path: Path, dns_server: LocalDnsServer
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        smtp_hostname="mx.gateway.test",
        dns_servers=f"{dns_server.host}:{dns_server.port}",
        dns_timeout=TIMEOUT,
        rate_limit=0,
    )
    async with open_services(settings) as services:
        resolver = services.sending_domains.resolver
        assert isinstance(resolver, DnsResolver)
        assert resolver.servers == dns_server.servers
        customer = await services.customers.create("acme")
        key = (await services.keys.create(customer.id, "test")).token
        app = create_api(services, RateLimiter(0))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver/api/v0.1/acme",
            headers={"Authorization": f"Bearer {key}"},
        ) as http:
            body = expect(await http.post("/sending_domains", json={"domain": DOMAIN}), 201)
            assert records(body)["spf"]["value"] == "v=spf1 a:mx.gateway.test ~all"
            assert records(body)["return_path"] == {
                "purpose": "return_path",
                "type": "CNAME",
                "name": f"mm-bounces.{DOMAIN}",
                "value": "mx.gateway.test",
            }
            publish(dns_server, body)
            result = expect(await http.post(f"/sending_domains/{body['id']}/verify"), 200)
            assert result["verified"] is True, result["checks"]
