"""Wire models of /inbound/v1, field names as in the 1.2.0 specification."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from mailmoat.domain.downstream import DownstreamAddress
from mailmoat.services.domain_models import DomainSections, DomainView, SettingsPatch
from mailmoat.services.lists import ListItemView

Policy = Literal["block", "flag", "quarantine"]


class DomainSettingsIn(BaseModel):
    abusePolicy: Policy | None = None
    abusePolicyOverride: bool | None = None
    spamHeaderName: str | None = Field(None, min_length=1, max_length=76)
    spamHeaderValue: str | None = Field(None, min_length=1, max_length=998)

    def patch(self) -> SettingsPatch:
        return SettingsPatch(
            abuse_policy=self.abusePolicy,
            abuse_policy_override=self.abusePolicyOverride,
            spam_header_name=self.spamHeaderName,
            spam_header_value=self.spamHeaderValue,
        )


class DomainSettingsOut(BaseModel):
    abusePolicy: Policy
    abusePolicyOverride: bool
    spamHeaderName: str
    spamHeaderValue: str


class DownstreamAddressModel(BaseModel):
    priority: int = Field(ge=0, le=65535, description="lowest number is tried first")
    weight: int = Field(ge=0, le=65535, description="share of traffic within a priority")
    port: int = Field(ge=1, le=65535)
    target: str = Field(
        min_length=1,
        max_length=255,
        description="hostname (with or without the final dot) or literal IP address",
    )

    def to_domain(self) -> DownstreamAddress:
        return DownstreamAddress(self.priority, self.weight, self.port, self.target)

    @classmethod
    def of(cls, record: DownstreamAddress) -> DownstreamAddressModel:
        return cls(
            priority=record.priority, weight=record.weight, port=record.port, target=record.target
        )


class DomainSectionsIn(BaseModel):
    settings: DomainSettingsIn | None = None
    admins: list[str] | None = Field(None, max_length=1000)
    downstreamAddresses: list[DownstreamAddressModel] | None = Field(None, max_length=10)
    aliases: list[str] | None = Field(None, max_length=1000)

    def sections(self) -> DomainSections:
        return DomainSections(
            settings=self.settings.patch() if self.settings else None,
            admins=self.admins,
            downstreams=(
                [d.to_domain() for d in self.downstreamAddresses]
                if self.downstreamAddresses is not None
                else None
            ),
            aliases=self.aliases,
        )


class CompleteDomainSettingsIn(DomainSettingsIn):
    """Body of PUT /domains/{domain}/settings: settings fields and sections, flat."""

    admins: list[str] | None = Field(None, max_length=1000)
    downstreamAddresses: list[DownstreamAddressModel] | None = Field(None, max_length=10)
    aliases: list[str] | None = Field(None, max_length=1000)

    def sections(self) -> DomainSections:
        fields = (
            self.abusePolicy,
            self.abusePolicyOverride,
            self.spamHeaderName,
            self.spamHeaderValue,
        )
        return DomainSectionsIn(
            settings=self if any(f is not None for f in fields) else None,
            admins=self.admins,
            downstreamAddresses=self.downstreamAddresses,
            aliases=self.aliases,
        ).sections()


class DomainIn(DomainSectionsIn):
    domain: str = Field(max_length=1024, description="U-label or A-label form")
    subscriptionHandle: str = Field(max_length=128)


class DomainOut(BaseModel):
    domain: str = Field(description="the domain in U-label (Unicode) form")
    subscriptionHandle: str
    settings: DomainSettingsOut
    admins: list[str]
    downstreamAddresses: list[DownstreamAddressModel]
    aliases: list[str]

    @classmethod
    def of(cls, view: DomainView) -> DomainOut:
        return cls(
            domain=view.name.unicode,
            subscriptionHandle=view.subscription_handle,
            settings=DomainSettingsOut(
                abusePolicy=view.settings.abuse_policy.value,
                abusePolicyOverride=view.settings.abuse_policy_override,
                spamHeaderName=view.settings.spam_header_name,
                spamHeaderValue=view.settings.spam_header_value,
            ),
            admins=view.admins,
            downstreamAddresses=[DownstreamAddressModel.of(d) for d in view.downstreams],
            aliases=[a.unicode for a in view.aliases],
        )


class GetDomainsResponse(BaseModel):
    domains: list[DomainOut]
    total: int


class BatchDomainIn(BaseModel):
    """A batch item: note the singular ``downstreamAddress``, as in the specification."""

    domain: str = Field(max_length=1024)
    downstreamAddress: list[DownstreamAddressModel] | None = Field(None, max_length=10)
    settings: DomainSettingsIn | None = None
    aliases: list[str] | None = Field(None, max_length=1000)
    admins: list[str] | None = Field(None, max_length=1000)

    def sections(self) -> DomainSections:
        return DomainSectionsIn(
            settings=self.settings,
            admins=self.admins,
            downstreamAddresses=self.downstreamAddress,
            aliases=self.aliases,
        ).sections()


class BatchDomainsIn(BaseModel):
    domains: list[BatchDomainIn] = Field(max_length=1000)


class DomainBrief(BaseModel):
    """A domain that could not be provisioned: only what the request said."""

    domain: str
    subscriptionHandle: str


class CommentedDomain(BaseModel):
    domain: DomainOut | DomainBrief = Field(
        description="the domain as provisioned; on an error, the name from the request"
    )
    code: int
    comment: str | None = None


class BatchDomainsResponse(BaseModel):
    successes: list[CommentedDomain]
    errors: list[CommentedDomain]


class DomainRef(BaseModel):
    domain: str = Field(max_length=1024)


class DomainRefs(BaseModel):
    domains: list[DomainRef] = Field(min_length=1, max_length=1000)


class CommentedLoginLink(BaseModel):
    domain: str
    code: int
    comment: str | None = None
    loginLink: str | None = None


class BatchLoginLinksResponse(BaseModel):
    successes: list[CommentedLoginLink]
    errors: list[CommentedLoginLink]


class CommentedDeprovision(BaseModel):
    domain: str
    code: int
    comment: str | None = None


class BatchDeprovisionResponse(BaseModel):
    successes: list[CommentedDeprovision]
    errors: list[CommentedDeprovision]


class LoginLinkResponse(BaseModel):
    loginLink: str


class AliasResponse(BaseModel):
    domain: DomainOut
    alias: str


class ListPost(BaseModel):
    item: str = Field(max_length=1024)


class ListItem(BaseModel):
    item: str
    item_type: Literal["domain", "email_address", "ip_address"]
    action: Literal["safelist", "blocklist"]

    @classmethod
    def of(cls, view: ListItemView) -> ListItem:
        return cls.model_validate(
            {"item": view.item, "item_type": view.item_type, "action": view.action}
        )


class DownstreamRecords(BaseModel):
    records: list[DownstreamAddressModel] = Field(max_length=10)


class ApiKeyUpdate(BaseModel):
    apiKey: str = Field(max_length=200)


class Limit(BaseModel):
    featureHandle: str
    value: str


class Plan(BaseModel):
    handle: str
    name: str


class SubscriptionOut(BaseModel):
    handle: str
    active: bool
    plan: Plan
    limits: list[Limit]
    activeAccountsCount: int


class StatusResponse(BaseModel):
    status: Literal["ok"]
    version: str


class ListEntriesIn(BaseModel):
    safelist: list[str] | None = Field(None, max_length=1000)
    blocklist: list[str] | None = Field(None, max_length=1000)


class PutUserIn(BaseModel):
    list_entries: ListEntriesIn | None = None


class RecipientOut(BaseModel):
    email_address: str
    roles: list[str]
    filter: bool | None


class PutUserResponse(BaseModel):
    recipient: RecipientOut
    list_entries: list[ListItem]


class EnvelopeInformation(BaseModel):
    ehlo: str | None = Field(None, max_length=255)
    mailFrom: str | None = Field(None, max_length=320)
    rcptTo: str | None = Field(None, max_length=320)


class HostInformation(BaseModel):
    name: str | None = Field(None, max_length=255)


class ReportIn(BaseModel):
    messageContent: str
    smtpEnvelopeInformation: EnvelopeInformation | None = None
    sendingHostInformation: HostInformation | None = None


class ApiKeyCreate(BaseModel):
    description: str = Field("", max_length=500)


class ApiKeyOut(BaseModel):
    id: str
    prefix: str = Field(description="the first characters of the key, to recognise it")
    description: str
    createdAt: datetime


class ApiKeyCreated(ApiKeyOut):
    apiKey: str = Field(description="the key itself; shown only in this response")
