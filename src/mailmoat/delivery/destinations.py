"""Where to connect: downstream targets and mail exchangers, resolved to addresses
and screened by the address policy before any connection is made."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailmoat.delivery.relay import Destination
from mailmoat.domain.addresses import AddressPolicy, Refusal
from mailmoat.domain.downstream import DownstreamAddress, delivery_order

_CACHE_ENTRIES = 10_000


class NameResolver(Protocol):
    """A blocking DNS stub: the records of one type, [] when there are none.

    It raises an exception when no answer could be had (a temporary failure).
    """

    def query(self, name: str, rdtype: str) -> list[Any]: ...


class Unresolvable(Exception):
    """A target has no usable address now; ``reply`` says why, as an SMTP reply."""

    def __init__(self, reply: str, *, permanent: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.permanent = permanent


class NoAddress(Unresolvable):
    """The name exists in no A or AAAA record (rather than: the lookup failed)."""


class AddressRefused(Unresolvable):
    """The address policy refuses the target: no connection is made.

    Temporary, like a server that cannot be reached: the message waits, so that a
    corrected downstream address (or the operator's allowance) still delivers it,
    and it bounces when its lifetime ends. The reply is the same whether or not
    anything listens there, since nothing is tried.
    """


@dataclass(frozen=True, slots=True)
class Candidate:
    """A host to try, before name resolution: a host name or an IP literal."""

    host: str
    port: int
    operator: bool = field(default=False, compare=False)  # set by the operator, not a user

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _literal(host: str) -> str | None:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class Destinations:
    """Turns a domain's downstream addresses, or a DSN recipient's domain, into servers.

    Host names are looked up (A, then AAAA) through mailmoat's own resolver, never
    with search domains; answers are kept for ``cache_seconds`` so that a busy queue
    does not ask the resolver once per message. Every target, and every address it
    resolves to, passes ``policy`` before it is handed out to connect to.
    """

    def __init__(
        self,
        resolver: NameResolver | None,
        *,
        dsn_relay: tuple[str, int] | None = None,
        mx_port: int = 25,
        cache_seconds: float = 30.0,
        rng: random.Random | None = None,
        policy: AddressPolicy | None = None,
    ) -> None:
        self.resolver = resolver
        self.policy = policy or AddressPolicy()
        self.dsn_relay = dsn_relay
        self.mx_port = mx_port
        self.cache_seconds = cache_seconds
        self.rng = rng or random.Random()
        self._cache: dict[tuple[str, str], tuple[float, list[Any]]] = {}
        self._own: tuple[float, tuple[str, ...]] | None = None

    def downstream(self, addresses: Sequence[DownstreamAddress]) -> list[Candidate]:
        """A domain's downstream servers in the order to try them for one message."""
        return [Candidate(a.target, a.port) for a in delivery_order(addresses, self.rng)]

    async def for_dsn(self, recipient: str) -> list[Candidate]:
        """Where a notification to ``recipient`` goes: the relay host, or its domain's MX."""
        if self.dsn_relay is not None:
            return [Candidate(*self.dsn_relay, operator=True)]
        domain = recipient.rpartition("@")[2].strip().rstrip(".")
        if not domain:
            raise Unresolvable("550 5.1.3 the sender address has no domain", permanent=True)
        if _literal(domain) is not None:
            return [Candidate(domain, self.mx_port)]
        try:
            records = await self._query(domain, "MX")
        except Unresolvable:
            raise
        except Exception as exc:
            raise Unresolvable(f"451 4.4.3 cannot look up the MX of {domain}: {exc}") from exc
        if not records:  # RFC 5321 5.1: no MX, the domain itself is the host, if it is one
            implicit = Candidate(domain, self.mx_port)
            try:
                await self.resolve(implicit)
            except NoAddress:
                raise Unresolvable(
                    f"550 5.1.2 {domain} has no mail server (no MX, no address)", permanent=True
                ) from None
            return [implicit]
        exchangers = [(int(r.preference), str(r.exchange).rstrip(".")) for r in records]
        if any(host == "" for _, host in exchangers):  # RFC 7505 null MX
            raise Unresolvable(
                f"556 5.1.10 {domain} does not accept mail (null MX)", permanent=True
            )
        self.rng.shuffle(exchangers)
        exchangers.sort(key=lambda pair: pair[0])
        return [Candidate(host, self.mx_port) for _, host in exchangers]

    async def resolve(self, candidate: Candidate) -> list[Destination]:
        """The addresses to connect to for one candidate; raises Unresolvable, and
        AddressRefused when the policy refuses the target or any of its addresses."""
        refusal = self.policy.host_refusal(
            candidate.host, candidate.port, operator=candidate.operator
        )
        if refusal is not None:
            raise AddressRefused(_refused(candidate, refusal))
        found = await self._addresses(candidate)
        await self._screen(candidate, found)
        return found

    async def _screen(self, candidate: Candidate, found: list[Destination]) -> None:
        """Refuse the candidate when one of its addresses is refused: a name that
        leads partly inside must not be usable to reach inside."""
        policy = self.policy
        for own_known in (False, True):
            own = await self._own_addresses() if own_known else ()
            for server in found:
                refusal = policy.address_refusal(
                    server.address, server.port, own=own, operator=candidate.operator
                )
                if refusal is not None:
                    raise AddressRefused(_refused(candidate, refusal))
            # mailmoat's own host name matters only where its addresses would be
            # refused: its SMTP port (a loop) and, unless allowed, any port.
            lenient = policy.allow_private or candidate.operator
            if not policy.own_names or (lenient and candidate.port not in policy.smtp_ports):
                return

    async def _own_addresses(self) -> tuple[str, ...]:
        """The addresses mailmoat's own host names resolve to now (cached; none when
        they cannot be looked up)."""
        now = time.monotonic()
        if self._own is not None and now - self._own[0] < self.cache_seconds:
            return self._own[1]
        found: list[str] = []
        for name in sorted(self.policy.own_names):
            for rdtype in ("A", "AAAA"):
                # Not found or no answer: only the configured listeners count.
                with contextlib.suppress(Exception):
                    found += [str(r.address) for r in await self._query(name, rdtype)]
        self._own = (now, tuple(found))
        return self._own[1]

    async def _addresses(self, candidate: Candidate) -> list[Destination]:
        literal = _literal(candidate.host)
        if literal is not None:
            return [Destination(literal, candidate.port, literal)]
        name = candidate.host.rstrip(".")
        found: list[str] = []
        errors: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                found += [str(r.address) for r in await self._query(name, rdtype)]
            except Exception as exc:
                errors.append(str(exc) or type(exc).__name__)
        if found:
            return [Destination(address, candidate.port, candidate.host) for address in found]
        if errors:
            raise Unresolvable(f"451 4.4.3 cannot resolve {candidate.host}: {errors[0]}")
        raise NoAddress(f"451 4.4.4 {candidate.host} has no IP address")

    async def _query(self, name: str, rdtype: str) -> list[Any]:
        if self.resolver is None:
            raise Unresolvable(f"451 4.4.3 no resolver to look up {name}")
        key = (name.lower(), rdtype)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        records = await asyncio.to_thread(self.resolver.query, name, rdtype)
        if len(self._cache) >= _CACHE_ENTRIES:  # forget what has expired, or everything
            fresh = {k: v for k, v in self._cache.items() if now - v[0] < self.cache_seconds}
            self._cache = fresh if len(fresh) < _CACHE_ENTRIES else {}
        self._cache[key] = (now, records)
        return records


def _refused(candidate: Candidate, refusal: Refusal) -> str:
    status = "4.4.6" if refusal.loop else "4.7.0"  # RFC 3463: routing loop; policy
    return f"451 {status} {candidate} refused by address policy: {refusal}"
