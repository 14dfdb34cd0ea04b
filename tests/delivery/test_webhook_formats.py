"""Webhook bodies in CloudMailin's formats: JSON normalised, multipart normalised, raw.

Every body is parsed back (json.loads; multipart with a small parser of this file and
with python-multipart, the parser FastAPI/Starlette consumers use) and checked field by
field, against CloudMailin's published samples where they say something.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from dataclasses import dataclass, replace
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import python_multipart
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.delivery.webhook_formats import (
    FiredRule,
    PostBody,
    TargetFormat,
    WebhookEnvelope,
    build_post,
    json_normalised,
    reply_plain,
)

SAMPLES = Path("/work/shared/reference/cloudmailin-samples")
JSON_SAMPLES = sorted(
    {"cm_docs_json_normalized.json", "cm_go_sdk_fixture_post.json"}
    | ({path.name for path in SAMPLES.glob("*.json")} if SAMPLES.is_dir() else set())
)
MULTIPART_SAMPLE = SAMPLES / "cm_docs_multipart_normalized.body"
MULTIPART_SAMPLE_TYPE = "multipart/form-data; boundary=----cloudmailinboundry"

ENVELOPE = WebhookEnvelope(
    recipients=("bob@example.com", "carol@example.com"),
    sender="alice@example.org",
    helo_domain="mail.example.org",
    remote_ip="192.0.2.10",
    spf_result="pass",
    spf_domain="example.org",
    tls=True,
    tls_cipher="TLSv1.3",
    message_id="0123456789abcdef0123456789abcdef",
    verdict="spam",
    score=6.2,
    rules=(
        FiredRule("BAYES_99", 3.5, "Bayes spam probability is 99 to 100%"),
        FiredRule("URIBL_BLACK", 2.7, "Contains an URL listed in the URIBL blacklist"),
    ),
    authentication_results="mx.gateway.test; spf=pass smtp.mailfrom=alice@example.org",
)
UNSCANNED = replace(
    ENVELOPE, verdict="unscanned", score=None, rules=(), authentication_results=None
)

# The rich message: text + HTML (multipart/alternative), an inline image in
# multipart/related, two attachments (one with an RFC 2231 UTF-8 file name).
PLAIN = (
    "Thanks, the numbers are attached. Grüße!\n"
    "\n"
    "-- \n"
    "Bob\n"
    "\n"
    "On Mon, 1 Jan 2026 at 10:00, Alice <alice@example.org> wrote:\n"
    "> Could you send the numbers?\n"
)
REPLY = "Thanks, the numbers are attached. Grüße!"
HTML = '<p>Thanks, the numbers are attached. Grüße!</p><img src="cid:logo@example.com">\n'
SUBJECT = "Grüße aus Köln \u2013 März"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
PDF = b"%PDF-1.7\n" + bytes(range(255, -1, -1)) + b"\r\n%%EOF"
CSV = b"a;b\r\n1;2\n3;4\r"
PDF_NAME = "Rechnung März.pdf"
RECEIVED = [
    "from mx2.example.org (mx2.example.org [192.0.2.2])\tby mx.gateway.test with ESMTPS;"
    " Mon, 1 Jan 2026 10:00:02 +0000",
    "from client.example.org (client.example.org [192.0.2.1])  by mx2.example.org;"
    " Mon, 1 Jan 2026 10:00:01 +0000",
]
TRACE = (
    b"Received: from mx2.example.org (mx2.example.org [192.0.2.2])\r\n"
    b"\tby mx.gateway.test with ESMTPS; Mon, 1 Jan 2026 10:00:02 +0000\r\n"
    b"Received: from client.example.org (client.example.org [192.0.2.1])\r\n"
    b"  by mx2.example.org; Mon, 1 Jan 2026 10:00:01 +0000\r\n"
    b"X-Folded-Header: first part\r\n"
    b"\tsecond part\r\n"
    b"  third part\r\n"
)


def rich_message() -> bytes:
    message = EmailMessage()
    message["From"] = "Alice Example <alice@example.org>"
    message["To"] = "bob@example.com"
    message["Cc"] = "carol@example.com"
    message["Subject"] = SUBJECT
    message["Date"] = "Mon, 01 Jan 2026 10:00:00 +0000"
    message["Message-ID"] = "<m1@example.org>"
    message.set_content(PLAIN)
    message.add_alternative(HTML, subtype="html")
    alternatives = message.get_payload()
    assert isinstance(alternatives, list)
    html_part = alternatives[1]
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(
        PNG, "image", "png", cid="<logo@example.com>", disposition="inline", filename="logo.png"
    )
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename=PDF_NAME)
    message.add_attachment(CSV, maintype="text", subtype="csv", filename="numbers.csv")
    raw = TRACE + message.as_bytes(policy=policy.SMTP)
    # The test is only worth something if the message really is encoded this way.
    assert b"filename*=utf-8''Rechnung%20M%C3%A4rz.pdf" in raw
    assert re.search(rb"^Subject: =\?utf-8\?[qb]\?", raw, re.MULTILINE | re.IGNORECASE)
    assert b"multipart/related" in raw and b"multipart/alternative" in raw
    return raw


# --------------------------------------------------------------------------- form parsing


@dataclass(frozen=True)
class FormPart:
    name: str
    file_name: str | None
    content_type: str | None
    data: bytes


_DISPOSITION_PARAM = re.compile(r';\s*(name|filename)="([^"]*)"')


def _unescape(value: str) -> str:
    return value.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


def parse_form(content: bytes, content_type: str) -> list[FormPart]:
    """A strict multipart/form-data parser: every byte of the body is accounted for."""
    match = re.fullmatch(r"multipart/form-data; boundary=(\S+)", content_type)
    assert match, content_type
    delimiter = b"--" + match.group(1).encode("ascii")
    opening, closing = delimiter + b"\r\n", b"\r\n" + delimiter + b"--\r\n"
    assert content.startswith(opening)
    assert content.endswith(closing)
    parts = []
    for chunk in content[len(opening) : -len(closing)].split(b"\r\n" + delimiter + b"\r\n"):
        head, separator, data = chunk.partition(b"\r\n\r\n")
        assert separator, chunk[:200]
        headers = {}
        for line in head.decode("utf-8").split("\r\n"):
            key, colon, value = line.partition(":")
            assert colon, line
            headers[key.strip().lower()] = value.strip()
        disposition = headers.pop("content-disposition")
        assert disposition.startswith("form-data;"), disposition
        params = dict(_DISPOSITION_PARAM.findall(disposition))
        file_name = params.get("filename")
        parts.append(
            FormPart(
                _unescape(params["name"]),
                None if file_name is None else _unescape(file_name),
                headers.pop("content-type", None),
                data,
            )
        )
        assert not headers, headers
    return parts


def text_fields(parts: list[FormPart]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in parts:
        if part.file_name is None:
            assert part.name not in fields, f"duplicate field {part.name}"
            fields[part.name] = part.data.decode("utf-8")
    return fields


def python_multipart_form(post: PostBody) -> tuple[dict[str, bytes], list[tuple[str, str, bytes]]]:
    """The same body through python-multipart, as a FastAPI/Starlette consumer reads it."""
    fields: dict[str, bytes] = {}
    files: list[tuple[str, str, bytes]] = []

    def on_field(field: Any) -> None:
        fields[field.field_name.decode("utf-8")] = field.value or b""

    def on_file(file: Any) -> None:
        file.file_object.seek(0)
        files.append(
            (
                file.field_name.decode("utf-8"),
                file.file_name.decode("utf-8"),
                file.file_object.read(),
            )
        )

    python_multipart.parse_form(
        {"Content-Type": post.content_type.encode("ascii")},
        io.BytesIO(post.content),
        on_field,
        on_file,
    )
    return fields, files


def decode_json(post: PostBody) -> dict[str, Any]:
    assert post.content_type == "application/json"
    document = json.loads(post.content.decode("utf-8"))
    assert isinstance(document, dict)
    return document


# --------------------------------------------------------------------------- JSON normalised


def test_json_normalised_carries_every_field_of_a_rich_message() -> None:
    raw = rich_message()
    document = decode_json(build_post(TargetFormat.JSON, raw, ENVELOPE))
    assert document == json_normalised(raw, ENVELOPE)
    assert list(document) == ["headers", "envelope", "plain", "html", "reply_plain", "attachments"]

    assert document["plain"] == PLAIN
    assert document["html"] == HTML
    assert document["reply_plain"] == REPLY

    headers = document["headers"]
    for key, value in headers.items():
        assert key == key.lower() and "-" not in key, key
        values = value if isinstance(value, list) else [value]
        assert all(
            isinstance(item, str) and "\r" not in item and "\n" not in item for item in values
        )
    assert headers["received"] == RECEIVED
    assert headers["x_folded_header"] == "first part\tsecond part  third part"
    assert headers["subject"] == SUBJECT
    assert headers["from"] == "Alice Example <alice@example.org>"
    assert headers["to"] == "bob@example.com"
    assert headers["cc"] == "carol@example.com"
    assert headers["message_id"] == "<m1@example.org>"
    assert headers["mime_version"] == "1.0"
    assert headers["content_type"].startswith("multipart/mixed;")

    envelope = document["envelope"]
    assert envelope["to"] == "bob@example.com"
    assert envelope["recipients"] == ["bob@example.com", "carol@example.com"]
    assert envelope["from"] == "alice@example.org"
    assert envelope["helo_domain"] == "mail.example.org"
    assert envelope["remote_ip"] == "192.0.2.10"
    assert envelope["spf"] == {"result": "pass", "domain": "example.org"}
    assert envelope["tls"] is True
    assert envelope["tls_cipher"] == "TLSv1.3"
    assert envelope["md5"] == hashlib.md5(raw).hexdigest()
    spamd = envelope["spamd"]
    assert spamd["score"] == "6.2"
    assert spamd["success"] is True
    assert spamd["symbols"] == ["BAYES_99", "URIBL_BLACK"]
    assert isinstance(spamd["description"], str)
    assert "BAYES_99" in spamd["description"] and "URIBL_BLACK" in spamd["description"]
    assert envelope["mailmoat"] == {
        "message_id": "0123456789abcdef0123456789abcdef",
        "verdict": "spam",
        "score": 6.2,
        "rules": [
            {
                "name": "BAYES_99",
                "score": 3.5,
                "description": "Bayes spam probability is 99 to 100%",
            },
            {
                "name": "URIBL_BLACK",
                "score": 2.7,
                "description": "Contains an URL listed in the URIBL blacklist",
            },
        ],
        "authentication_results": "mx.gateway.test; spf=pass smtp.mailfrom=alice@example.org",
    }

    attachments = document["attachments"]
    assert [item["file_name"] for item in attachments] == ["logo.png", PDF_NAME, "numbers.csv"]
    expected = [
        ("image/png", "inline", "<logo@example.com>", PNG),
        ("application/pdf", "attachment", None, PDF),
        ("text/csv", "attachment", None, CSV),
    ]
    for item, (content_type, disposition, content_id, content) in zip(
        attachments, expected, strict=True
    ):
        assert set(item) == {
            "file_name",
            "content_type",
            "size",
            "disposition",
            "content_id",
            "content",
        }
        assert item["content_type"] == content_type
        assert item["disposition"] == disposition
        assert item["content_id"] == content_id
        assert item["size"] == str(len(content))  # a string, as CloudMailin's Go client wants
        assert base64.b64decode(item["content"], validate=True) == content


def test_json_without_scan_has_no_spamd_and_nulls_where_nothing_is_known() -> None:
    raw = b"From: a@example.org\r\nSubject: hi\r\n\r\nHello\r\n"
    document = decode_json(build_post("json+n", raw, replace(UNSCANNED, tls_cipher=None)))
    envelope = document["envelope"]
    assert "spamd" not in envelope
    assert envelope["tls_cipher"] is None
    assert envelope["mailmoat"] == {
        "message_id": ENVELOPE.message_id,
        "verdict": "unscanned",
        "score": None,
        "rules": [],
        "authentication_results": None,
    }
    assert document["plain"] == "Hello\n"
    assert document["html"] is None
    assert document["reply_plain"] is None  # not a reply: null, as CloudMailin sends it
    assert document["attachments"] == []


def test_json_null_sender_and_no_recipients() -> None:
    document = json_normalised(b"\r\nbody", replace(UNSCANNED, sender="", recipients=()))
    assert document["envelope"]["from"] == ""
    assert document["envelope"]["to"] == ""
    assert document["envelope"]["recipients"] == []


def test_spamd_score_is_a_string_in_spamd_style() -> None:
    for score, text in [(3.2, "3.2"), (5, "5.0"), (4.95, "4.95"), (-0.1, "-0.1"), (0.0, "0.0")]:
        document = json_normalised(b"\r\nx", replace(ENVELOPE, score=score))
        assert document["envelope"]["spamd"]["score"] == text
        assert document["envelope"]["mailmoat"]["score"] == score
    document = json_normalised(b"\r\nx", replace(ENVELOPE, score=float("nan")))
    assert "score" not in document["envelope"]["spamd"]
    assert document["envelope"]["mailmoat"]["score"] is None
    json.loads(build_post("json+n", b"\r\nx", replace(ENVELOPE, score=float("inf"))).content)


# --------------------------------------------------------------------------- CloudMailin samples


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    assert isinstance(value, dict)
    return "object"


# Where the notes say a string is safer than what a sample shows (the Go client decodes
# these with `,string` and fails on a number).
STRING_SAFER = {("attachment", "size"), ("spamd", "score")}
# Sample keys for features mailmoat does not offer.
NOT_OFFERED = {
    ("envelope", "store_url"): "attachment store",
    ("attachment", "scan"): "virus scanning",
    ("attachment", "url"): "attachment store",
}


def _check_level(level: str, sample: dict[str, Any], ours: list[dict[str, Any]]) -> list[str]:
    problems = []
    for key, value in sample.items():
        if (level, key) in NOT_OFFERED:
            continue
        wanted = "string" if (level, key) in STRING_SAFER else _json_type(value)
        present = [item[key] for item in ours if key in item]
        if len(present) != len(ours):
            problems.append(f"{level}.{key}: missing")
            continue
        types = {_json_type(item) for item in present} - {"null"}
        if types != {wanted}:
            problems.append(f"{level}.{key}: {sorted(types)} instead of {wanted}")
    return problems


@pytest.mark.parametrize("sample_name", JSON_SAMPLES)
def test_json_keys_and_types_match_cloudmailin_samples(sample_name: str) -> None:
    path = SAMPLES / sample_name
    if not path.is_file():
        pytest.skip(f"CloudMailin sample {path} is not available")
    sample = json.loads(path.read_text(encoding="utf-8"))
    ours = json_normalised(rich_message(), ENVELOPE)
    problems = _check_level("top", sample, [ours])
    problems += _check_level("envelope", sample["envelope"], [ours["envelope"]])
    for nested in ("spf", "spamd"):
        if nested in sample["envelope"]:
            problems += _check_level(nested, sample["envelope"][nested], [ours["envelope"][nested]])
    for attachment in sample.get("attachments", []):
        problems += _check_level("attachment", attachment, ours["attachments"])
    assert not problems, problems


def _raw_from_json_headers(headers: dict[str, Any], body: bytes, refold: bool = False) -> bytes:
    lines = []
    for key, value in headers.items():
        name = key.replace("_", "-")
        for item in value if isinstance(value, list) else [value]:
            if refold:  # put back the line breaks CloudMailin's unfolding removed
                item = item.replace("        ", "\r\n        ").replace("\t", "\r\n\t")
            lines.append(f"{name}: {item}\r\n".encode())
    return b"".join(lines) + b"\r\n" + body


def _sample(name: str) -> Any:
    path = SAMPLES / name
    if not path.is_file():
        pytest.skip(f"CloudMailin sample {path} is not available")
    return json.loads(path.read_text(encoding="utf-8"))


def _envelope_like(sample: dict[str, Any]) -> WebhookEnvelope:
    return replace(
        UNSCANNED,
        recipients=tuple(sample["recipients"]),
        sender=sample["from"],
        helo_domain=sample["helo_domain"],
        remote_ip=sample["remote_ip"],
        spf_result=sample["spf"]["result"],
        spf_domain=sample["spf"]["domain"],
        tls=sample["tls"],
        tls_cipher=sample.get("tls_cipher"),
    )


def test_json_reproduces_cloudmailins_documented_example() -> None:
    sample = _sample("cm_docs_json_normalized.json")
    boundary = b"------------090409040602000601080801"
    html = sample["html"].replace("\n", "\r\n").encode()
    body = b"".join(
        [
            b"--" + boundary + b"\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n\r\n",
            sample["plain"].encode() + b"\r\n",
            b"--" + boundary + b"\r\nContent-Type: text/html; charset=ISO-8859-1\r\n\r\n",
            html + b"\r\n",
            *(
                b"--" + boundary + b"\r\nContent-Type: text/plain\r\n"
                b'Content-Disposition: attachment; filename="file.txt"\r\n'
                b"Content-Transfer-Encoding: base64\r\n\r\ndGVzdGZpbGU=\r\n"
                for _ in range(2)
            ),
            b"--" + boundary + b"--\r\n",
        ]
    )
    raw = _raw_from_json_headers(sample["headers"], body)
    ours = json_normalised(raw, _envelope_like(sample["envelope"]))
    assert ours["headers"] == sample["headers"]
    assert ours["plain"] == sample["plain"]
    assert ours["html"] == sample["html"]
    for key, value in sample["envelope"].items():
        assert ours["envelope"][key] == value, key
    assert len(ours["attachments"]) == len(sample["attachments"])
    for item, expected in zip(ours["attachments"], sample["attachments"], strict=True):
        for key, value in expected.items():
            assert item[key] == (str(value) if key == "size" else value), key


def test_json_reproduces_the_fixture_of_cloudmailins_go_client() -> None:
    sample = _sample("cm_go_sdk_fixture_post.json")
    boundary = b"0000000000003f5df405a9eaf6b3"
    attachment = sample["attachments"][0]
    body = b"".join(
        [
            b"--" + boundary + b'\r\nContent-Type: text/plain; charset="UTF-8"\r\n\r\n',
            sample["plain"].replace("\n", "\r\n").encode() + b"\r\n",
            b"--" + boundary + b'\r\nContent-Type: text/html; charset="UTF-8"\r\n\r\n',
            sample["html"].replace("\n", "\r\n").encode() + b"\r\n",
            b"--" + boundary + b"\r\nContent-Type: image/png\r\n"
            b'Content-Disposition: attachment; filename="pixel.png"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b"Content-ID: " + attachment["content_id"].encode() + b"\r\n\r\n",
            attachment["content"].encode() + b"\r\n",
            b"--" + boundary + b"--\r\n",
        ]
    )
    raw = _raw_from_json_headers(sample["headers"], body, refold=True)
    assert b"\r\n        for <postman@cloudmailin.net>" in raw  # really folded
    envelope = replace(
        _envelope_like(sample["envelope"]),
        verdict="ham",
        score=2.5,
        rules=tuple(FiredRule(name, 0.0, "") for name in sample["envelope"]["spamd"]["symbols"]),
    )
    ours = json_normalised(raw, envelope)
    # CloudMailin unfolds by removing the CR LF only: the folding white space stays.
    assert ours["headers"] == sample["headers"]
    assert ours["plain"] == sample["plain"]
    assert ours["html"] == sample["html"]
    # CloudMailin keeps one trailing newline here; mailmoat trims the reply text.
    assert ours["reply_plain"] == sample["reply_plain"].rstrip()
    for key in ("to", "recipients", "from", "helo_domain", "remote_ip", "tls", "tls_cipher", "spf"):
        assert ours["envelope"][key] == sample["envelope"][key], key
    for key in ("score", "symbols", "success"):
        assert ours["envelope"]["spamd"][key] == sample["envelope"]["spamd"][key], key
    (item,) = ours["attachments"]
    for key in ("file_name", "content_type", "disposition", "content_id", "content"):
        assert item[key] == attachment[key], key


def test_multipart_names_and_values_match_cloudmailins_sample() -> None:
    if not MULTIPART_SAMPLE.is_file():
        pytest.skip(f"CloudMailin sample {MULTIPART_SAMPLE} is not available")
    sample_parts = parse_form(MULTIPART_SAMPLE.read_bytes(), MULTIPART_SAMPLE_TYPE)
    sample_fields = text_fields(sample_parts)

    # The message the sample describes, with the sample's headers in the sample's order.
    header_lines = []
    for name, value in sample_fields.items():
        match = re.fullmatch(r"headers\[(\w+)\](?:\[\d+\])?", name)
        if match:
            header_lines.append(f"{match.group(1).replace('_', '-')}: {value}\r\n".encode())
    body = b"".join(
        [
            b'Content-Type: multipart/mixed; boundary="mixed"\r\n\r\n',
            b'--mixed\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n',
            b"--alt\r\nContent-Type: text/plain\r\n\r\n",
            sample_fields["plain"].encode() + b"\r\n",
            b"--alt\r\nContent-Type: text/html\r\n\r\n",
            sample_fields["html"].encode() + b"\r\n--alt--\r\n",
            *(
                b"--mixed\r\nContent-Type: text/plain\r\n"
                b'Content-Disposition: attachment; filename="' + part.file_name.encode() + b'"'
                b"\r\n\r\n" + part.data + b"\r\n"
                for part in sample_parts
                if part.file_name is not None
            ),
            b"--mixed--\r\n",
        ]
    )
    raw = b"".join(header_lines) + body
    envelope = replace(
        UNSCANNED,
        recipients=(sample_fields["envelope[recipients][0]"],),
        sender=sample_fields["envelope[from]"],
        helo_domain=sample_fields["envelope[helo_domain]"],
        remote_ip=sample_fields["envelope[remote_ip]"],
        spf_result=sample_fields["envelope[spf][result]"],
        spf_domain=sample_fields["envelope[spf][domain]"],
        tls=sample_fields["envelope[tls]"] == "true",
        tls_cipher=None,
    )
    post = build_post(TargetFormat.MULTIPART, raw, envelope)
    parts = parse_form(post.content, post.content_type)
    ours = text_fields(parts)

    def lf(text: str) -> str:
        return text.replace("\r\n", "\n")

    # reply_plain is sent "if found"; this message is not a reply (see the rich test).
    missing = set(sample_fields) - set(ours) - {"reply_plain"}
    assert not missing, missing
    for name, value in sample_fields.items():
        if name != "reply_plain":
            assert lf(ours[name]) == lf(value), name
    sample_files = [
        (p.name, p.file_name, p.content_type, p.data) for p in sample_parts if p.file_name
    ]
    our_files = [(p.name, p.file_name, p.content_type, p.data) for p in parts if p.file_name]
    assert our_files == sample_files


# --------------------------------------------------------------------------- multipart normalised


def test_multipart_normalised_carries_every_field_of_a_rich_message() -> None:
    raw = rich_message()
    post = build_post("multipart+n", raw, ENVELOPE)
    parts = parse_form(post.content, post.content_type)
    fields = text_fields(parts)

    assert fields["plain"] == PLAIN
    assert fields["html"] == HTML
    assert fields["reply_plain"] == REPLY
    assert fields["headers[received][0]"] == RECEIVED[0]
    assert fields["headers[received][1]"] == RECEIVED[1]
    assert "headers[received]" not in fields and "headers[received][2]" not in fields
    assert fields["headers[x_folded_header]"] == "first part\tsecond part  third part"
    assert fields["headers[subject]"] == SUBJECT
    assert fields["headers[message_id]"] == "<m1@example.org>"
    assert fields["headers[content_type]"].startswith("multipart/mixed;")
    for name in fields:
        if name.startswith("headers["):
            assert re.fullmatch(r"headers\[[a-z0-9_.]+\](\[\d+\])?", name), name

    assert fields["envelope[to]"] == "bob@example.com"
    assert fields["envelope[recipients][0]"] == "bob@example.com"
    assert fields["envelope[recipients][1]"] == "carol@example.com"
    assert fields["envelope[from]"] == "alice@example.org"
    assert fields["envelope[helo_domain]"] == "mail.example.org"
    assert fields["envelope[remote_ip]"] == "192.0.2.10"
    assert fields["envelope[spf][result]"] == "pass"
    assert fields["envelope[spf][domain]"] == "example.org"
    assert fields["envelope[tls]"] == "true"
    assert fields["envelope[tls_cipher]"] == "TLSv1.3"
    assert fields["envelope[md5]"] == hashlib.md5(raw).hexdigest()
    assert fields["envelope[spamd][score]"] == "6.2"
    assert fields["envelope[spamd][success]"] == "true"
    assert fields["envelope[spamd][symbols][0]"] == "BAYES_99"
    assert fields["envelope[spamd][symbols][1]"] == "URIBL_BLACK"
    assert "BAYES_99" in fields["envelope[spamd][description]"]
    assert fields["envelope[mailmoat][message_id]"] == ENVELOPE.message_id
    assert fields["envelope[mailmoat][verdict]"] == "spam"
    assert fields["envelope[mailmoat][score]"] == "6.2"
    assert fields["envelope[mailmoat][rules][0][name]"] == "BAYES_99"
    assert fields["envelope[mailmoat][rules][0][score]"] == "3.5"
    assert fields["envelope[mailmoat][rules][1][description]"] == (
        "Contains an URL listed in the URIBL blacklist"
    )
    auth = fields["envelope[mailmoat][authentication_results]"]
    assert auth == ENVELOPE.authentication_results

    files = [part for part in parts if part.file_name is not None]
    assert [part.name for part in files] == ["attachments[]"] * 3
    assert [part.file_name for part in files] == ["logo.png", PDF_NAME, "numbers.csv"]
    assert [part.content_type for part in files] == ["image/png", "application/pdf", "text/csv"]
    assert [part.data for part in files] == [PNG, PDF, CSV]
    meta = "envelope[mailmoat][attachments]"
    assert fields[f"{meta}[0][content_id]"] == "<logo@example.com>"
    assert fields[f"{meta}[0][disposition]"] == "inline"
    assert fields[f"{meta}[1][disposition]"] == "attachment"
    assert f"{meta}[1][content_id]" not in fields
    assert fields[f"{meta}[1][file_name]"] == PDF_NAME
    assert fields[f"{meta}[1][size]"] == str(len(PDF))
    assert fields[f"{meta}[2][content_type]"] == "text/csv"

    # The same through python-multipart (what FastAPI/Starlette consumers use).
    pm_fields, pm_files = python_multipart_form(post)
    assert {name: value.decode("utf-8") for name, value in pm_fields.items()} == fields
    assert pm_files == [
        ("attachments[]", "logo.png", PNG),
        ("attachments[]", PDF_NAME, PDF),
        ("attachments[]", "numbers.csv", CSV),
    ]


def test_multipart_leaves_out_what_json_has_as_null() -> None:
    post = build_post(
        "multipart+n", b"Subject: x\r\n\r\nHello\r\n", replace(UNSCANNED, tls_cipher=None)
    )
    fields = text_fields(parse_form(post.content, post.content_type))
    assert fields["plain"] == "Hello\n"
    assert fields["envelope[tls]"] == "true"
    for absent in ("html", "reply_plain", "envelope[tls_cipher]", "envelope[mailmoat][score]"):
        assert absent not in fields
    assert not any(name.startswith(("envelope[spamd]", "attachments")) for name in fields)
    assert fields["envelope[mailmoat][verdict]"] == "unscanned"


def test_multipart_boundary_is_random_and_absent_from_the_content() -> None:
    raw = rich_message()
    first = build_post("multipart+n", raw, ENVELOPE)
    second = build_post("multipart+n", raw, ENVELOPE)
    assert first.content_type != second.content_type
    for post in (first, second):
        boundary = post.content_type.split("boundary=", 1)[1].encode()
        assert post.content.count(boundary) == len(parse_form(post.content, post.content_type)) + 1


def test_multipart_escapes_quotes_and_line_breaks_in_file_names() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="a \\"quoted\\" name.bin"\r\n\r\n'
        b"data\r\n--b--\r\n"
    )
    post = build_post("multipart+n", raw, UNSCANNED)
    assert b'filename="a %22quoted%22 name.bin"' in post.content
    (file_part,) = [part for part in parse_form(post.content, post.content_type) if part.file_name]
    assert file_part.file_name == 'a "quoted" name.bin'
    assert file_part.data == b"data"


# --------------------------------------------------------------------------- raw


RAW_8BIT = (
    b"Received: from client.example.org\r\n\tby mx.gateway.test; Mon, 1 Jan 2026 10:00:00 +0000\r\n"
    b"From: J\xfcrgen <j@example.org>\r\n"
    b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xfc\xdfe aus K\xf6ln\r\n"
    b"line with a bare LF\n"
    b"\x00\xff\xfe binary-ish\r\n"
    b"--mailmoat-looks-like-a-boundary\r\n"
    b"no final line break"
)


@pytest.mark.parametrize("raw", [RAW_8BIT, b"", None], ids=["8bit", "empty", "rich"])
def test_raw_message_round_trips_byte_for_byte(raw: bytes | None) -> None:
    raw = rich_message() if raw is None else raw
    post = build_post(TargetFormat.RAW, raw, ENVELOPE)
    parts = parse_form(post.content, post.content_type)
    assert parts[0] == FormPart("message", None, None, raw)  # a plain field, as CloudMailin's
    assert [part.name for part in parts].count("message") == 1
    fields = text_fields(parts[1:])
    multipart = text_fields(parse_form(*_body(build_post("multipart+n", raw, ENVELOPE))))
    assert fields == {
        name: value
        for name, value in multipart.items()
        if name.startswith("envelope[") and not name.startswith("envelope[mailmoat][attachments]")
    }
    assert fields["envelope[md5]"] == hashlib.md5(raw).hexdigest()
    assert fields["envelope[recipients][1]"] == "carol@example.com"
    pm_fields, pm_files = python_multipart_form(post)
    assert pm_fields["message"] == raw
    assert pm_files == []


def _body(post: PostBody) -> tuple[bytes, str]:
    return post.content, post.content_type


# --------------------------------------------------------------------------- reply_plain


@pytest.mark.parametrize(
    ("plain", "expected"),
    [
        ("Thanks!\n\nOn Mon, 1 Jan 2026 at 10:00, Alice <a@x> wrote:\n> hi\n", "Thanks!"),
        ("Thanks!\r\n\r\nOn Mon, 1 Jan 2026 at 10:00, Alice <a@x> wrote:\r\n> hi\r\n", "Thanks!"),
        (
            "Thanks!\nSee you.\n\n-- \nBob Example\nACME Corp\n\n"
            "On Mon, 1 Jan 2026 at 10:00, Alice <a@x> wrote:\n> hi\n",
            "Thanks!\nSee you.",
        ),
        ("Thanks!\n--\nBob\n\nOn Mon, 1 Jan 2026, Alice wrote:\n> hi\n", "Thanks!"),
        (
            "Yes.\n\nOn Mon, 1 Jan 2026 at 10:00, Alice Example <\nalice@example.org> wrote:\n\n"
            "> hi\n",
            "Yes.",
        ),
        (
            "Sounds good.\n\n-----Original Message-----\nFrom: Alice\nSent: Monday\nTo: Bob\n"
            "Subject: Numbers\n\nhi\n",
            "Sounds good.",
        ),
        (
            "Sounds good.\n\n________________________________\nFrom: Alice <a@x>\n"
            "Sent: Monday, January 1, 2026 10:00 AM\nTo: Bob\nSubject: Numbers\n\nhi\n",
            "Sounds good.",
        ),
        (
            "Sounds good.\n\nFrom: Alice <a@x>\nSent: Monday, January 1, 2026 10:00 AM\n"
            "To: Bob\nSubject: Numbers\n\nhi\n",
            "Sounds good.",
        ),
        (
            "Hey this looks great!\n\nOn 1st Jan, Alex wrote:\n> ### Reply Above This Line ###\n"
            "> Hey\n",
            "Hey this looks great!",
        ),
        ("New text\n### Reply above this line ###\nold text\n", "New text"),
        (
            "Test Content\n\n> On 08 Jul 2020 at 10:00, x@y wrote:\n> \n> Example\n> \n\n",
            "Test Content",
        ),
        ("Ok\n\nSent from my iPhone\n\n> On 1 Jan 2026, at 10:00, A <a@x> wrote:\n> hi\n", "Ok"),
        ("FYI\n\n---------- Forwarded message ---------\nFrom: A\n\nhi\n", "FYI"),
        ("Danke!\n\nAm Mo., 1. Jan. 2026 um 10:00 Uhr schrieb Alice <a@x>:\n> hallo\n", "Danke!"),
        ("Merci !\n\nLe lun. 1 janv. 2026 à 10:00, Alice <a@x> a écrit :\n> salut\n", "Merci !"),
        # Not a reply: null, as CloudMailin sends it.
        ("Hello Bob,\n\nthe numbers are attached.\n", None),
        ("Hello Bob\n\n-- \nAlice\n", None),
        ("On the topic of numbers, here is what I wrote:\nthe numbers\n", None),
        # Nothing of its own above the thread, or no single reply text.
        ("On Mon, 1 Jan 2026 at 10:00, Alice <a@x> wrote:\n> hi\n", None),
        ("> hi\n", None),
        ("> question one\nanswer one\n> question two\nanswer two\n", None),
        ("", None),
        (None, None),
    ],
)
def test_reply_plain(plain: str | None, expected: str | None) -> None:
    assert reply_plain(plain) == expected


# --------------------------------------------------------------------------- odd mail


ODD_MAIL = {
    "no content type": b"From: a@example.org\r\nSubject: hi\r\n\r\nplain body\r\n",
    "unknown charset, utf-8 bytes": (
        b"Content-Type: text/plain; charset=x-unknown\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    ),
    "unknown charset, latin-1 bytes": (
        b"Content-Type: text/plain; charset=x-unknown\r\n\r\nGr\xfc\xdfe\r\n"
    ),
    "not a charset": b"Content-Type: text/plain; charset=base64\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n",
    "wrong charset": b"Content-Type: text/plain; charset=us-ascii\r\n\r\nGr\xfc\xdfe\r\n",
    "broken base64 attachment": (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="broken.pdf"\r\n\r\n'
        b"JVBER!!not*base64@@\r\nAAA\r\n--b--\r\n"
    ),
    "8-bit header bytes": (
        b"Subject: Gr\xc3\xbc\xc3\x9fe\r\nFrom: J\xfcrgen <j@example.org>\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="M\xc3\xa4rz.bin"\r\n'
        b"Content-ID: <\xc3\xa4@x>\r\n\r\ndata\r\n--b--\r\n"
    ),
    "encoded word in unknown charset": (
        b"Subject: =?x-unknown?Q?Gr=C3=BC=C3=9Fe?= =?utf-8?B?IGF1cyBLw7Zsbg?=\r\n\r\nx"
    ),
    "empty body": b"Subject: empty\r\n\r\n",
    "empty message": b"",
    "headers only, no separator": b"Subject: only headers\r\n",
    "single non-text part": (
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
    ),
    "multipart without boundary": b"Content-Type: multipart/mixed\r\n\r\njust text\r\n",
    "multipart never closed": (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n'
        b"\r\nunfinished"
    ),
    "garbage content type": b"Content-Type: ///;;;\r\n\r\nbody\r\n",
    "unknown transfer encoding": (
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-weird\r\n\r\nbody\r\n"
    ),
    "nameless inline image and text/calendar": (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
        b"--b\r\nContent-Type: image/png\r\nContent-ID: <img1>\r\n\r\nPNG\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nsecond\r\n"
        b"--b\r\nContent-Type: text/calendar\r\n\r\nBEGIN:VCALENDAR\r\n"
        b"--b--\r\n"
    ),
    "attached message": (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nforwarded\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: inner\r\nContent-Type: text/plain\r\n\r\ninner body\r\n"
        b"--b--\r\n"
    ),
    "deeply nested": (
        b"".join(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
            for i in range(300)
        )
        + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    ),
    "lf line endings only": b"Subject: lf\nContent-Type: text/html\n\n<p>hi</p>\n",
    "nul, controls and brackets in headers": b"Subject: a\x00b\x07c\r\nX-A[1]: v\r\n\r\nbody",
}


@pytest.mark.parametrize("raw", list(ODD_MAIL.values()), ids=list(ODD_MAIL))
def test_odd_mail_never_raises(raw: bytes) -> None:
    document = decode_json(build_post("json+n", raw, ENVELOPE))
    assert set(document) == {"headers", "envelope", "plain", "html", "reply_plain", "attachments"}
    assert document["envelope"]["md5"] == hashlib.md5(raw).hexdigest()
    for item in document["attachments"]:
        assert item["file_name"]
        assert item["size"] == str(len(base64.b64decode(item["content"], validate=True)))
    post = build_post("multipart+n", raw, ENVELOPE)
    parts = parse_form(post.content, post.content_type)
    text_fields(parts)
    files = [part for part in parts if part.file_name is not None]
    assert [part.file_name for part in files] == [a["file_name"] for a in document["attachments"]]
    raw_post = build_post("raw", raw, ENVELOPE)
    assert parse_form(raw_post.content, raw_post.content_type)[0].data == raw


RICH = rich_message()


def _all_formats_hold(raw: bytes) -> None:
    document = decode_json(build_post("json+n", raw, ENVELOPE))
    assert document["envelope"]["md5"] == hashlib.md5(raw).hexdigest()
    post = build_post("multipart+n", raw, ENVELOPE)
    files = [part for part in parse_form(post.content, post.content_type) if part.file_name]
    assert len(files) == len(document["attachments"])
    raw_post = build_post("raw", raw, ENVELOPE)
    assert parse_form(raw_post.content, raw_post.content_type)[0].data == raw


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    _all_formats_hold(raw)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(RICH) - 1), st.integers(0, 255), st.integers(0, 40)),
        min_size=1,
        max_size=8,
    )
)
def test_damaged_rich_message_never_raises(damage: list[tuple[int, int, int]]) -> None:
    raw = bytearray(RICH)
    for position, byte, cut in damage:  # overwrite a byte, then drop a few after it
        raw[position % len(raw)] = byte
        del raw[position % len(raw) + 1 : position % len(raw) + 1 + cut]
    _all_formats_hold(bytes(raw))


def _odd(name: str) -> dict[str, Any]:
    return json_normalised(ODD_MAIL[name], ENVELOPE)


def test_odd_mail_gives_the_best_faithful_result() -> None:
    assert _odd("no content type")["plain"] == "plain body\n"
    assert _odd("unknown charset, utf-8 bytes")["plain"] == "Grüße\n"
    assert _odd("unknown charset, latin-1 bytes")["plain"] == "Grüße\n"
    assert _odd("not a charset")["plain"] == "Grüße\n"
    assert _odd("wrong charset")["plain"] == "Grüße\n"

    broken = _odd("broken base64 attachment")
    assert broken["plain"] == "see attached"  # the last CRLF belongs to the boundary
    (attachment,) = broken["attachments"]
    assert attachment["file_name"] == "broken.pdf"
    assert attachment["content_type"] == "application/pdf"

    eight_bit = _odd("8-bit header bytes")
    assert eight_bit["headers"]["subject"] == "Grüße"
    assert eight_bit["headers"]["from"] == "Jürgen <j@example.org>"
    (attachment,) = eight_bit["attachments"]
    assert attachment["file_name"] == "März.bin"
    assert attachment["content_id"] == "<ä@x>"

    assert _odd("encoded word in unknown charset")["headers"]["subject"] == "Grüße aus Köln"

    empty = _odd("empty body")
    assert (empty["plain"], empty["html"], empty["attachments"]) == ("", None, [])
    assert _odd("empty message")["headers"] == {}
    assert _odd("headers only, no separator")["headers"] == {"subject": "only headers"}

    single = _odd("single non-text part")
    assert (single["plain"], single["html"], single["reply_plain"]) == (None, None, None)
    (attachment,) = single["attachments"]
    assert attachment["file_name"] == "part-1.pdf"
    assert attachment["disposition"] == "attachment"
    assert base64.b64decode(attachment["content"]) == b"%PDF-"

    assert _odd("multipart without boundary")["plain"] == "just text\n"
    assert _odd("multipart never closed")["plain"] == "unfinished"
    assert _odd("unknown transfer encoding")["plain"] == "body\n"
    assert _odd("lf line endings only")["html"] == "<p>hi</p>\n"

    nameless = _odd("nameless inline image and text/calendar")
    assert nameless["plain"] == "first"
    assert [
        (a["file_name"], a["content_type"], a["disposition"], a["content_id"])
        for a in nameless["attachments"]
    ] == [
        ("part-2.png", "image/png", "inline", "<img1>"),
        ("part-3.txt", "text/plain", "attachment", None),
        ("part-4.ics", "text/calendar", "attachment", None),
    ]
    assert base64.b64decode(nameless["attachments"][1]["content"]) == b"second"

    attached = _odd("attached message")
    assert attached["plain"] == "forwarded"
    (attachment,) = attached["attachments"]
    assert (attachment["file_name"], attachment["content_type"]) == ("part-2.eml", "message/rfc822")
    inner = base64.b64decode(attachment["content"])
    assert inner.startswith(b"Subject: inner\r\n") and inner.endswith(b"inner body")

    controls = _odd("nul, controls and brackets in headers")
    assert controls["headers"]["subject"] == "a\x00b\x07c"  # JSON escapes them; nothing is lost
    assert controls["headers"]["x_a_1_"] == "v"  # brackets would break multipart names


def test_target_formats() -> None:
    raw = b"Subject: x\r\n\r\ny"
    assert build_post("json+n", raw, ENVELOPE).content_type == "application/json"
    assert build_post(TargetFormat.MULTIPART, raw, ENVELOPE).content_type.startswith(
        "multipart/form-data; boundary="
    )
    assert build_post("raw", raw, ENVELOPE).content_type.startswith("multipart/form-data;")
    with pytest.raises(ValueError):
        build_post("xml", raw, ENVELOPE)
