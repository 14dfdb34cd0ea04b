"""DNS lookups for sender authentication, on servers the operator chooses.

pyspf, dkimpy and authheaders each default to dnspython's process-wide resolver.
Everything sender authentication looks up goes through one :class:`DnsResolver`
instead, so that a setting (and the tests) decide which servers are asked.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.resolver
import spf

DEFAULT_PORT = 53


class DnsTempError(Exception):
    """A lookup could not be completed (timeout, SERVFAIL, no server reachable).

    Deliberately not a dkimpy ``DnsTimeoutError``: dkimpy swallows those and
    reports a plain verification failure, where a temporary error is meant.
    """


def parse_dns_servers(text: str) -> list[tuple[str, int]] | None:
    """Parse a setting like ``"127.0.0.1:5353, ::1, [::1]:5353"``.

    Entries are IP addresses (a name would itself need a resolver), separated by
    commas or whitespace, with an optional port (default 53); an IPv6 address with
    a port goes in brackets. An empty setting means the system resolver: None.
    """
    entries = [entry for entry in re.split(r"[\s,]+", text) if entry]
    if not entries:
        return None
    return [_parse_server(entry) for entry in entries]


def _parse_server(entry: str) -> tuple[str, int]:
    host, port = entry, DEFAULT_PORT
    try:
        if entry.startswith("["):
            host, bracket, rest = entry[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError
            if rest:
                port = _parse_port(rest[1:])
            return str(ipaddress.IPv6Address(host)), port
        if entry.count(":") == 1:
            host, _, port_text = entry.partition(":")
            port = _parse_port(port_text)
            return str(ipaddress.IPv4Address(host)), port
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise ValueError(
            f"invalid DNS server {entry!r}: expected IP, IP:PORT or [IPv6]:PORT"
        ) from None


def _parse_port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError
    return int(text)


def _to_name(name: str | bytes) -> dns.name.Name | None:
    """An absolute DNS name, or None for something that cannot be one."""
    try:
        text = name.decode("ascii") if isinstance(name, bytes) else name
        if not text or any(ch.isspace() or not ch.isprintable() for ch in text):
            return None
        return dns.name.from_text(text)  # relative to the root: no search list
    except (UnicodeError, dns.exception.DNSException):
        return None


class DnsResolver:
    """Stub resolver for SPF, DKIM and DMARC lookups.

    ``servers=None`` uses the system configuration (/etc/resolv.conf); otherwise only
    the given (address, port) servers are asked, over UDP with TCP on truncation.
    ``timeout`` bounds each attempt and twice that bounds a whole lookup. There is no
    cache: run a caching resolver next to the gateway.
    """

    def __init__(self, servers: list[tuple[str, int]] | None, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("DNS timeout must be positive")
        if servers is None:
            resolver = dns.resolver.Resolver(configure=True)
        else:
            if not servers:
                raise ValueError("no DNS servers given (use None for the system resolver)")
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in servers
            ]
        resolver.timeout = timeout
        resolver.lifetime = 2 * timeout
        self._resolver = resolver
        self.servers = None if servers is None else list(servers)
        self.timeout = timeout
        self.lifetime = 2 * timeout

    def query(self, name: str | bytes, rdtype: str, *, lifetime: float | None = None) -> list[Any]:
        """The records of one type at ``name``; [] when the name or type does not exist.

        Returns dnspython rdata objects. Raises DnsTempError when no answer could be
        had, so that callers can report temperror rather than "no record".
        """
        qname = _to_name(name)
        if qname is None:
            return []
        limit = self.lifetime if lifetime is None else max(0.1, min(lifetime, self.lifetime))
        try:
            answer = self._resolver.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False, lifetime=limit
            )
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException as exc:
            # Timeout, NoNameservers (SERVFAIL/REFUSED everywhere), YXDOMAIN, …
            raise DnsTempError(f"{rdtype} {qname}: {exc}") from exc
        return [] if answer.rrset is None else list(answer.rrset)

    def txt(self, name: str | bytes, *, lifetime: float | None = None) -> list[bytes]:
        """TXT records at ``name``, each with its character-strings joined."""
        return [b"".join(rdata.strings) for rdata in self.query(name, "TXT", lifetime=lifetime)]

    def dnsfunc(self, name: str | bytes, timeout: float | None = None) -> bytes | None:
        """TXT lookup with dkimpy's ``dnsfunc`` contract (also what authheaders passes on
        to dkimpy): the first record as bytes, None when there is none.

        Failures raise DnsTempError instead of returning None, so that they come out
        of ``dkim.DKIM.verify`` as an exception and can be told apart from a missing key.
        authheaders' DMARC helpers expect a different contract (a str), so DMARC
        records are fetched with :meth:`txt` instead.
        """
        records = self.txt(name, lifetime=timeout)
        return records[0] if records else None


class SpfQuery(spf.query):  # type: ignore[misc]  # pyspf is untyped
    """A pyspf query whose DNS lookups go to a :class:`DnsResolver`.

    pyspf has no resolver parameter: ``query.dns`` calls the module-level
    ``spf.DNSLookup``. Replacing that global would redirect every other pyspf user
    in the process, so this subclass overrides ``dns`` instead. The override keeps
    what the original does beyond transport: the per-query cache, the RFC 7208
    §4.6.4 void-lookup limit and an overall time limit. CNAME chains are followed
    by the resolver (dnspython), not here.
    """

    def __init__(
        self, resolver: DnsResolver, *, ip: str, sender: str, helo: str, time_limit: float
    ) -> None:
        super().__init__(i=ip, s=sender, h=helo)
        self._resolver = resolver
        self._deadline = time.monotonic() + time_limit

    def dns(
        self,
        name: str,
        qtype: str,
        cnames: dict[str, str] | None = None,
        ignore_void: bool = False,
    ) -> list[Any]:
        """Records in the shapes pyspf's own lookup returns (see ``DNSLookup_dnspython``)."""
        name = str(name).lower()
        if name.endswith("."):
            name = name[:-1]
        if not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # not a usable name: no lookup, as in pyspf
        cached: list[Any] | None = self.cache.get((name, qtype))
        if cached:
            return cached
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise spf.TempError("DNS: SPF evaluation took too long")
        try:
            records = self._resolver.query(name, qtype, lifetime=remaining)
        except DnsTempError as exc:
            raise spf.TempError(f"DNS {exc}") from None
        values = [_spf_value(qtype, rdata) for rdata in records]
        if values:
            self.cache[(name, qtype)] = values
        elif not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return values


def _spf_value(qtype: str, rdata: Any) -> Any:
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        return (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))
    if qtype == "PTR":
        return rdata.target.to_text(omit_final_dot=True)
    return list(rdata.strings)  # TXT, SPF: the character-strings, joined by pyspf
