"""The chain: from findings to one action for the message."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mailmoat.domain.policy import Action, action_for
from mailmoat.domain.settings import AbusePolicy
from mailmoat.pipeline.rules import Demand, Finding


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    detail: str


def decide(findings: Iterable[Finding | None], policy: AbusePolicy) -> Decision:
    """The strongest demand wins; among equals the first finding gives the reason.

    ``BLOCK`` refuses; ``POLICY`` applies the abuse policy; otherwise the message
    is accepted as it is.
    """
    strongest: Finding | None = None
    for finding in findings:
        if finding is None or finding.demand is Demand.NOTE:
            continue
        if strongest is None or finding.demand > strongest.demand:
            strongest = finding
    if strongest is None:
        return Decision(Action.ACCEPT, "clean", "")
    if strongest.demand is Demand.BLOCK:
        return Decision(Action.BLOCK, strongest.rule, strongest.detail)
    return Decision(action_for(policy), strongest.rule, strongest.detail)
