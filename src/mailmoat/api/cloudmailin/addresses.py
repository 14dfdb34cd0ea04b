"""Addresses and custom domains."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from mailmoat.api.auth import ServicesDep
from mailmoat.api.cloudmailin.auth import PREFIX, AccountCaller
from mailmoat.api.errors import documented
from mailmoat.services.webhook_addresses import AddressInput, AddressView, CustomDomainView

router = APIRouter(prefix=PREFIX, tags=["webhook addresses"])

AddressId = Annotated[str, Path(pattern="^[0-9a-f]{20}$", description="address id")]
Format = Literal["json+n", "multipart+n", "raw"]
Mode = Literal["sync", "queued"]


class AddressIn(BaseModel):
    target: str = Field(
        max_length=2048, description="http(s) URL; user:password@ becomes Basic auth"
    )
    target_format: Format = "json+n"
    nickname: str | None = Field(None, max_length=200)
    mode: Mode = Field(
        "sync",
        description="sync: the webhook's answer is the SMTP reply; queued: accept, then POST "
        "with retries",
    )
    max_size: int | None = Field(None, ge=1024, description="bytes; default: the gateway's limit")


class AddressPatch(BaseModel):
    target: str | None = Field(None, max_length=2048)
    target_format: Format | None = None
    nickname: str | None = Field(None, max_length=200)
    mode: Mode | None = None
    max_size: int | None = Field(None, ge=1024)


class AddressOut(BaseModel):
    id: str
    email: str = Field(description="mail to this address (or <token>+anything@…) is posted")
    target: str
    target_format: str
    nickname: str | None
    mode: str
    max_size: int
    created_at: datetime
    updated_at: datetime


def _out(view: AddressView) -> AddressOut:
    return AddressOut(
        id=view.id,
        email=view.email,
        target=view.target,
        target_format=view.target_format,
        nickname=view.nickname,
        mode=view.mode,
        max_size=view.max_size,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


@router.get("/addresses", response_model=list[AddressOut], responses=documented(400, 401, 403))
async def list_addresses(
    caller: AccountCaller,
    svc: ServicesDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2_000_000_000)] = 0,
) -> list[AddressOut]:
    """The account's addresses, oldest first; the total is in X-Total-Count."""
    views, total = await svc.webhook_addresses.page(caller, limit, offset)
    response.headers["X-Total-Count"] = str(total)
    return [_out(v) for v in views]


@router.post(
    "/addresses",
    response_model=AddressOut,
    status_code=201,
    responses=documented(400, 401, 403),
)
async def create_address(caller: AccountCaller, svc: ServicesDep, body: AddressIn) -> AddressOut:
    view = await svc.webhook_addresses.create(
        caller,
        AddressInput(body.target, body.target_format, body.nickname, body.mode, body.max_size),
    )
    return _out(view)


@router.get(
    "/addresses/{address_id}", response_model=AddressOut, responses=documented(401, 403, 404)
)
async def get_address(caller: AccountCaller, svc: ServicesDep, address_id: AddressId) -> AddressOut:
    return _out(await svc.webhook_addresses.get(caller, address_id))


@router.put(
    "/addresses/{address_id}", response_model=AddressOut, responses=documented(400, 401, 403, 404)
)
async def update_address(
    caller: AccountCaller, svc: ServicesDep, address_id: AddressId, body: AddressPatch
) -> AddressOut:
    """Change the fields sent; the others stay."""
    view = await svc.webhook_addresses.update(
        caller,
        address_id,
        AddressInput(body.target, body.target_format, body.nickname, body.mode, body.max_size),
    )
    return _out(view)


@router.delete("/addresses/{address_id}", status_code=204, responses=documented(401, 403, 404))
async def delete_address(
    caller: AccountCaller, svc: ServicesDep, address_id: AddressId
) -> Response:
    """Mail to it is refused from now on; its messages stay in the message log."""
    await svc.webhook_addresses.delete(caller, address_id)
    return Response(status_code=204)


# -- custom domains ---------------------------------------------------------------------


class CustomDomainIn(BaseModel):
    domain: str = Field(max_length=260, description="example.com, or *.example.com")
    address_id: str = Field(pattern="^[0-9a-f]{20}$")
    pattern: str | None = Field(
        None,
        max_length=500,
        description="a regular expression the whole local part must match; "
        "none: every local part (catch-all)",
    )


class CustomDomainOut(BaseModel):
    id: str
    domain: str
    address_id: str
    pattern: str | None
    created_at: datetime


def _domain_out(view: CustomDomainView) -> CustomDomainOut:
    return CustomDomainOut(
        id=view.id,
        domain=view.domain,
        address_id=view.address_id,
        pattern=view.pattern,
        created_at=view.created_at,
    )


@router.get("/custom_domains", response_model=list[CustomDomainOut], responses=documented(401, 403))
async def list_custom_domains(
    caller: AccountCaller,
    svc: ServicesDep,
    address_id: Annotated[str | None, Query(pattern="^[0-9a-f]{20}$")] = None,
) -> list[CustomDomainOut]:
    return [_domain_out(v) for v in await svc.webhook_addresses.domains(caller, address_id)]


@router.post(
    "/custom_domains",
    response_model=CustomDomainOut,
    status_code=201,
    responses=documented(400, 401, 403, 404, 409),
)
async def add_custom_domain(
    caller: AccountCaller, svc: ServicesDep, body: CustomDomainIn
) -> CustomDomainOut:
    """Route a domain's mail (publish an MX record pointing at this gateway) to an address."""
    view = await svc.webhook_addresses.add_domain(
        caller, body.address_id, body.domain, body.pattern
    )
    return _domain_out(view)


@router.delete("/custom_domains/{domain_id}", status_code=204, responses=documented(401, 403, 404))
async def remove_custom_domain(
    caller: AccountCaller,
    svc: ServicesDep,
    domain_id: Annotated[str, Path(pattern="^[0-9a-f]{20}$")],
) -> Response:
    await svc.webhook_addresses.remove_domain(caller, domain_id)
    return Response(status_code=204)
