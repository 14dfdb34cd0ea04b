"""DKIM keys and signatures for tests: keys made with dkimpy's tools (openssl)."""

from __future__ import annotations

from pathlib import Path

import dkim
from dkim import dknewkey

SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


class Key:
    """An RSA key (2048 bits: its DNS record is over 255 bytes) and that record."""

    def __init__(self, directory: Path) -> None:
        private, public = directory / "dkim.key", directory / "dkim.txt"
        dknewkey.GenRSAKeys(str(private), verbose=False)
        dknewkey.ExtractRSADnsPublicKey(str(private), str(public), verbose=False)
        self.private_pem = private.read_bytes()
        self.record = public.read_text()


def signature(raw: bytes, key: Key, domain: str, selector: str = "sel") -> bytes:
    """A DKIM-Signature field for ``raw``, CRLF-terminated."""
    field: bytes = dkim.sign(
        raw, selector.encode(), domain.encode(), key.private_pem, include_headers=SIGNED_HEADERS
    )
    return field


def sign(raw: bytes, key: Key, domain: str, selector: str = "sel") -> bytes:
    return signature(raw, key, domain, selector) + raw
