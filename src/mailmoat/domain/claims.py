"""Which names a customer may hold here, without I/O.

One rule for every name mail is routed by: provisioned domains, their aliases and
the custom domains of webhook addresses. Nobody may hold a public suffix
(``co.uk``: nobody owns all of it), nor mailmoat's own host name or webhook
address domain, any name under them or any parent of them.

Between customers, a name held by one (``sub.example.com``) makes its parents that
are not public suffixes (``example.com``) that customer's too: nobody else may
hold a parent, a name under it or a sibling below it. The database enforces this
through one row per name (see db/claims_repo.py); ``tree`` says which rows a name
needs. One customer may nest its own names freely.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mailmoat.domain.names import InvalidName, parse_domain


def _single_label(name: str) -> bool:
    return "." not in name


def base_of(name_ascii: str) -> str:
    """The domain a claim is about: ``*.example.com`` (a wildcard custom domain) is
    about ``example.com``."""
    return name_ascii[2:] if name_ascii.startswith("*.") else name_ascii


def _ascii(name: str) -> str:
    try:
        return parse_domain(name).ascii
    except InvalidName:
        return name.lower()


def _under(name: str, parent: str) -> bool:
    return name.endswith("." + parent)


@dataclass(frozen=True, slots=True)
class NameRules:
    """The rule, configured by the composition root: the public suffix list lives in
    pipeline/, mailmoat's own names in the settings."""

    is_public_suffix: Callable[[str], bool] = _single_label
    own_names: tuple[str, ...] = ()

    def with_own_names(self, names: Iterable[str]) -> NameRules:
        """These rules with more of mailmoat's own names, in A-label form; names of a
        single label (a machine's short host name) cannot collide and are left out."""
        cleaned = [_ascii(n.strip().rstrip(".")) for n in names]
        kept = tuple(dict.fromkeys([*self.own_names, *(n for n in cleaned if "." in n)]))
        return NameRules(self.is_public_suffix, kept)

    def refusal(self, name_ascii: str, shown: str) -> str | None:
        """Why nobody may hold this name here, or None. ``shown`` names it in the text."""
        base = base_of(name_ascii)
        if self.is_public_suffix(base):
            return f"{shown} is a public suffix: nobody owns all of it"
        for own in self.own_names:
            if base == own:
                return f"{shown} is mailmoat's own name here"
            if _under(base, own):
                return f"{shown} is under mailmoat's own name {own}"
            if _under(own, base):
                return f"{shown} is a parent of mailmoat's own name {own}"
        return None

    def parents(self, name_ascii: str) -> list[str]:
        """The names a claim makes the customer's too: its parents that are not public
        suffixes (for ``*.example.com``, ``example.com`` and up), nearest first."""
        base = base_of(name_ascii)
        labels = base.split(".")
        start = 0 if base != name_ascii else 1
        found = [".".join(labels[i:]) for i in range(start, len(labels))]
        return [p for p in found if not self.is_public_suffix(p)]
