from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.scanners import heuristics
from mailmoat.scanners.tokens import MAX_TOKEN_LENGTH, MAX_TOKENS, parse, tokenize
from tests.scanners.messages import NORMAL, alternative, message


def test_subject_words_and_address_domains_are_prefixed() -> None:
    raw = message(
        "Body words here.",
        headers={
            "Subject": "Quarterly Budget Review",
            "From": "Alice <alice@Sender.Example>",
            "To": "bob@customer.example, carol@other.example",
        },
        extra=(("Reply-To", "replies@answers.example"),),
    )
    tokens = tokenize(raw)
    assert {"s:quarterly", "s:budget", "s:review"} <= tokens
    assert {"from:sender.example", "to:customer.example", "to:other.example"} <= tokens
    assert "reply-to:answers.example" in tokens
    assert {"body", "words", "here"} <= tokens


def test_words_are_lower_case_and_between_3_and_40_characters() -> None:
    long_word = "a" * 41
    tokens = tokenize(message(f"Hello WORLD an ox {long_word} {'b' * 40}"))
    assert {"hello", "world", "b" * 40} <= tokens
    assert "an" not in tokens and "ox" not in tokens and "WORLD" not in tokens
    assert long_word not in tokens
    assert "skip:a 40" in tokens  # SpamBayes-style stand-in for the long word


def test_html_is_stripped_and_link_hosts_kept() -> None:
    raw = alternative(
        "Plain words.",
        '<html><body><div class="promo"><a href="https://www.Shop.example/deal?x=1">'
        "Great&nbsp;savings &amp; more</a></div></body></html>",
    )
    tokens = tokenize(raw)
    assert {"plain", "words", "great", "savings", "more"} <= tokens
    assert {"url:www.shop.example", "url:shop.example"} <= tokens
    assert not {"html", "body", "div", "href", "class", "promo", "nbsp", "amp"} & tokens


def test_headers_mailmoat_adds_do_not_change_the_tokens() -> None:
    delivered = message(
        extra=(
            ("Received", "from relay.example ([192.0.2.1]) by gw.test (mailmoat) with ESMTP"),
            ("Authentication-Results", "gw.test; spf=pass smtp.mailfrom=sender.example"),
            ("X-Spam-Flag", "YES"),
            ("X-Spam-Score", "7.5 suspicious"),
        )
    )
    assert tokenize(delivered) == tokenize(NORMAL)


def test_encoded_subject_and_body_are_decoded() -> None:
    body = base64.b64encode("Gr\u00fc\u00dfe aus M\u00fcnchen".encode("iso-8859-1")).decode()
    raw = message(
        body,
        headers={"Subject": "=?utf-8?q?Caf=C3=A9_meeting?="},
        content_type="text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64",
    )
    tokens = tokenize(raw)
    assert {"s:caf\u00e9", "s:meeting"} <= tokens
    assert {"gr\u00fc\u00dfe", "aus", "m\u00fcnchen"} <= tokens


def test_codecs_that_are_not_charsets_are_read_as_utf8() -> None:
    # Decoding "punycode" costs about 2 µs a byte in pure Python: a cheap way to
    # make a scanner burn CPU, so such names are ignored.
    for charset in ("punycode", "idna", "unicode_escape", "rot13", "no-such-thing"):
        raw = message("caf\u00e9 abc-def", content_type=f"text/plain; charset={charset}")
        assert parse(raw).text.strip() == "caf\u00e9 abc-def"


def test_attachments_are_not_read() -> None:
    raw = message(
        "--b\r\nContent-Type: text/plain\r\n\r\nvisible words\r\n"
        "--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n"
        "\r\nhidden attachment text\r\n--b--\r\n",
        content_type='multipart/mixed; boundary="b"',
    )
    tokens = tokenize(raw)
    assert {"visible", "words"} <= tokens
    assert "hidden" not in tokens


def test_tokens_are_capped_and_short() -> None:
    words = " ".join(f"word{i:05d}" for i in range(5000))
    raw = message(words, headers={"Subject": "first " + "x" * 30})
    tokens = tokenize(raw)
    assert len(tokens) == MAX_TOKENS
    assert "s:first" in tokens  # header tokens come before body tokens
    assert "word00000" in tokens and "word04999" not in tokens  # the first ones are kept
    long_host = "a" * 60 + ".example"
    tokens = tokenize(message(f"see https://{long_host}/ now"))
    assert all(len(t) <= MAX_TOKEN_LENGTH for t in tokens)
    assert f"url:{long_host}" not in tokens
    assert any(t.startswith("h:") for t in tokens)


def test_raw_8bit_headers_give_storable_tokens() -> None:
    raw = b"Subject: Gr\xc3\xbc\xc3\x9fe \xff\xfe broken\r\nFrom: x@y.example\r\n\r\nbody text\r\n"
    tokens = tokenize(raw)
    assert "s:gr\u00fc\u00dfe" in tokens
    for token in tokens:
        token.encode("utf-8")  # no lone surrogates: the database must accept them
        assert "\x00" not in token


MALFORMED = [
    b"",
    b"\r\n\r\n",
    b"no header separator at all",
    b"\x00\x01\x02\xff" * 100,
    b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\nbroken",
    b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n'
    b"never closed",
    b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nhello there",
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64@@@",
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\r\n",
    b"Subject: =?bogus-charset?q?x?= =?utf-8?b?####?=\r\nFrom: <<<@@@>>>\r\n\r\nx",
    b'Date: Tue, 99 Foo 99999 99:99:99 +9999\r\nFrom: "unterminated\r\n\r\nbody',
    b"Content-Type: text/html\r\n\r\n" + b"<" * 20000 + b"<a href='http://[::1'>",
    # A thousand nested multiparts: deeper than the recursion limit of walk().
    b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(1000)
    ),
]


def test_malformed_messages_never_raise() -> None:
    for raw in MALFORMED:
        parsed = parse(raw)
        tokenize(parsed)
        heuristics.check(parsed)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    parsed = parse(raw)
    assert all(len(t) <= MAX_TOKEN_LENGTH for t in tokenize(parsed))
    heuristics.check(parsed)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=500), st.text(max_size=200))
def test_random_text_messages_never_raise(body: str, subject: str) -> None:
    raw = message(body, headers={"Subject": subject.replace("\r", "").replace("\n", " ")})
    parsed = parse(raw)
    tokenize(parsed)
    heuristics.check(parsed)
