"""Safelist/blocklist endpoints at account (/lists), domain and user tier."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from mailmoat.api.auth import CallerDep, ServicesDep
from mailmoat.api.errors import documented
from mailmoat.api.inbound_v1.schemas import ListItem, ListPost
from mailmoat.domain.lists import ListName

router = APIRouter(tags=["lists"])

Item = Annotated[str, Query(max_length=1024, description="the entry to remove")]
DomainPath = Annotated[str, Path(max_length=1024)]
EmailPath = Annotated[str, Path(max_length=1024, description="the recipient; '@' may be raw")]
ERRORS = documented(400, 401, 403, 404, 503)


@router.get("/lists/{listname}", response_model=list[ListItem], responses=ERRORS)
async def account_entries(
    caller: CallerDep, svc: ServicesDep, listname: ListName
) -> list[ListItem]:
    return [ListItem.of(v) for v in await svc.lists.entries(caller, listname.action)]


@router.post("/lists/{listname}", status_code=201, response_model=ListItem, responses=ERRORS)
async def add_account_entry(
    caller: CallerDep, svc: ServicesDep, listname: ListName, item: ListPost
) -> ListItem:
    return ListItem.of(await svc.lists.add(caller, listname.action, item.item))


@router.delete("/lists/{listname}", status_code=204, responses=ERRORS)
async def remove_account_entry(
    caller: CallerDep, svc: ServicesDep, listname: ListName, item: Item
) -> Response:
    await svc.lists.remove(caller, listname.action, item)
    return Response(status_code=204)


@router.get("/domains/{domain}/lists/{listname}", response_model=list[ListItem], responses=ERRORS)
async def domain_entries(
    caller: CallerDep, svc: ServicesDep, domain: DomainPath, listname: ListName
) -> list[ListItem]:
    entries = await svc.lists.entries(caller, listname.action, domain=domain)
    return [ListItem.of(v) for v in entries]


@router.post(
    "/domains/{domain}/lists/{listname}",
    status_code=201,
    response_model=ListItem,
    responses=ERRORS,
)
async def add_domain_entry(
    caller: CallerDep, svc: ServicesDep, domain: DomainPath, listname: ListName, item: ListPost
) -> ListItem:
    return ListItem.of(await svc.lists.add(caller, listname.action, item.item, domain=domain))


@router.delete("/domains/{domain}/lists/{listname}", status_code=204, responses=ERRORS)
async def remove_domain_entry(
    caller: CallerDep, svc: ServicesDep, domain: DomainPath, listname: ListName, item: Item
) -> Response:
    await svc.lists.remove(caller, listname.action, item, domain=domain)
    return Response(status_code=204)


@router.get("/users/{email:path}/lists/{listname}", response_model=list[ListItem], responses=ERRORS)
async def user_entries(
    caller: CallerDep, svc: ServicesDep, email: EmailPath, listname: ListName
) -> list[ListItem]:
    return [ListItem.of(v) for v in await svc.lists.entries(caller, listname.action, user=email)]


@router.post(
    "/users/{email:path}/lists/{listname}",
    status_code=201,
    response_model=ListItem,
    responses=ERRORS,
)
async def add_user_entry(
    caller: CallerDep, svc: ServicesDep, email: EmailPath, listname: ListName, item: ListPost
) -> ListItem:
    return ListItem.of(await svc.lists.add(caller, listname.action, item.item, user=email))


@router.delete("/users/{email:path}/lists/{listname}", status_code=204, responses=ERRORS)
async def remove_user_entry(
    caller: CallerDep, svc: ServicesDep, email: EmailPath, listname: ListName, item: Item
) -> Response:
    await svc.lists.remove(caller, listname.action, item, user=email)
    return Response(status_code=204)
