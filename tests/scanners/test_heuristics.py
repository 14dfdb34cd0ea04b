from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailmoat.scanners import heuristics
from mailmoat.scanners.tokens import parse
from tests.scanners.messages import GTUBE_MESSAGE, HAM, NORMAL, SPAM, alternative, message

NOW = datetime(2024, 1, 2, 12, 0, tzinfo=UTC)


def fired(raw: bytes) -> dict[str, float]:
    return {s.name: s.score for s in heuristics.check(parse(raw), now=NOW)}


CRAFTED = {
    "GTUBE": GTUBE_MESSAGE,
    "MISSING_FROM": message(headers={"From": None}),
    "MISSING_DATE": message(headers={"Date": None}),
    "INVALID_DATE": message(headers={"Date": "yesterday-ish"}),
    "DATE_IN_FUTURE": message(headers={"Date": "Sat, 06 Jan 2024 09:30:00 +0000"}),
    "MISSING_MID": message(headers={"Message-ID": None}),
    "MISSING_SUBJECT": message(headers={"Subject": None}),
    "EMPTY_SUBJECT": message(headers={"Subject": "  "}),
    "SUBJ_ALL_CAPS": message(headers={"Subject": "ACT NOW FOR YOUR REWARD"}),
    "SUBJ_EXCLAIM": message(headers={"Subject": "Amazing news!!"}),
    "MANY_EXCLAIM": message("Wow! " * 10),
    "MIME_HTML_ONLY": message("<p>Hello Bob, see you soon.</p>", content_type="text/html"),
    "EMPTY_BODY": message(""),
    "URL_IP_HOST": message("Log in at http://203.0.113.9/bank/login to confirm."),
    "MIME_MANY_PARTS": message(
        "".join(
            f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n'
            for i in range(40)
        ),
        content_type='multipart/mixed; boundary="b0"',
    ),
    "FROM_NAME_OTHER_ADDR": message(
        headers={"From": '"service@bank.example" <phisher@evil.example>'}
    ),
}


def test_every_rule_has_a_crafted_message() -> None:
    assert {rule.name for rule in heuristics.RULES} == set(CRAFTED)


@pytest.mark.parametrize("rule", sorted(CRAFTED))
def test_rule_fires_on_its_message_only(rule: str) -> None:
    assert rule in fired(CRAFTED[rule])
    assert rule not in fired(NORMAL)


@pytest.mark.parametrize(
    "raw",
    [NORMAL, *HAM, alternative("Hi Bob, lunch at noon?", "<p>Hi Bob, lunch at <b>noon</b>?</p>")],
)
def test_ordinary_mail_fires_nothing(raw: bytes) -> None:
    assert fired(raw) == {}


def test_gtube_decides_and_other_rules_stay_small() -> None:
    assert fired(GTUBE_MESSAGE)["GTUBE"] == 1000
    small = [rule.score for rule in heuristics.RULES if rule.name != "GTUBE"]
    assert all(0.1 <= score <= 2.5 for score in small)


def test_gtube_is_found_in_an_encoded_body() -> None:
    import base64

    body = base64.b64encode(f"test\n{heuristics.GTUBE}\n".encode()).decode()
    raw = message(body, content_type="text/plain\r\nContent-Transfer-Encoding: base64")
    assert heuristics.GTUBE.encode() not in raw
    assert "GTUBE" in fired(raw)


def test_variants_that_must_not_fire() -> None:
    # A display name that merely repeats the real address is fine.
    assert "FROM_NAME_OTHER_ADDR" not in fired(
        message(headers={"From": '"alice@sender.example" <Alice@Sender.example>'})
    )
    # Short shouted subjects and host names with digits are fine.
    assert "SUBJ_ALL_CAPS" not in fired(message(headers={"Subject": "FYI"}))
    assert "URL_IP_HOST" not in fired(message("See https://web2.example/path for details."))
    assert "URL_IP_HOST" in fired(message("See http://[2001:db8::1]/x or http://3232235777/."))
    # A date a few hours ahead is clock skew, not a forgery.
    assert "DATE_IN_FUTURE" not in fired(message(headers={"Date": "Tue, 02 Jan 2024 20:00 +0000"}))


def test_a_spammy_message_collects_several_rules() -> None:
    raw = message(
        "<p>FREE money!!! Click http://198.51.100.7/win now!!!!!!!</p>",
        headers={"Subject": "YOU ARE A WINNER!!!", "Date": None, "Message-ID": None},
        content_type="text/html",
    )
    assert {
        "SUBJ_ALL_CAPS",
        "SUBJ_EXCLAIM",
        "MANY_EXCLAIM",
        "MISSING_DATE",
        "MISSING_MID",
        "MIME_HTML_ONLY",
        "URL_IP_HOST",
    } <= set(fired(raw))
    assert fired(SPAM) == {}  # well-formed spam is Bayes's job
