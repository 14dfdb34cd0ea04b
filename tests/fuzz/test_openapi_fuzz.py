"""Property-based fuzzing of the served OpenAPI document against a real server.

Every operation gets generated requests (valid and invalid); the server must never
answer 500 and every response must match what its own schema documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.served import Served, serve

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    with serve(data_dir, env={"MAILMOAT_RATE_LIMIT": "0"}) as served:
        headers = {"X-API-Key": served.api_key}
        # Give the fuzzer something that exists: a domain, an alias, a user.
        seed = httpx.post(
            f"{served.base_url}/inbound/v1/domains",
            headers=headers,
            json={"domain": "example.com", "subscriptionHandle": "default", "aliases": ["ex.net"]},
        )
        assert seed.status_code == 201, seed.text
        user = httpx.put(
            f"{served.base_url}/inbound/v1/users",
            headers=headers,
            params={"email_address": "user@example.com", "admin": "false"},
        )
        assert user.status_code == 201, user.text
        yield served


@pytest.fixture(scope="module")
def api_schema(server: Served) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.base_url}/inbound/v1/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_error_and_responses_match_schema(
    case: schemathesis.Case, server: Served
) -> None:
    # X-API-Key for /inbound/v1, Authorization: Bearer for /api/v0.1.
    headers = {"X-API-Key": server.api_key, "Authorization": f"Bearer {server.api_key}"}
    case.call_and_validate(base_url=server.base_url, headers=headers, checks=CHECKS)


def test_schema_describes_real_bodies(server: Served) -> None:
    document = httpx.get(f"{server.base_url}/inbound/v1/openapi.json").json()
    post_domains = document["paths"]["/inbound/v1/domains"]["post"]
    body_ref = post_domains["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = document["components"]["schemas"][body_ref.rsplit("/", 1)[-1]]
    assert {"domain", "subscriptionHandle", "downstreamAddresses"} <= set(body["properties"])
    created = post_domains["responses"]["201"]["content"]["application/json"]["schema"]
    assert created != {}
    assert document["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
