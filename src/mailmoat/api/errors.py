"""Every error leaves the API as ``{"code", "message", "errors"}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailmoat.services.errors import ServiceError

log = logging.getLogger(__name__)


class ErrorResponse(BaseModel):
    code: int
    message: str
    errors: list[str]


def error_response(
    code: int, message: str, errors: list[str] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(code=code, message=message, errors=errors if errors else [message])
    return JSONResponse(body.model_dump(), status_code=code, headers=headers)


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all in the error shape."""
    return {code: {"model": ErrorResponse} for code in codes}


def _describe(error: Any) -> str:
    location = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
    return f"{location}: {error.get('msg', 'invalid value')}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return error_response(exc.code, exc.message, exc.errors, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_describe(e) for e in exc.errors()]
        return error_response(400, "the request is not valid: " + "; ".join(errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal error; the operator's log has the details")
