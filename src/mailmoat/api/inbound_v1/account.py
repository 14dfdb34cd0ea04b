"""Subscriptions, status, users, login links, reports and API keys."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query, Response

from mailmoat import __version__
from mailmoat.api.auth import CallerDep, ServicesDep
from mailmoat.api.errors import documented
from mailmoat.api.inbound_v1.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    BatchLoginLinksResponse,
    CommentedLoginLink,
    DomainRefs,
    Limit,
    ListItem,
    LoginLinkResponse,
    Plan,
    PutUserIn,
    PutUserResponse,
    RecipientOut,
    ReportIn,
    StatusResponse,
    SubscriptionOut,
)
from mailmoat.services.keys import KeyView
from mailmoat.services.reports import ReportInput, ReportType
from mailmoat.services.users import FilterMode

router = APIRouter()


@router.get(
    "/subscriptions",
    response_model=list[SubscriptionOut],
    responses=documented(401, 503),
    tags=["account"],
)
async def subscriptions(caller: CallerDep, svc: ServicesDep) -> list[SubscriptionOut]:
    result = []
    for s in await svc.customers.subscriptions(caller.customer_id):
        limits = []
        if s.domain_limit is not None:
            limits.append(Limit(featureHandle="domains", value=str(s.domain_limit)))
        if s.protected_address_limit is not None:
            limits.append(
                Limit(featureHandle="protected-addresses", value=str(s.protected_address_limit))
            )
        result.append(
            SubscriptionOut(
                handle=s.handle,
                active=s.active,
                plan=Plan(handle=s.plan_handle, name=s.plan_name),
                limits=limits,
                activeAccountsCount=s.domain_count,
            )
        )
    return result


@router.get(
    "/status", response_model=StatusResponse, responses=documented(401, 503), tags=["account"]
)
async def status(caller: CallerDep) -> StatusResponse:
    return StatusResponse(status="ok", version=__version__)


@router.put(
    "/users",
    status_code=201,
    response_model=PutUserResponse,
    responses=documented(400, 401, 403, 503)
    | {200: {"model": PutUserResponse, "description": "already exists; unchanged"}},
    tags=["users"],
)
async def put_user(
    caller: CallerDep,
    svc: ServicesDep,
    response: Response,
    email_address: Annotated[str, Query(max_length=1024)],
    admin: Annotated[bool, Query(description="the recipient is an admin of its domain")],
    filter: Annotated[Literal["true", "false", "compute"], Query()] = "compute",
    data: Annotated[PutUserIn | None, Body()] = None,
) -> PutUserResponse:
    entries = data.list_entries if data and data.list_entries else None
    result = await svc.users.put(
        caller,
        email_address,
        admin=admin,
        filter_mode=FilterMode(filter),
        safelist=entries.safelist if entries else None,
        blocklist=entries.blocklist if entries else None,
    )
    if not result.created:
        response.status_code = 200
    recipient = result.recipient
    return PutUserResponse(
        recipient=RecipientOut(
            email_address=recipient.email,
            roles=["admin"] if recipient.admin else [],
            filter=recipient.filter,
        ),
        list_entries=[ListItem.of(v) for v in result.list_entries],
    )


@router.get(
    "/domains/{domain}/login-link",
    response_model=LoginLinkResponse,
    responses=documented(400, 401, 403, 404, 503),
    tags=["login links"],
)
async def login_link(
    caller: CallerDep, svc: ServicesDep, domain: Annotated[str, Path(max_length=1024)]
) -> LoginLinkResponse:
    return LoginLinkResponse(loginLink=await svc.login_links.create(caller, domain))


@router.post(
    "/domains/batch/login-link",
    response_model=BatchLoginLinksResponse,
    responses=documented(400, 401, 503),
    tags=["login links"],
)
async def login_links(
    caller: CallerDep, svc: ServicesDep, body: DomainRefs
) -> BatchLoginLinksResponse:
    results = await svc.login_links.create_many(caller, [d.domain for d in body.domains])
    items = [
        CommentedLoginLink(domain=r.domain, code=r.code, comment=r.comment, loginLink=r.url)
        for r in results
    ]
    return BatchLoginLinksResponse(
        successes=[i for i in items if i.code == 200], errors=[i for i in items if i.code != 200]
    )


@router.post(
    "/report", status_code=204, responses=documented(400, 401, 403, 404, 503), tags=["reports"]
)
async def report(
    caller: CallerDep,
    svc: ServicesDep,
    report_type: Annotated[Literal["false_negative", "false_positive"], Query()],
    body: ReportIn,
) -> Response:
    envelope = body.smtpEnvelopeInformation
    await svc.reports.submit(
        caller,
        ReportInput(
            report_type=ReportType(report_type),
            message_content=body.messageContent,
            ehlo=envelope.ehlo if envelope else None,
            mail_from=envelope.mailFrom if envelope else None,
            rcpt_to=envelope.rcptTo if envelope else None,
            sending_host=body.sendingHostInformation.name if body.sendingHostInformation else None,
        ),
    )
    return Response(status_code=204)


def _key_out(view: KeyView) -> ApiKeyOut:
    return ApiKeyOut(
        id=view.id, prefix=view.prefix, description=view.description, createdAt=view.created_at
    )


EXTENSION: list[str | Enum] = ["mailmoat extensions"]


@router.get(
    "/api-keys",
    response_model=list[ApiKeyOut],
    responses=documented(401, 503),
    tags=EXTENSION,
    summary="List the customer's API keys (mailmoat extension)",
)
async def list_keys(caller: CallerDep, svc: ServicesDep) -> list[ApiKeyOut]:
    return [_key_out(k) for k in await svc.keys.of_customer(caller.customer_id)]


@router.post(
    "/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=documented(400, 401, 503),
    tags=EXTENSION,
    summary="Create an API key; the key is shown only once (mailmoat extension)",
)
async def create_key(
    caller: CallerDep, svc: ServicesDep, body: Annotated[ApiKeyCreate | None, Body()] = None
) -> ApiKeyCreated:
    new = await svc.keys.create(caller.customer_id, body.description if body else "")
    return ApiKeyCreated(**_key_out(new.key).model_dump(), apiKey=new.token)


@router.delete(
    "/api-keys/{key_id}",
    status_code=204,
    responses=documented(401, 403, 404, 503),
    tags=EXTENSION,
    summary="Delete an API key; its domains are no longer associated (mailmoat extension)",
    description="A key that holds domain associations can be deleted only by itself (403"
    " for any other key). Its unused login links are deleted and the console sessions"
    " started from its links end.",
)
async def delete_key(
    caller: CallerDep, svc: ServicesDep, key_id: Annotated[str, Path(max_length=64)]
) -> Response:
    await svc.keys.delete(key_id, caller=caller)
    return Response(status_code=204)
