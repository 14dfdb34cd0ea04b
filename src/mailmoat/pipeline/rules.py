"""Named checks over what is known about a message. Each returns a finding or None.

A finding says what the rule asks for: ``BLOCK`` refuses the message whatever the
domain's policy, ``POLICY`` hands it to the recipient's abuse policy (flag,
quarantine or block), ``NOTE`` only records that the rule fired.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailmoat.domain.policy import DmarcPolicy
from mailmoat.pipeline.auth import AuthResult
from mailmoat.scanners.base import ScanResult, Verdict


class Demand(enum.IntEnum):
    NOTE = 0
    POLICY = 1
    BLOCK = 2


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    demand: Demand
    detail: str
    score: float = 0.0


def dmarc_rule(auth: AuthResult | None) -> Finding | None:
    """The sender domain's DMARC policy, applied when DMARC fails."""
    if auth is None or auth.dmarc != "fail" or auth.dmarc_policy is None:
        return None
    domain = auth.from_domain or "the sender domain"
    if auth.dmarc_policy == DmarcPolicy.REJECT:
        return Finding("dmarc-reject", Demand.BLOCK, f"DMARC policy of {domain} is reject")
    if auth.dmarc_policy == DmarcPolicy.QUARANTINE:
        return Finding("dmarc-quarantine", Demand.POLICY, f"DMARC policy of {domain} is quarantine")
    return Finding("dmarc-none", Demand.NOTE, f"DMARC fails for {domain}, policy none")


def spf_rule(auth: AuthResult | None) -> Finding | None:
    """SPF alone decides nothing (DMARC does); a hard fail is recorded."""
    if auth is None or auth.spf != "fail":
        return None
    return Finding("spf-fail", Demand.NOTE, "SPF hard fail")


def spam_rule(scan: ScanResult | None) -> Finding | None:
    if scan is None or scan.verdict is not Verdict.SPAM:
        return None
    return Finding(
        "spam-score",
        Demand.POLICY,
        f"spam score {scan.score:.1f} reached {scan.threshold:.1f} ({scan.scanner})",
        scan.score,
    )
