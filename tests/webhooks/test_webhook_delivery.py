"""One rich message through SMTP to a webhook in each format; the listener parses what
arrived the way a consumer would (json.loads, python-multipart) and checks every
documented field against what was sent."""

from __future__ import annotations

import base64
import hashlib
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailmoat.pipeline.auth import SenderAuthenticator
from mailmoat.pipeline.dns import DnsResolver
from tests import dnsserver
from tests.conftest import Tenant
from tests.dnsserver import LocalDnsServer
from tests.smtp.conftest import HOSTNAME, GatewayFactory
from tests.webhooks.conftest import (
    CLIENT_HELO,
    SENDER,
    Account,
    FormPart,
    Hit,
    Hooks,
    Listener,
    PosterFactory,
    converse,
    form_fields,
    simple_message,
)

dns_server = dnsserver.fixture()

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8ffff3f0005fe02fea7d6a4c40000000049454e44ae426082"
)
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) + b"\r\n.\r\n..\n%%EOF\n"
CSV = "Monat;Betrag\r\nMärz;12,50\n".encode()
PDF_NAME = "Rechnung März.pdf"
PLAIN = (
    "Hi Bob,\n\nthe invoice is attached. Grüße!\n\n"
    "On Sun, 22 Nov 2026 at 09:00, Bob <bob@example.com> wrote:\n"
    "> Could you send the invoice?\n"
)
REPLY = "Hi Bob,\n\nthe invoice is attached. Grüße!"
HTML = (
    '<html><body><p>Hi Bob, the invoice is attached. Grüße! <a href="http://192.0.2.7/pay">'
    'Pay</a></p><img src="cid:logo@sender.test"></body></html>\n'
)
SUBJECT = "Rechnung für März"
ORIGINAL_RECEIVED = (
    "from relay.sender.test (relay.sender.test [192.0.2.1]) by smtp.sender.test; "
    "Sun, 22 Nov 2026 09:59:00 +0000"
)


def rich_message(to: str) -> bytes:
    """Text and HTML, an inline image (Content-ID, no file name), two attachments."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["Received"] = ORIGINAL_RECEIVED
    msg["From"] = f"Alice <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = SUBJECT
    msg["Date"] = "Sun, 22 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<rich-1@sender.test>"
    msg["In-Reply-To"] = "<question-1@example.com>"
    msg["X-Tag"] = "one"
    msg["X-Tag"] = "two"
    msg.set_content(PLAIN)
    msg.add_alternative(HTML, subtype="html")
    html = msg.get_body(("html",))
    assert isinstance(html, EmailMessage)
    html.add_related(PNG, maintype="image", subtype="png", cid="<logo@sender.test>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename=PDF_NAME)
    msg.add_attachment(CSV, maintype="text", subtype="csv", filename="daten.csv")
    return msg.as_bytes()


# (file_name, content_type, disposition, content_id, content), in the order of the leaves
ATTACHMENTS = [
    ("part-3.png", "image/png", "inline", "<logo@sender.test>", PNG),
    (PDF_NAME, "application/pdf", "attachment", None, PDF),
    ("daten.csv", "text/csv", "attachment", None, CSV),
]


@pytest.fixture(autouse=True)
def _loopback_dns_only(monkeypatch: pytest.MonkeyPatch) -> None:
    dnsserver.forbid_other_dns(monkeypatch)


@pytest.fixture
async def authenticated(
    hooks: Hooks, make_gateway: GatewayFactory, dns_server: LocalDnsServer
) -> Hooks:
    """The gateway checks SPF against a DNS server on loopback that authorises 127.0.0.1."""
    dns_server.zone["sender.test"] = {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]}
    resolver = DnsResolver([("127.0.0.1", dns_server.port)], timeout=1.0)
    hooks.gateway = await make_gateway(authenticator=SenderAuthenticator(resolver, HOSTNAME))
    return hooks


async def kept_bytes(tenant: Tenant, message_id: str) -> bytes:
    """The message as mailmoat kept it, from the inbound API."""
    response = await tenant.client.get(f"/messages/{message_id}/raw")
    assert response.status_code == 200, response.text
    return response.content


async def deliver(hooks: Hooks, target_format: str, **fields: Any) -> tuple[bytes, Hit, str, str]:
    """Send the rich message to a new address in ``target_format``; returns what was
    sent, the one request, the address and the status id (checked against each other)."""
    address = await hooks.address(f"/{target_format}", target_format=target_format, **fields)
    email = address["email"]
    sent = rich_message(email)
    transcript = await hooks.send(sent, email)
    assert transcript.rcpt == [(250, "2.1.5 Recipient OK")]
    assert transcript.data_code == 250, transcript
    [hit] = await hooks.listener.wait_for(1)
    assert hit.method == "POST" and hit.path == f"/{target_format}"
    status_id = hit.header("X-Mailmoat-Id")
    assert status_id is not None and re.fullmatch("[0-9a-f]{32}", status_id)
    assert transcript.data_text == f"2.0.0 Ok: delivered to the webhook as {status_id}"
    status = await hooks.account.status(status_id)
    assert status["address_id"] == address["id"]
    assert (status["status"], status["status_category"]) == (200, "successful")
    assert status["subject"] == SUBJECT and status["from"] == SENDER
    return sent, hit, email, status_id


def check_envelope(envelope: dict[str, Any], email: str, status_id: str, kept: bytes) -> None:
    assert envelope["to"] == email
    assert envelope["recipients"] == [email]
    assert envelope["from"] == SENDER
    assert envelope["helo_domain"] == CLIENT_HELO
    assert envelope["remote_ip"] == "127.0.0.1"
    assert envelope["spf"] == {"result": "pass", "domain": "sender.test"}
    assert envelope["tls"] is False
    assert envelope["tls_cipher"] is None
    assert envelope["md5"] == hashlib.md5(kept).hexdigest()
    mailmoat = envelope["mailmoat"]
    assert set(mailmoat) == {"message_id", "verdict", "score", "rules", "authentication_results"}
    assert mailmoat["message_id"] == status_id
    assert mailmoat["verdict"] in ("ham", "spam")
    assert isinstance(mailmoat["score"], float)
    assert isinstance(mailmoat["rules"], list)
    for rule in mailmoat["rules"]:
        assert set(rule) == {"name", "score", "description"}
        assert isinstance(rule["name"], str) and isinstance(rule["score"], float)
    # the bare-IP link of the HTML part fires a heuristic rule
    assert {"name": "URL_IP_HOST", "score": 1.5, "description": "Link to a bare IP address"} in (
        mailmoat["rules"]
    )
    assert mailmoat["score"] >= 1.5
    results = mailmoat["authentication_results"]
    assert isinstance(results, str) and results.startswith(HOSTNAME)
    assert "spf=pass" in results and "smtp.mailfrom=" in results
    spamd = envelope["spamd"]
    assert set(spamd) == {"score", "success", "symbols", "description"}
    assert isinstance(spamd["score"], str) and float(spamd["score"]) == pytest.approx(
        mailmoat["score"], abs=0.001
    )
    assert spamd["success"] is True
    assert spamd["symbols"] == [rule["name"] for rule in mailmoat["rules"]]
    assert isinstance(spamd["description"], str) and "rule name" in spamd["description"]
    assert " 1.5 URL_IP_HOST" in spamd["description"]


def check_headers(headers: dict[str, Any], email: str) -> None:
    for name, value in headers.items():
        assert name == name.lower() and "-" not in name, name
        assert isinstance(value, str) or all(isinstance(v, str) for v in value), (name, value)
    assert headers["subject"] == SUBJECT
    assert headers["from"] == f"Alice <{SENDER}>"
    assert headers["to"] == email
    assert headers["message_id"] == "<rich-1@sender.test>"
    assert headers["in_reply_to"] == "<question-1@example.com>"
    assert headers["mime_version"] == "1.0"
    assert headers["content_type"].startswith("multipart/mixed;")
    assert headers["x_tag"] == ["one", "two"]
    ours, theirs = headers["received"]  # topmost (mailmoat's) first
    assert ours.startswith(f"from {CLIENT_HELO} ([127.0.0.1]) by {HOSTNAME} (mailmoat)")
    assert theirs == ORIGINAL_RECEIVED
    assert isinstance(headers["authentication_results"], str)


async def test_json_normalised(authenticated: Hooks, tenant: Tenant) -> None:
    sent, hit, email, status_id = await deliver(authenticated, "json+n")
    assert hit.content_type == "application/json"
    document = hit.json()
    assert set(document) == {"headers", "envelope", "plain", "html", "reply_plain", "attachments"}
    kept = await kept_bytes(tenant, status_id)
    assert kept.endswith(sent)
    check_envelope(document["envelope"], email, status_id, kept)
    check_headers(document["headers"], email)
    assert document["plain"] == PLAIN
    assert document["html"] == HTML
    assert document["reply_plain"] == REPLY
    got = document["attachments"]
    assert [
        (a["file_name"], a["content_type"], a["disposition"], a["content_id"]) for a in got
    ] == [expected[:4] for expected in ATTACHMENTS]
    for attachment, (*_, content) in zip(got, ATTACHMENTS, strict=True):
        assert set(attachment) == {
            "file_name",
            "content_type",
            "size",
            "disposition",
            "content_id",
            "content",
        }
        assert attachment["size"] == str(len(content))  # a string, as CloudMailin sends it
        assert re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", attachment["content"])  # no line breaks
        assert base64.b64decode(attachment["content"], validate=True) == content


def unflatten_headers(fields: dict[str, str]) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    for name, value in fields.items():
        found = re.fullmatch(r"headers\[([^\]]+)\](?:\[(\d+)\])?", name)
        if found is None:
            continue
        key, index = found.groups()
        if index is None:
            assert key not in headers, name
            headers[key] = value
        else:
            headers.setdefault(key, []).append(value)
            assert len(headers[key]) == int(index) + 1, name
    return headers


def envelope_of(fields: dict[str, str]) -> dict[str, Any]:
    """The envelope fields of form data, back in the shape of the JSON document."""
    f = fields
    rules = []
    index = 0
    while f"envelope[mailmoat][rules][{index}][name]" in f:
        prefix = f"envelope[mailmoat][rules][{index}]"
        rules.append(
            {
                "name": f[f"{prefix}[name]"],
                "score": float(f[f"{prefix}[score]"]),
                "description": f[f"{prefix}[description]"],
            }
        )
        index += 1
    symbols = [
        f[f"envelope[spamd][symbols][{i}]"]
        for i in range(len(rules))
        if f"envelope[spamd][symbols][{i}]" in f
    ]
    assert f["envelope[tls]"] in ("true", "false"), f["envelope[tls]"]
    assert f["envelope[spamd][success]"] == "true"
    return {
        "to": f["envelope[to]"],
        "recipients": [
            f[name] for name in sorted(n for n in f if n.startswith("envelope[recipients]["))
        ],
        "from": f["envelope[from]"],
        "helo_domain": f["envelope[helo_domain]"],
        "remote_ip": f["envelope[remote_ip]"],
        "spf": {"result": f["envelope[spf][result]"], "domain": f["envelope[spf][domain]"]},
        "tls": f["envelope[tls]"] == "true",
        "tls_cipher": f.get("envelope[tls_cipher]"),  # a null is left out
        "md5": f["envelope[md5]"],
        "spamd": {
            "score": f["envelope[spamd][score]"],
            "success": True,
            "symbols": symbols,
            "description": f["envelope[spamd][description]"],
        },
        "mailmoat": {
            "message_id": f["envelope[mailmoat][message_id]"],
            "verdict": f["envelope[mailmoat][verdict]"],
            "score": float(f["envelope[mailmoat][score]"]),
            "rules": rules,
            "authentication_results": f["envelope[mailmoat][authentication_results]"],
        },
    }


async def test_multipart_normalised(authenticated: Hooks, tenant: Tenant) -> None:
    sent, hit, email, status_id = await deliver(authenticated, "multipart+n")
    assert hit.content_type.startswith("multipart/form-data; boundary=")
    parts = hit.form()
    fields = form_fields(parts)
    text_parts = [p for p in parts if p.file_name is None]
    assert all(p.content_type is None for p in text_parts)  # as in CloudMailin's example
    assert [p.name for p in text_parts[:3]] == ["plain", "html", "reply_plain"]
    assert fields["plain"] == PLAIN
    assert fields["html"] == HTML
    assert fields["reply_plain"] == REPLY
    kept = await kept_bytes(tenant, status_id)
    assert kept.endswith(sent)
    check_headers(unflatten_headers(fields), email)
    check_envelope(envelope_of(fields), email, status_id, kept)
    files = [p for p in parts if p.file_name is not None]
    assert [p.name for p in files] == ["attachments[]"] * len(ATTACHMENTS)
    assert parts[-len(files) :] == files  # the files come last
    for index, (part, (name, content_type, disposition, cid, content)) in enumerate(
        zip(files, ATTACHMENTS, strict=True)
    ):
        assert (part.file_name, part.content_type, part.value) == (name, content_type, content)
        prefix = f"envelope[mailmoat][attachments][{index}]"
        assert fields[f"{prefix}[file_name]"] == name
        assert fields[f"{prefix}[content_type]"] == content_type
        assert fields[f"{prefix}[size]"] == str(len(content))
        assert fields[f"{prefix}[disposition]"] == disposition
        assert fields.get(f"{prefix}[content_id]") == cid
    assert f"envelope[mailmoat][attachments][{len(files)}][file_name]" not in fields


async def test_raw(authenticated: Hooks, tenant: Tenant) -> None:
    sent, hit, email, status_id = await deliver(authenticated, "raw")
    parts = hit.form()
    message: FormPart = parts[0]
    assert (message.name, message.file_name, message.content_type) == ("message", None, None)
    kept = message.value
    assert kept == await kept_bytes(tenant, status_id)
    # mailmoat's own fields on top, then the original bytes unchanged
    assert kept.startswith(f"Received: from {CLIENT_HELO} ([127.0.0.1]) by {HOSTNAME}".encode())
    assert kept.endswith(sent)
    added = kept[: -len(sent)].decode("ascii")
    names = [line.split(":", 1)[0] for line in added.split("\r\n") if line and line[0] != "\t"]
    names = [n for n in names if not n.startswith(" ")]
    assert names == ["Received", "Authentication-Results"], added
    unfolded = re.sub(r"\r\n[ \t]+", " ", added)
    assert f"id {status_id} for <{email}>;" in unfolded, unfolded
    fields = form_fields(parts[1:])
    assert all(name.startswith("envelope[") for name in fields), sorted(fields)
    assert not any("[attachments]" in name for name in fields)
    assert all(p.file_name is None for p in parts)
    check_envelope(envelope_of(fields), email, status_id, kept)


async def test_unscanned_mail_has_no_spamd(hooks: Hooks, make_gateway: GatewayFactory) -> None:
    """Without a scanner the verdict is "unscanned": no spamd object, score null."""
    hooks.gateway = await make_gateway(scanner=None)
    address = await hooks.address()
    transcript = await hooks.send(simple_message(), address["email"])
    assert transcript.data_code == 250, transcript
    [hit] = await hooks.listener.wait_for(1)
    envelope = hit.json()["envelope"]
    assert "spamd" not in envelope
    assert envelope["mailmoat"]["verdict"] == "unscanned"
    assert envelope["mailmoat"]["score"] is None
    assert envelope["mailmoat"]["authentication_results"] is None  # no authenticator
    assert envelope["spf"]["result"] == "none"


async def test_tls_is_reported(
    make_gateway: GatewayFactory,
    listener: Listener,
    account: Account,
    make_poster: PosterFactory,
    private_targets: None,
    certificate: tuple[Path, Path],
) -> None:
    """Mail sent after STARTTLS says tls: true (a JSON boolean, "true" in form data)."""
    cert, key = certificate
    gateway = await make_gateway(tls_cert=cert, tls_key=key)
    make_poster()
    json_address = await account.create_address(listener.url("/json"), target_format="json+n")
    form_address = await account.create_address(listener.url("/form"), target_format="multipart+n")
    for address in (json_address, form_address):
        transcript = await converse(
            gateway.port, simple_message(), [address["email"]], starttls=True
        )
        assert transcript.data_code == 250, transcript
    json_hit, form_hit = await listener.wait_for(2)
    envelope = json_hit.json()["envelope"]
    assert envelope["tls"] is True
    assert envelope["tls_cipher"] is None or isinstance(envelope["tls_cipher"], str)
    assert form_fields(form_hit.form())["envelope[tls]"] == "true"
