"""Messages for the scanner tests, built as raw bytes the way they arrive."""

from __future__ import annotations

from mailmoat.scanners.heuristics import GTUBE

_DEFAULT_HEADERS = {
    "From": "Alice Example <alice@sender.example>",
    "To": "bob@customer.example",
    "Subject": "Notes from Tuesday's planning meeting",
    "Date": "Tue, 02 Jan 2024 09:30:00 +0000",
    "Message-ID": "<20240102093000.4711@mail.sender.example>",
}

NORMAL_TEXT = (
    "Hi Bob,\n\n"
    "thanks for joining the planning meeting yesterday. As agreed, Carol will draft\n"
    "the budget for the second quarter and I will collect the open questions from\n"
    "the team. Let's meet again next Tuesday at ten to go through both.\n\n"
    "Best regards,\nAlice\n"
)


def message(
    body: str = NORMAL_TEXT,
    *,
    headers: dict[str, str | None] | None = None,
    content_type: str = "text/plain; charset=utf-8",
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A single-part message; ``headers`` overrides the defaults (None removes one),
    ``extra`` fields go on top, as a relay would add them."""
    fields: dict[str, str | None] = {**_DEFAULT_HEADERS, **(headers or {})}
    lines = [f"{name}: {value}" for name, value in extra]
    lines += [f"{name}: {value}" for name, value in fields.items() if value is not None]
    lines += ["MIME-Version: 1.0", f"Content-Type: {content_type}", "", body]
    return "\r\n".join(lines).replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode()


def alternative(text: str, html: str, *, headers: dict[str, str | None] | None = None) -> bytes:
    """A multipart/alternative message with a text and an HTML part."""
    body = (
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{text}\r\n"
        "--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f"{html}\r\n"
        "--b1--\r\n"
    )
    return message(body, headers=headers, content_type='multipart/alternative; boundary="b1"')


NORMAL = message()
GTUBE_MESSAGE = message(f"This is a test message.\n\n{GTUBE}\n", headers={"Subject": "Test"})

SPAM_TEXT = (
    "Congratulations winner! You have been selected for an exclusive cash prize.\n"
    "Claim your free bonus today: visit https://prizes.lucky-winner.example/claim now.\n"
    "Limited offer, act fast, guaranteed reward, no purchase necessary.\n"
)
SPAM = message(
    SPAM_TEXT,
    headers={
        "From": "Prize Team <claims@lucky-winner.example>",
        "Subject": "Claim your exclusive cash prize today",
    },
)
SIMILAR_SPAM = message(
    SPAM_TEXT.replace("today", "tonight").replace("Limited offer", "Special deal"),
    headers={
        "From": "Prize Desk <desk@lucky-winner.example>",
        "Subject": "Your exclusive cash prize is waiting",
    },
)
HAM_TEXTS = [
    "Hi Bob, the quarterly report is attached. Please review the budget figures "
    "before our meeting on Thursday. Thanks, Alice",
    "Hello team, reminder that the office will be closed on Monday for maintenance. "
    "Please save your work and log off on Friday evening.",
    "Dear Carol, thank you for the draft. I added comments on the project schedule "
    "and the staffing plan. Can we discuss tomorrow afternoon?",
]
HAM = [
    message(text, headers={"Subject": f"Project update {i}"}) for i, text in enumerate(HAM_TEXTS)
]
