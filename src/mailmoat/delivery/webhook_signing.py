"""Signatures on webhook posts: HMAC-SHA256 over "<timestamp>.<body>".

Headers sent with every post:

- ``X-Mailmoat-Id``: mailmoat's id of the message (the same on every retry);
- ``X-Mailmoat-Timestamp``: Unix time of this post, in seconds;
- ``X-Mailmoat-Signature``: ``v1=<hex>``, one per signing secret (two for a while
  after a rotation), separated by commas.

A receiver recomputes HMAC-SHA256(secret, timestamp + "." + body), compares it in
constant time with any v1 value, and refuses timestamps far from its own clock.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

ID_HEADER = "X-Mailmoat-Id"
TIMESTAMP_HEADER = "X-Mailmoat-Timestamp"
SIGNATURE_HEADER = "X-Mailmoat-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def signature_headers(
    message_id: str, secrets: Sequence[str], timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: ",".join(f"v1={signature(s, timestamp, body)}" for s in secrets),
    }


def verify(
    secret: str, header: str, timestamp: str, body: bytes, now: int, tolerance: int = 300
) -> bool:
    """What a receiver does (kept here so that the documented recipe is tested)."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        return False
    expected = signature(secret, int(timestamp), body)
    offered = [part.strip()[3:] for part in header.split(",") if part.strip().startswith("v1=")]
    return any(hmac.compare_digest(expected, value) for value in offered)
