"""Build the configured scanner."""

from __future__ import annotations

from mailmoat.scanners.base import Scanner
from mailmoat.scanners.bayes import TokenStore
from mailmoat.scanners.builtin import BuiltinScanner
from mailmoat.scanners.rspamd import RspamdScanner
from mailmoat.scanners.spamd import SpamdScanner

SPAMD_PORT = 783


def parse_address(address: str, default_port: int = SPAMD_PORT) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST``, ``[v6]:PORT`` or ``[v6]`` → (host, port)."""
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":")
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:  # a bare name, or a bare IPv6 address
        host, port = address, ""
    if not host:
        raise ValueError(f"no host in {address!r}")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in {address!r}")
    return host, int(port)


def build_scanner(
    kind: str,
    *,
    store: TokenStore | None,
    threshold: float = 5.0,
    spamd_address: str = f"127.0.0.1:{SPAMD_PORT}",
    rspamd_url: str = "http://127.0.0.1:11333",
    timeout: float = 20.0,
) -> Scanner | None:
    """The scanner ``kind`` names (builtin, spamd, rspamd or none → None).

    ``store`` is needed by the built-in scanner only; ``threshold`` applies to it
    only too, as spamd and rspamd keep their own.
    """
    if kind == "builtin":
        if store is None:
            raise ValueError("the built-in scanner needs a token store")
        return BuiltinScanner(store, threshold)
    if kind == "spamd":
        host, port = parse_address(spamd_address)
        return SpamdScanner(host, port, timeout)
    if kind == "rspamd":
        return RspamdScanner(rspamd_url, timeout)
    if kind == "none":
        return None
    raise ValueError(f"unknown scanner {kind!r}: use builtin, spamd, rspamd or none")
