"""Assertions on the error body every /inbound/v1 error must carry."""

from __future__ import annotations

from typing import Any

import httpx


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response has ``status`` and the body ``{"code", "message", "errors"}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "message", "errors"}, body
    assert body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["errors"], list) and body["errors"]
    assert all(isinstance(e, str) and e for e in body["errors"])
    return body


async def provision(client: httpx.AsyncClient, subscription: str, *names: str) -> None:
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
