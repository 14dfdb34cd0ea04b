"""Which abuse policy applies to a recipient, and which recipients may share a transaction."""

from __future__ import annotations

import pytest

from mailmoat.domain.policy import Profile, effective_policy, recipient_profile
from mailmoat.domain.settings import AbusePolicy

BLOCK, FLAG, QUARANTINE = AbusePolicy.BLOCK, AbusePolicy.FLAG, AbusePolicy.QUARANTINE


@pytest.mark.parametrize(
    ("domain", "override", "user", "expected"),
    [
        (QUARANTINE, False, None, QUARANTINE),
        (QUARANTINE, False, BLOCK, BLOCK),
        (QUARANTINE, True, BLOCK, QUARANTINE),
        (FLAG, True, None, FLAG),
    ],
)
def test_effective_policy(
    domain: AbusePolicy, override: bool, user: AbusePolicy | None, expected: AbusePolicy
) -> None:
    assert effective_policy(domain, override, user) is expected


def profile(
    *,
    domain_policy: AbusePolicy = QUARANTINE,
    user_policy: AbusePolicy | None = None,
    filtered: bool = True,
    safelist_rule: str | None = None,
) -> Profile:
    return recipient_profile(
        "customer-1",
        domain_policy=domain_policy,
        override=False,
        user_policy=user_policy,
        filtered=filtered,
        safelist_rule=safelist_rule,
    )


def test_filtered_recipients_of_one_customer_and_policy_share_a_profile() -> None:
    assert profile() == profile()
    assert profile().unscanned_reason is None


@pytest.mark.parametrize(
    "changes",
    [
        {"domain_policy": BLOCK},
        {"user_policy": FLAG},
        {"filtered": False},
        {"safelist_rule": "domain-safelist"},
    ],
)
def test_recipients_filtered_differently_do_not_share_a_profile(
    changes: dict[str, object],
) -> None:
    assert profile(**changes) != profile()  # type: ignore[arg-type]


def test_another_customer_never_shares_a_profile() -> None:
    assert (
        recipient_profile(
            "customer-2",
            domain_policy=QUARANTINE,
            override=False,
            user_policy=None,
            filtered=True,
            safelist_rule=None,
        )
        != profile()
    )


def test_a_safelist_names_the_reason_even_when_the_filter_is_off() -> None:
    assert profile(filtered=False).unscanned_reason == "filter-off"
    reason = profile(filtered=False, safelist_rule="user-safelist").unscanned_reason
    assert reason == "user-safelist"
