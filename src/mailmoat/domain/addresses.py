"""The address policy: which hosts and addresses mailmoat may connect to.

One rule for every outbound target (downstream servers, the MX of a DSN's
recipient, webhooks): private, loopback, link-local, reserved and mailmoat's own
addresses are refused unless the operator allows private targets, and mailmoat's
own SMTP listener is refused always, since mail sent there comes straight back (a
loop). Targets are checked when they are set (IP literals, names of mailmoat
itself) and at every connection, after their names are resolved.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")
NOT_ALLOWED = "private or loopback targets are not allowed by the operator"


def parse_ip(text: str) -> IP | None:
    """An IP address (brackets allowed), or None when ``text`` is not one."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return None


def effective_ip(ip: IP) -> IP:
    """The address a connection really reaches: an IPv6 address carrying an IPv4
    one (mapped, 6to4, NAT64, compatible) leads to that IPv4 address."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _NAT64_LOCAL or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def is_public_address(address: str) -> bool:
    """Whether an IP address is on the public internet (not private, loopback,
    link-local, shared, reserved, multicast or unspecified)."""
    ip = parse_ip(address)
    if ip is None:
        return False
    ip = effective_ip(ip)
    return ip.is_global and not ip.is_multicast


def _kind(ip: IP) -> str:
    if ip.is_unspecified or ip.is_loopback:  # 0.0.0.0 and :: connect to this machine
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    return "non-public"


def _local(ip: IP) -> bool:
    """Connecting to it reaches this machine: loopback, or unspecified (Linux and
    BSD connect to the machine itself for 0.0.0.0 and ::)."""
    return ip.is_loopback or ip.is_unspecified


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a target is refused; ``loop`` when it is mailmoat's own SMTP listener."""

    reason: str
    loop: bool = False

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The operator's choice and what mailmoat knows about itself.

    ``smtp_listeners`` are (address, port) pairs mailmoat accepts mail on; an
    unspecified address (0.0.0.0, ::) means every address of the machine.
    ``own_addresses`` are addresses of mailmoat's listeners (SMTP and API);
    ``own_names`` the host names it is configured with.
    """

    allow_private: bool = False
    own_names: frozenset[str] = frozenset()
    own_addresses: frozenset[str] = frozenset()
    smtp_listeners: frozenset[tuple[str, int]] = frozenset()

    def allowing(self, allow_private: bool) -> AddressPolicy:
        """The same policy with another operator choice about private targets."""
        return AddressPolicy(allow_private, self.own_names, self.own_addresses, self.smtp_listeners)

    @property
    def smtp_ports(self) -> frozenset[int]:
        return frozenset(port for _, port in self.smtp_listeners)

    def host_refusal(self, host: str, port: int, *, operator: bool = False) -> Refusal | None:
        """Why a target as written (a name or an IP literal) is refused, or None.

        A name is checked for what it says by itself (mailmoat's own name,
        localhost); what it resolves to is checked with ``address_refusal`` at
        each connection. ``operator``: a target the operator configured, only
        refused when it is mailmoat's own SMTP listener.
        """
        ip = parse_ip(host)
        if ip is not None:
            return self.address_refusal(str(ip), port, operator=operator)
        name = host.rstrip(".").lower()
        if name in self.own_names and port in self.smtp_ports:
            return Refusal(f"{name}:{port} is mailmoat's own SMTP listener (mail would loop)", True)
        if self.allow_private or operator:
            return None
        if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
            return Refusal(f"{name} is a loopback name; {NOT_ALLOWED}")
        if name in self.own_names:
            return Refusal(f"{name} is mailmoat's own host name; {NOT_ALLOWED}")
        return None

    def address_refusal(
        self, address: str, port: int, *, own: Iterable[str] = (), operator: bool = False
    ) -> Refusal | None:
        """Why connecting to ``address``:``port`` is refused, or None.

        ``own``: further addresses of mailmoat itself, e.g. its host name's, as
        resolved now.
        """
        parsed = parse_ip(address)
        if parsed is None:
            return Refusal(f"{address} is not an IP address")
        ip = effective_ip(parsed)
        if ip != parsed:
            address = f"{address} ({ip})"
        mine = {effective_ip(a) for a in map(parse_ip, (*self.own_addresses, *own)) if a}
        if self._is_own_listener(ip, port, mine):
            return Refusal(
                f"{address} port {port} is mailmoat's own SMTP listener (mail would loop)", True
            )
        if self.allow_private or operator:
            return None
        if not is_public_address(str(ip)):
            return Refusal(f"{address} is a {_kind(ip)} address; {NOT_ALLOWED}")
        if ip in mine:
            return Refusal(f"{address} is an address of mailmoat itself; {NOT_ALLOWED}")
        return None

    def _is_own_listener(self, ip: IP, port: int, mine: set[IP]) -> bool:
        for listen, listen_port in self.smtp_listeners:
            if listen_port != port:
                continue
            bound = parse_ip(listen)
            if bound is None:
                continue
            bound = effective_ip(bound)
            if bound.is_unspecified:
                if _local(ip) or ip in mine:
                    return True
            elif ip == bound or (ip.is_unspecified and bound.is_loopback):
                return True
        return False
