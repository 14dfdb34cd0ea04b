"""The API reference page works without the internet: every asset is mailmoat's own."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import api_client

BASE = "http://gateway.test"
DOCS = f"{BASE}/inbound/v1/docs"


@pytest.fixture
async def anonymous(shared_app: FastAPI) -> Any:
    async with api_client(shared_app, None) as client:
        yield client


def referenced(html: str) -> list[str]:
    """Every URL the page names: src/href attributes, the document's url, any http(s)."""
    found = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    found += re.findall(r"""\burl\s*:\s*["']([^"']+)["']""", html)
    found += re.findall(r"""https?://[^\s"'<>)]+""", html)
    return found


async def test_docs_page_names_no_other_host(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get(DOCS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = referenced(response.text)
    assert urls, response.text
    for url in urls:
        assert urlsplit(urljoin(DOCS, url)).netloc == "gateway.test", url


async def test_docs_assets_are_served_by_mailmoat(anonymous: httpx.AsyncClient) -> None:
    html = (await anonymous.get(DOCS)).text
    wanted = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    seen = set()
    for url in referenced(html):
        path = urlsplit(urljoin(DOCS, url)).path
        suffix = path[path.rfind(".") :]
        if suffix not in wanted:
            continue
        seen.add(suffix)
        response = await anonymous.get(BASE + path)
        assert response.status_code == 200, path
        assert wanted[suffix] in response.headers["content-type"], (path, response.headers)
        assert len(response.content) > 500, path
    assert seen == set(wanted), html
    bundle = await anonymous.get(f"{DOCS}/assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content


@pytest.mark.parametrize("name", ["index.html", "..%2F__init__.py", "swagger-ui.js.map", "x"])
async def test_only_the_pages_assets_are_served(anonymous: httpx.AsyncClient, name: str) -> None:
    response = await anonymous.get(f"{DOCS}/assets/{name}")
    assert response.status_code == 404
    assert set(response.json()) == {"code", "message", "errors"}


async def test_the_page_reads_the_api_document_and_its_ui_renders_it(
    anonymous: httpx.AsyncClient,
) -> None:
    """The page reads the API's own OpenAPI 3.1 document, with a Swagger UI that
    knows that version (Swagger UI 4 showed a 3.1 document as unsupported)."""
    html = (await anonymous.get(DOCS)).text
    [document_url] = re.findall(r"""\burl\s*:\s*["']([^"']+)["']""", html)
    assert urljoin(DOCS, document_url) == f"{BASE}/inbound/v1/openapi.json"
    document = (await anonymous.get(urljoin(DOCS, document_url))).json()
    assert document["openapi"].startswith("3.1")
    assert "/inbound/v1/domains" in document["paths"]
    bundle = (await anonymous.get(f"{DOCS}/assets/swagger-ui-bundle.js")).content
    assert b"openapi: 3.1.x" in bundle
