"""The HTTP application: /inbound/v1, /healthz, error shape, OpenAPI under /inbound/v1."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from mailmoat import __version__, metrics
from mailmoat.api.cloudmailin import addresses as cloudmailin_addresses
from mailmoat.api.cloudmailin import sending_domains as cloudmailin_sending_domains
from mailmoat.api.cloudmailin import statuses as cloudmailin_statuses
from mailmoat.api.docs import install_docs
from mailmoat.api.errors import error_response, install_error_handlers
from mailmoat.api.inbound_v1 import account, domains, lists, messages
from mailmoat.api.ratelimit import RateLimiter
from mailmoat.services.container import Services
from mailmoat.services.messages import FILTER_STATES

INBOUND_PREFIX = "/inbound/v1"

DESCRIPTION = """\
mailmoat's provisioning API, wire-compatible with the MailChannels Inbound API 1.2.0.
Authenticate with the `X-API-Key` header. Errors are `{"code", "message", "errors"}`.
Requests are limited per customer (100 per second by default); excess requests get
503 with `Retry-After`. Operations tagged *mailmoat extensions* go beyond 1.2.0.

The CloudMailin-style management API for email-to-webhook addresses is under
`/api/v0.1/{account}/`, where the account is the customer's handle; it takes the same
API keys as `Authorization: Bearer <key>`.
"""


def _openapi_with_error_shape(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents validation failures as 422; mailmoat answers them with 400."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path in document.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {
                        "description": "Bad Request",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorResponse"}
                            }
                        },
                    }
        schemas = document.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = document
    return app.openapi_schema


def create_api(services: Services, rate_limiter: RateLimiter) -> FastAPI:
    app = FastAPI(
        title="mailmoat Inbound API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=f"{INBOUND_PREFIX}/openapi.json",
        docs_url=None,  # served by install_docs, from mailmoat's own copy of Swagger UI
        redoc_url=None,
    )
    app.state.services = services
    app.state.rate_limiter = rate_limiter
    install_error_handlers(app)
    # account before domains: /domains/batch/login-link must not be taken for a domain.
    for module in (account, domains, lists, messages):
        app.include_router(module.router, prefix=INBOUND_PREFIX)
    for cloudmailin_module in (
        cloudmailin_addresses,
        cloudmailin_statuses,
        cloudmailin_sending_domains,
    ):
        app.include_router(cloudmailin_module.router)

    app.openapi = lambda: _openapi_with_error_shape(app)  # type: ignore[method-assign]
    install_docs(app, INBOUND_PREFIX)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        counts = await services.messages.state_counts()
        for state in FILTER_STATES:
            metrics.QUEUE_DEPTH.labels(state).set(counts.get(state, 0))
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        """200 while this node can accept mail; else 503 naming the failed checks."""
        health = await services.health.check()
        if health.ok:
            return JSONResponse({"status": "ok"})
        failed = [f"{check}: {reason}" for check, reason in health.failures.items()]
        return error_response(503, "this node cannot accept mail: " + "; ".join(failed), failed)

    return app
