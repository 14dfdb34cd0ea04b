"""Shared assertions and shortcuts for the /inbound/v1 HTTP tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import api_client

DEFAULT_SETTINGS = {
    "abusePolicy": "quarantine",
    "abusePolicyOverride": False,
    "spamHeaderName": "X-Spam-Flag",
    "spamHeaderValue": "YES",
}

MX1 = {"priority": 10, "weight": 40, "port": 25, "target": "mx1.example.net."}
MX2 = {"priority": 10, "weight": 10, "port": 2525, "target": "mx2.example.net."}
MX3 = {"priority": 20, "weight": 0, "port": 587, "target": "192.0.2.7"}


def assert_error(
    response: httpx.Response, status: int, *, mentions: str | None = None
) -> dict[str, Any]:
    """The response is an error with this status, in the documented error shape.

    ``mentions``: a fragment the message or one of the errors must contain.
    """
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {response.text}"
    )
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"code", "message", "errors"}, body
    assert body["code"] == status, body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["errors"], list) and body["errors"], body
    assert all(isinstance(e, str) and e for e in body["errors"]), body
    if mentions is not None:
        text = " ".join([body["message"], *body["errors"]]).lower()
        assert mentions.lower() in text, body
    return body


async def provision(
    client: httpx.AsyncClient,
    domain: str,
    subscription: str,
    *,
    status: int = 201,
    params: dict[str, str] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """POST /domains and check the status; returns the Domain body."""
    response = await client.post(
        "/domains",
        params=params or {},
        json={"domain": domain, "subscriptionHandle": subscription, **sections},
    )
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def provision_many(
    client: httpx.AsyncClient, subscription: str, names: list[str], **params: str
) -> None:
    """Provision plain domains in one batch; every one must succeed."""
    response = await client.post(
        "/domains/batch",
        params={"subscriptionHandle": subscription, **params},
        json={"domains": [{"domain": n} for n in names]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["errors"] == [], response.text


async def listed(client: httpx.AsyncClient, **params: Any) -> tuple[list[str], int]:
    """GET /domains: the names on the page (in order) and ``total``."""
    response = await client.get("/domains", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"domains", "total"}, body
    return [d["domain"] for d in body["domains"]], body["total"]


async def shown(client: httpx.AsyncClient, domain: str) -> dict[str, Any]:
    """GET /domains/{domain} as seen by this client; must succeed."""
    response = await client.get(f"/domains/{domain}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@asynccontextmanager
async def client_with_key(app: FastAPI, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """Another HTTP client on the same application, authenticated with ``key``."""
    async with api_client(app, key) as client:
        yield client


# Every operation on one domain, for access-rule tables: (id, method, path, body).
# ``{d}`` is the domain in the path, ``{key}`` the calling client's own API key.
DOMAIN_OPERATIONS: list[tuple[str, str, str, Any]] = [
    ("get", "GET", "/domains/{d}", None),
    ("delete", "DELETE", "/domains/{d}", None),
    ("settings", "PUT", "/domains/{d}/settings", {"abusePolicy": "block"}),
    ("get-list", "GET", "/domains/{d}/lists/safelist", None),
    ("add-list", "POST", "/domains/{d}/lists/blocklist", {"item": "spam@bad.example"}),
    ("get-downstream", "GET", "/domains/{d}/downstream-address", None),
    ("put-downstream", "PUT", "/domains/{d}/downstream-address", {"records": [MX1]}),
    ("add-alias", "POST", "/domains/{d}/alias/fresh-alias.example", None),
    ("remove-alias", "DELETE", "/domains/{d}/alias/fresh-alias.example", None),
    ("api-key", "PUT", "/domains/{d}/api-key", {"apiKey": "{key}"}),
]


def operation_params() -> list[Any]:
    return [pytest.param(method, path, body, id=op) for op, method, path, body in DOMAIN_OPERATIONS]


async def call(
    client: httpx.AsyncClient, method: str, path: str, body: Any, domain: str
) -> httpx.Response:
    """Run one of DOMAIN_OPERATIONS against ``domain`` with this client."""
    if isinstance(body, dict) and body.get("apiKey") == "{key}":
        body = {"apiKey": client.headers["X-API-Key"]}
    return await client.request(method, path.format(d=domain), json=body)


async def provision_names(client: httpx.AsyncClient, subscription: str, *names: str) -> None:
    """Provision domains through the API in one batch, failing the test on any error."""
    response = await client.post(
        "/domains/batch",
        params={"subscriptionHandle": subscription},
        json={"domains": [{"domain": n} for n in names]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["errors"] == [], response.text


async def add_user(client: httpx.AsyncClient, email: str, **params: str) -> httpx.Response:
    response = await client.put(
        "/users", params={"email_address": email, "admin": "false", **params}
    )
    assert response.status_code == 201, response.text
    return response
