"""A small authoritative DNS server on 127.0.0.1 for tests, serving a dict.

    with LocalDnsServer({"example.test": {"TXT": ["v=spf1 -all"]}}) as server:
        resolver = DnsResolver(server.servers, timeout=0.5)

``zone`` maps names (no trailing dot, any case) to {type: [values]}; the test may
change it at any time. Values: TXT a str/bytes (split into 255-byte strings) or a
list of them (sent as those strings); A/AAAA an address; MX (preference, host);
PTR and CNAME a host. Unknown names get NXDOMAIN, known names without the type an
empty answer; CNAMEs are followed within the zone. Names in ``timeouts`` are never
answered. Every question is appended to ``queries`` as (name, type), and to
``tcp_queries`` too when it came over TCP (UDP answers over 512 bytes are truncated).

:func:`fixture` makes a pytest fixture that yields a fresh server per test, and
:func:`forbid_other_dns` makes sure dnspython asks nothing but loopback addresses.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import dns.query
import dns.resolver
import pytest
from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

Zone = dict[str, dict[str, list[Any]]]

_TYPES: dict[str, Callable[[Any], Any]] = {
    "TXT": lambda value: _txt(value),
    "A": A,
    "AAAA": AAAA,
    "MX": lambda value: MX(value[1], value[0]),
    "PTR": PTR,
    "CNAME": CNAME,
}


class _Unanswered(Exception):
    """Raised by the resolver to make the handler drop a query."""


def _txt(value: str | bytes | list[str | bytes]) -> TXT:
    if isinstance(value, list):
        return TXT([part.encode() if isinstance(part, str) else part for part in value])
    data = value.encode() if isinstance(value, str) else value
    return TXT([data[i : i + 255] for i in range(0, len(data), 255)] or [b""])


class _ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, server: LocalDnsServer) -> None:
        self.server = server

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.server.queries.append((name, qtype))
        if handler.protocol == "tcp":
            self.server.tcp_queries.append((name, qtype))
        if name in self.server.timeouts:
            raise _Unanswered
        zone = {key.rstrip(".").lower(): value for key, value in self.server.zone.items()}
        reply = request.reply()
        for _hop in range(8):
            node = {rtype.upper(): values for rtype, values in zone.get(name, {}).items()}
            if name not in zone:
                # A name with names below it exists even without records (RFC 8020).
                if not reply.rr and not any(key.endswith("." + name) for key in zone):
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply
            if "CNAME" in node and qtype != "CNAME":
                target = str(node["CNAME"][0])
                reply.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME(target), ttl=60))
                name = target.rstrip(".").lower()
                continue
            make = _TYPES.get(qtype)
            if make is not None:
                for value in node.get(qtype, []):
                    reply.add_answer(RR(name, getattr(QTYPE, qtype), rdata=make(value), ttl=60))
            return reply
        return reply


class _Handler(DNSHandler):  # type: ignore[misc]
    def handle(self) -> None:
        with contextlib.suppress(_Unanswered):
            super().handle()

    def get_reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        packed: bytes = self.server.resolver.resolve(request, self).pack()
        if self.protocol == "udp" and len(packed) > 512:
            # Like a server without EDNS: question only, TC set, and the client
            # asks again over TCP. (dnslib's own truncation drops the question,
            # which dnspython rejects.)
            truncated = request.reply()
            truncated.header.tc = 1
            packed = truncated.pack()
        return packed


class LocalDnsServer:
    """UDP and TCP on one free port of 127.0.0.1, answering from ``zone``."""

    host = "127.0.0.1"

    def __init__(self, zone: Zone | None = None) -> None:
        self.zone: Zone = zone if zone is not None else {}
        self.timeouts: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.tcp_queries: list[tuple[str, str]] = []
        self._servers: list[DNSServer] = []
        self.port = 0

    @property
    def servers(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)]

    def start(self) -> LocalDnsServer:
        resolver = _ZoneResolver(self)
        quiet = DNSLogger(logf=lambda _message: None)
        for _attempt in range(5):
            udp = DNSServer(resolver, self.host, 0, logger=quiet, handler=_Handler)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(resolver, self.host, port, True, logger=quiet, handler=_Handler)
            except OSError:  # the TCP port happens to be taken: try another pair
                udp.server.server_close()
                continue
            self.port = port
            self._servers = [udp, tcp]
            for server in self._servers:
                serve = functools.partial(server.server.serve_forever, poll_interval=0.02)
                threading.Thread(target=serve, daemon=True).start()
            return self
        raise RuntimeError("no free port for the test DNS server")

    def stop(self) -> None:
        for server in self._servers:
            server.server.shutdown()
            server.server.server_close()
        self._servers = []

    def __enter__(self) -> LocalDnsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def fixture(name: str = "dns_server") -> Any:
    """A function-scoped pytest fixture yielding a started, empty LocalDnsServer."""

    @pytest.fixture(name=name)
    def _fixture() -> Iterator[LocalDnsServer]:
        with LocalDnsServer() as server:
            yield server

    return _fixture


def forbid_other_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any dnspython query to a non-loopback address or via the system resolver."""

    def guard(query: Callable[..., Any]) -> Callable[..., Any]:
        def checked(q: Any, where: str, *args: Any, **kwargs: Any) -> Any:
            if not ipaddress.ip_address(where).is_loopback:
                raise AssertionError(f"DNS query to {where} in a test")
            return query(q, where, *args, **kwargs)

        return checked

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the system resolver was used in a test")

    monkeypatch.setattr(dns.query, "udp", guard(dns.query.udp))
    monkeypatch.setattr(dns.query, "tcp", guard(dns.query.tcp))
    monkeypatch.setattr(dns.resolver, "get_default_resolver", refuse)
    monkeypatch.setattr(dns.resolver, "resolve", refuse)
    monkeypatch.setattr(dns.resolver, "query", refuse)
