"""From a verdict to what happens to the message: accept, flag, quarantine or block."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailmoat.domain.settings import AbusePolicy


class Action(enum.StrEnum):
    ACCEPT = "accept"
    FLAG = "flag"
    QUARANTINE = "quarantine"
    BLOCK = "block"


class DmarcPolicy(enum.StrEnum):
    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


def effective_policy(
    domain_policy: AbusePolicy, override: bool, user_policy: AbusePolicy | None
) -> AbusePolicy:
    """The abuse policy that applies to one recipient.

    A user's own policy wins unless the domain sets ``abusePolicyOverride``, in
    which case the domain's policy applies to every user of the domain.
    """
    if override or user_policy is None:
        return domain_policy
    return user_policy


def action_for(policy: AbusePolicy) -> Action:
    return {
        AbusePolicy.BLOCK: Action.BLOCK,
        AbusePolicy.FLAG: Action.FLAG,
        AbusePolicy.QUARANTINE: Action.QUARANTINE,
    }[policy]


@dataclass(frozen=True, slots=True)
class Profile:
    """What the recipients of one SMTP transaction must share so that one reply to
    DATA is right for all of them: the customer (whose classifier scores the mail),
    the abuse policy, and whether, and why, filtering is skipped.

    A recipient with another profile is deferred (452) to a transaction of its own.
    """

    customer_id: str
    policy: AbusePolicy
    unscanned_reason: str | None


def recipient_profile(
    customer_id: str,
    *,
    domain_policy: AbusePolicy,
    override: bool,
    user_policy: AbusePolicy | None,
    filtered: bool,
    safelist_rule: str | None,
) -> Profile:
    """The profile of one recipient: a safelisted sender or a user whose filter is off
    skip filtering (the safelist named first, as the reason recorded)."""
    policy = effective_policy(domain_policy, override, user_policy)
    if safelist_rule is not None:
        return Profile(customer_id, policy, safelist_rule)
    if not filtered:
        return Profile(customer_id, policy, "filter-off")
    return Profile(customer_id, policy, None)
