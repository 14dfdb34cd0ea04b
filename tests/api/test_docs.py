"""The API reference page works without the internet: every asset is mailmoat's own."""

from __future__ import annotations

import json
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


async def test_the_page_reads_a_document_its_swagger_ui_renders(
    anonymous: httpx.AsyncClient,
) -> None:
    """The packaged Swagger UI renders OpenAPI 3.0.n only: the page reads the API's
    document in that form, with every operation of the 3.1 document."""
    html = (await anonymous.get(DOCS)).text
    [document_url] = re.findall(r"""\burl\s*:\s*["']([^"']+)["']""", html)
    shown = (await anonymous.get(urljoin(DOCS, document_url))).json()
    full = (await anonymous.get(f"{BASE}/inbound/v1/openapi.json")).json()
    assert re.fullmatch(r"3\.0\.\d+", shown["openapi"])
    assert full["openapi"].startswith("3.1")
    assert shown["paths"].keys() == full["paths"].keys()
    for path, operations in full["paths"].items():
        assert operations.keys() == shown["paths"][path].keys(), path
    text = json.dumps(shown)
    assert '"type": "null"' not in text
    assert '"nullable": true' in text
