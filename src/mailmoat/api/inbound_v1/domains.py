"""/domains: provisioning, listing, batch operations, aliases, settings, downstreams."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response

from mailmoat.api.auth import CallerDep, ServicesDep
from mailmoat.api.errors import documented
from mailmoat.api.inbound_v1.schemas import (
    AliasResponse,
    ApiKeyUpdate,
    BatchDeprovisionResponse,
    BatchDomainsIn,
    BatchDomainsResponse,
    CommentedDeprovision,
    CommentedDomain,
    CompleteDomainSettingsIn,
    DomainBrief,
    DomainIn,
    DomainOut,
    DomainRefs,
    DownstreamAddressModel,
    DownstreamRecords,
    GetDomainsResponse,
)
from mailmoat.services.domains import BatchItem

router = APIRouter(tags=["domains"])

DomainPath = Annotated[str, Path(description="domain name, U-label or A-label", max_length=1024)]
AssociateKey = Annotated[
    bool,
    Query(alias="associate-key", description="associate the domain with the calling key"),
]
Overwrite = Annotated[
    bool,
    Query(description="replace the sections present in the request on an existing domain"),
]


def split_values(values: list[str] | None) -> list[str]:
    """Array query parameters arrive as repeated keys, comma-separated, or both."""
    return [part.strip() for v in values or [] for part in v.split(",") if part.strip()]


@router.get("/domains", response_model=GetDomainsResponse, responses=documented(400, 401, 503))
async def list_domains(
    caller: CallerDep,
    svc: ServicesDep,
    domains: Annotated[
        list[str] | None,
        Query(description="only these domains; repeat the key or separate with commas"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 10,
    offset: Annotated[int, Query(ge=0, le=2_000_000_000)] = 0,
) -> GetDomainsResponse:
    views, total = await svc.domains.page(caller, split_values(domains), limit, offset)
    return GetDomainsResponse(domains=[DomainOut.of(v) for v in views], total=total)


@router.post(
    "/domains",
    status_code=201,
    response_model=DomainOut,
    responses=documented(400, 401, 403, 409, 503)
    | {200: {"model": DomainOut, "description": "already provisioned"}},
)
async def provision_domain(
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    domain: DomainIn,
    associate_key: AssociateKey = False,
    overwrite: Overwrite = False,
) -> DomainOut:
    view, created = await svc.domains.provision(
        caller,
        domain.domain,
        domain.subscriptionHandle,
        domain.sections(),
        associate_key=associate_key,
        overwrite=overwrite,
    )
    if not created:
        response.status_code = 200
    return DomainOut.of(view)


@router.post(
    "/domains/batch",
    response_model=BatchDomainsResponse,
    responses=documented(400, 401, 403, 409, 503),
)
async def provision_domains(
    caller: CallerDep,
    svc: ServicesDep,
    body: BatchDomainsIn,
    subscriptionHandle: Annotated[str, Query(max_length=128)],
    associate_key: AssociateKey = False,
    overwrite: Overwrite = False,
) -> BatchDomainsResponse:
    results = await svc.domains.provision_batch(
        caller,
        subscriptionHandle,
        [BatchItem(d.domain, d.sections()) for d in body.domains],
        associate_key=associate_key,
        overwrite=overwrite,
    )
    commented = [
        CommentedDomain(
            domain=(
                DomainOut.of(r.view)
                if r.view
                else DomainBrief(domain=r.name, subscriptionHandle=subscriptionHandle)
            ),
            code=r.code,
            comment=r.comment,
        )
        for r in results
    ]
    return BatchDomainsResponse(
        successes=[c for c, r in zip(commented, results, strict=True) if r.ok],
        errors=[c for c, r in zip(commented, results, strict=True) if not r.ok],
    )


@router.post(
    "/domains/batch/deprovision",
    response_model=BatchDeprovisionResponse,
    responses=documented(400, 401, 503),
    tags=["mailmoat extensions"],
    summary="Deprovision up to 1000 domains (mailmoat extension)",
)
async def deprovision_domains(
    caller: CallerDep, svc: ServicesDep, body: DomainRefs
) -> BatchDeprovisionResponse:
    results = await svc.domains.deprovision_batch(caller, [d.domain for d in body.domains])
    items = [CommentedDeprovision(domain=r.name, code=r.code, comment=r.comment) for r in results]
    return BatchDeprovisionResponse(
        successes=[i for i in items if i.code < 300], errors=[i for i in items if i.code >= 300]
    )


@router.get(
    "/domains/{domain}",
    response_model=DomainOut,
    responses=documented(400, 401, 403, 404, 503),
    tags=["mailmoat extensions"],
    summary="Show one domain (mailmoat extension)",
)
async def get_domain(caller: CallerDep, svc: ServicesDep, domain: DomainPath) -> DomainOut:
    return DomainOut.of(await svc.domains.get(caller, domain))


@router.delete("/domains/{domain}", status_code=204, responses=documented(400, 401, 403, 404, 503))
async def deprovision_domain(caller: CallerDep, svc: ServicesDep, domain: DomainPath) -> Response:
    await svc.domains.deprovision(caller, domain)
    return Response(status_code=204)


@router.post(
    "/domains/{domain}/alias/{alias}",
    response_model=AliasResponse,
    responses=documented(400, 401, 403, 404, 409, 503),
)
async def add_alias(
    caller: CallerDep,
    svc: ServicesDep,
    domain: DomainPath,
    alias: Annotated[str, Path(max_length=1024)],
) -> AliasResponse:
    view, added = await svc.domains.add_alias(caller, domain, alias)
    return AliasResponse(domain=DomainOut.of(view), alias=added.unicode)


@router.delete(
    "/domains/{domain}/alias/{alias}",
    status_code=204,
    responses=documented(400, 401, 403, 404, 503),
)
async def remove_alias(
    caller: CallerDep,
    svc: ServicesDep,
    domain: DomainPath,
    alias: Annotated[str, Path(max_length=1024)],
) -> Response:
    await svc.domains.remove_alias(caller, domain, alias)
    return Response(status_code=204)


@router.get(
    "/domains/{domain}/downstream-address",
    response_model=DownstreamRecords,
    responses=documented(400, 401, 403, 404, 503),
)
async def get_downstreams(
    caller: CallerDep,
    svc: ServicesDep,
    domain: DomainPath,
    limit: Annotated[int, Query(ge=1, le=5000)] = 10,
    offset: Annotated[int, Query(ge=0, le=2_000_000_000)] = 0,
) -> DownstreamRecords:
    records = await svc.domains.downstreams(caller, domain, limit, offset)
    return DownstreamRecords(records=[DownstreamAddressModel.of(r) for r in records])


@router.put(
    "/domains/{domain}/downstream-address",
    status_code=201,
    response_model=DownstreamRecords,
    responses=documented(400, 401, 403, 404, 503),
)
async def set_downstreams(
    caller: CallerDep, svc: ServicesDep, domain: DomainPath, records: DownstreamRecords
) -> DownstreamRecords:
    saved = await svc.domains.set_downstreams(
        caller, domain, [r.to_domain() for r in records.records]
    )
    return DownstreamRecords(records=[DownstreamAddressModel.of(r) for r in saved])


@router.put(
    "/domains/{domain}/api-key", status_code=204, responses=documented(400, 401, 403, 404, 503)
)
async def reassociate_key(
    caller: CallerDep, svc: ServicesDep, domain: DomainPath, updates: ApiKeyUpdate
) -> Response:
    await svc.domains.reassociate_key(caller, domain, updates.apiKey)
    return Response(status_code=204)


@router.put(
    "/domains/{domain}/settings",
    response_model=DomainOut,
    responses=documented(400, 401, 403, 404, 409, 503),
    description="Updates the sections present in the body; answers with the whole domain.",
)
async def update_settings(
    caller: CallerDep,
    svc: ServicesDep,
    domain: DomainPath,
    settings: Annotated[CompleteDomainSettingsIn, Body()],
) -> DomainOut:
    return DomainOut.of(await svc.domains.update_settings(caller, domain, settings.sections()))
