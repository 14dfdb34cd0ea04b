"""Bearer authentication for /api/v0.1/{account}: the same API keys as /inbound/v1.

The account in the path is the customer's handle; a key of another customer gets
403, without saying whether that account exists.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailmoat.api.auth import RateLimited, services
from mailmoat.services.caller import Caller
from mailmoat.services.container import Services
from mailmoat.services.errors import Forbidden, Unauthorized

bearer = HTTPBearer(auto_error=False, description="An API key of the customer")

PREFIX = "/api/v0.1/{account}"


async def account_caller(
    request: Request,
    account: Annotated[str, Path(max_length=128, description="the customer's handle")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    svc: Annotated[Services, Depends(services)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing Authorization: Bearer <API key> header")
    caller = await svc.keys.authenticate(credentials.credentials)
    if caller is None:
        raise Unauthorized("invalid API key")
    wait = await request.app.state.rate_limiter.retry_after(caller.customer_id)
    if wait is not None:
        raise RateLimited(wait)
    if caller.customer_handle != account:
        raise Forbidden(f"this API key does not belong to account {account}")
    return caller


AccountCaller = Annotated[Caller, Depends(account_caller)]
