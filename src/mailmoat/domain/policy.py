"""From a verdict to what happens to the message: accept, flag, quarantine or block."""

from __future__ import annotations

import enum

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
