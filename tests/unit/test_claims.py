"""The pure rule of which names a customer may hold."""

from __future__ import annotations

import pytest

from mailmoat.domain.claims import NameRules
from mailmoat.pipeline.auth import is_public_suffix

RULES = NameRules(is_public_suffix).with_own_names(["MX.Gateway.Example.", "hooks.invalid", "host"])


def test_own_names_are_cleaned_and_single_labels_dropped() -> None:
    assert RULES.own_names == ("mx.gateway.example", "hooks.invalid")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("co.uk", "public suffix"),
        ("*.co.uk", "public suffix"),
        ("xn--55qx5d.cn", "public suffix"),
        ("mx.gateway.example", "own name"),
        ("a.mx.gateway.example", "under mailmoat's own name"),
        ("*.mx.gateway.example", "own name"),
        ("gateway.example", "parent of mailmoat's own name"),
        ("*.gateway.example", "parent of mailmoat's own name"),
        ("x.hooks.invalid", "under mailmoat's own name"),
    ],
)
def test_refused(name: str, reason: str) -> None:
    refusal = RULES.refusal(name, name)
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize("name", ["example.co.uk", "shop.gateway.example", "*.example.com"])
def test_allowed(name: str) -> None:
    assert RULES.refusal(name, name) is None


@pytest.mark.parametrize(
    ("name", "parents"),
    [
        ("example.com", []),
        ("a.b.example.co.uk", ["b.example.co.uk", "example.co.uk"]),
        ("*.example.com", ["example.com"]),
        ("*.b.example.com", ["b.example.com", "example.com"]),
        ("alice.github.io", []),  # github.io is a public suffix: nobody holds it
    ],
)
def test_parents_stop_at_public_suffixes(name: str, parents: list[str]) -> None:
    assert RULES.parents(name) == parents
