"""Authentication by the X-API-Key header, followed by the rate limit."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from mailmoat.services.caller import Caller
from mailmoat.services.container import Services
from mailmoat.services.errors import ServiceError, Unauthorized

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key of the customer"
)


class RateLimited(ServiceError):
    code = 503

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after} s")
        self.retry_after = retry_after


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, per request.
    found: Services = request.app.state.services
    return found


async def current_caller(
    request: Request,
    api_key: Annotated[str | None, Security(api_key_header)],
    svc: Annotated[Services, Depends(services)],
) -> Caller:
    if not api_key:
        raise Unauthorized("missing X-API-Key header")
    caller = await svc.keys.authenticate(api_key)
    if caller is None:
        raise Unauthorized("invalid API key")
    wait = await request.app.state.rate_limiter.retry_after(caller.customer_id)
    if wait is not None:
        raise RateLimited(wait)
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]
ServicesDep = Annotated[Services, Depends(services)]
