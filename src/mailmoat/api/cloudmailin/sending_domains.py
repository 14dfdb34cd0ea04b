"""Sending domains: a DKIM key per domain and the DNS records that authorise the gateway."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from mailmoat.api.auth import ServicesDep
from mailmoat.api.cloudmailin.auth import PREFIX, AccountCaller
from mailmoat.api.errors import documented
from mailmoat.services.sending_domains import SendingDomainView

router = APIRouter(prefix=PREFIX, tags=["sending domains"])

DomainId = Annotated[str, Path(pattern="^[0-9a-f]{20}$", description="sending domain id")]
Purpose = Literal["dkim", "spf", "return_path"]


class SendingDomainIn(BaseModel):
    domain: str = Field(max_length=260, description="example.com; IDN in either form")
    selector: str | None = Field(
        None,
        max_length=63,
        description="DKIM selector; default: a new one (mm + 8 hex digits) for each domain",
    )


class DnsRecordOut(BaseModel):
    purpose: Purpose
    type: Literal["TXT", "CNAME"]
    name: str = Field(description="A-label form, without trailing dot")
    value: str = Field(
        description="TXT: the text (DNS servers split it in 255-byte strings); CNAME: the target"
    )


class CheckOut(BaseModel):
    purpose: Purpose
    ok: bool
    found: list[str] = Field(description="what the lookup found at the record's name")
    detail: str


class SendingDomainOut(BaseModel):
    id: str
    domain: str = Field(description="U-label form")
    selector: str
    dns_records: list[DnsRecordOut] = Field(description="publish these, then verify")
    verified: bool
    verified_at: datetime | None = Field(description="since when every check has passed")
    checked_at: datetime | None = Field(description="the last verification")
    checks: list[CheckOut] = Field(description="the outcome of the last verification")
    created_at: datetime


def _out(view: SendingDomainView) -> SendingDomainOut:
    return SendingDomainOut(
        id=view.id,
        domain=view.domain,
        selector=view.selector,
        dns_records=[
            DnsRecordOut.model_validate(
                {"purpose": r.purpose, "type": r.type, "name": r.name, "value": r.value}
            )
            for r in view.dns_records
        ],
        verified=view.verified,
        verified_at=view.verified_at,
        checked_at=view.checked_at,
        checks=[
            CheckOut.model_validate(
                {"purpose": c.purpose, "ok": c.ok, "found": c.found, "detail": c.detail}
            )
            for c in view.checks
        ],
        created_at=view.created_at,
    )


@router.get(
    "/sending_domains", response_model=list[SendingDomainOut], responses=documented(401, 403)
)
async def list_sending_domains(caller: AccountCaller, svc: ServicesDep) -> list[SendingDomainOut]:
    """The account's sending domains, by name."""
    return [_out(v) for v in await svc.sending_domains.domains(caller)]


@router.post(
    "/sending_domains",
    response_model=SendingDomainOut,
    status_code=201,
    responses=documented(400, 401, 403, 409),
)
async def add_sending_domain(
    caller: AccountCaller, svc: ServicesDep, body: SendingDomainIn
) -> SendingDomainOut:
    """Make a DKIM key for the domain and answer with the DNS records to publish.

    Another account may add the same domain: each proves it by publishing its records.
    """
    return _out(await svc.sending_domains.create(caller, body.domain, body.selector))


@router.get(
    "/sending_domains/{domain_id}",
    response_model=SendingDomainOut,
    responses=documented(401, 403, 404),
)
async def get_sending_domain(
    caller: AccountCaller, svc: ServicesDep, domain_id: DomainId
) -> SendingDomainOut:
    return _out(await svc.sending_domains.get(caller, domain_id))


@router.delete("/sending_domains/{domain_id}", status_code=204, responses=documented(401, 403, 404))
async def delete_sending_domain(
    caller: AccountCaller, svc: ServicesDep, domain_id: DomainId
) -> Response:
    """Forget the domain and its DKIM key."""
    await svc.sending_domains.delete(caller, domain_id)
    return Response(status_code=204)


@router.post(
    "/sending_domains/{domain_id}/verify",
    response_model=SendingDomainOut,
    responses=documented(401, 403, 404, 503),
)
async def verify_sending_domain(
    caller: AccountCaller, svc: ServicesDep, domain_id: DomainId
) -> SendingDomainOut:
    """Look the records up now. A lookup that fails (a timeout) fails its check, and
    leaves an earlier verification as it was; a missing or wrong record ends it."""
    return _out(await svc.sending_domains.verify(caller, domain_id))
