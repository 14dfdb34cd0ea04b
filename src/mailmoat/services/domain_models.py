"""What services take in and hand out about domains, independent of any wire format."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailmoat.domain.addresses import AddressPolicy
from mailmoat.domain.downstream import (
    MAX_DOWNSTREAM_ADDRESSES,
    DownstreamAddress,
    validate_downstream,
)
from mailmoat.domain.names import DomainName, InvalidName, parse_domain, parse_email
from mailmoat.domain.settings import (
    AbusePolicy,
    DomainSettings,
    validate_header_name,
    validate_header_value,
)
from mailmoat.services.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class SettingsPatch:
    """Settings fields sent by a client; None means "leave as it is"."""

    abuse_policy: str | None = None
    abuse_policy_override: bool | None = None
    spam_header_name: str | None = None
    spam_header_value: str | None = None

    def apply(self, current: DomainSettings) -> DomainSettings:
        policy = current.abuse_policy
        if self.abuse_policy is not None:
            try:
                policy = AbusePolicy(self.abuse_policy)
            except ValueError:
                raise InvalidName(
                    f"abusePolicy must be one of block, flag, quarantine, not {self.abuse_policy!r}"
                ) from None
        return DomainSettings(
            abuse_policy=policy,
            abuse_policy_override=(
                current.abuse_policy_override
                if self.abuse_policy_override is None
                else self.abuse_policy_override
            ),
            spam_header_name=(
                current.spam_header_name
                if self.spam_header_name is None
                else validate_header_name(self.spam_header_name)
            ),
            spam_header_value=(
                current.spam_header_value
                if self.spam_header_value is None
                else validate_header_value(self.spam_header_value)
            ),
        )


@dataclass(frozen=True, slots=True)
class DomainSections:
    """The replaceable sections of a domain; None means "not in the request"."""

    settings: SettingsPatch | None = None
    admins: list[str] | None = None
    downstreams: list[DownstreamAddress] | None = None
    aliases: list[str] | None = None


@dataclass(frozen=True, slots=True)
class ParsedSections:
    settings: SettingsPatch | None
    admins: list[str] | None
    downstreams: list[DownstreamAddress] | None
    aliases: list[DomainName] | None


@dataclass(slots=True)
class DomainView:
    name: DomainName
    subscription_handle: str
    settings: DomainSettings
    admins: list[str] = field(default_factory=list)
    downstreams: list[DownstreamAddress] = field(default_factory=list)
    aliases: list[DomainName] = field(default_factory=list)


def parse_sections(
    sections: DomainSections, *, own_name: DomainName, targets: AddressPolicy
) -> ParsedSections:
    """Validate everything in the request before anything is written; downstream
    targets must pass the address policy ``targets``."""
    try:
        if sections.settings is not None:
            sections.settings.apply(DomainSettings())  # validates the fields
        admins = None
        if sections.admins is not None:
            admins = sorted({parse_email(a).ascii for a in sections.admins})
        downstreams = None
        if sections.downstreams is not None:
            if len(sections.downstreams) > MAX_DOWNSTREAM_ADDRESSES:
                raise InvalidName(
                    f"at most {MAX_DOWNSTREAM_ADDRESSES} downstream addresses are allowed"
                )
            downstreams = [validate_downstream(d) for d in sections.downstreams]
            for record in downstreams:
                refusal = targets.host_refusal(record.target, record.port)
                if refusal is not None:
                    raise InvalidName(f"downstream {record.target} is refused: {refusal}")
        aliases = None
        if sections.aliases is not None:
            unique: dict[str, DomainName] = {}
            for raw in sections.aliases:
                alias = parse_domain(raw)
                if alias.ascii == own_name.ascii:
                    raise InvalidName(f"{raw!r} cannot be an alias of itself")
                unique[alias.ascii] = alias
            aliases = list(unique.values())
    except InvalidName as exc:
        raise InvalidInput(str(exc)) from None
    return ParsedSections(sections.settings, admins, downstreams, aliases)


def parse_domain_input(raw: str) -> DomainName:
    try:
        return parse_domain(raw)
    except InvalidName as exc:
        raise InvalidInput(str(exc)) from None
