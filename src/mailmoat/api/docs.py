"""The API reference page, served with mailmoat's own copy of Swagger UI.

The page loads nothing from another host, so it works offline and behind strict
proxies. The packaged Swagger UI (4.x) renders OpenAPI 3.0 only, so the page reads
a 3.0 rendering of the API document; /inbound/v1/openapi.json stays 3.1.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from swagger_ui_bundle import swagger_ui_path

from mailmoat.api.errors import error_response

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def install_docs(app: FastAPI, prefix: str) -> None:
    """``{prefix}/docs``, its assets under ``{prefix}/docs/assets/`` and its document."""
    docs = f"{prefix}/docs"
    assets = Path(str(swagger_ui_path))

    @app.get(docs, include_in_schema=False)
    async def reference(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{docs}/openapi.json",
            title=f"{app.title} - reference",
            swagger_js_url=f"{root}{docs}/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{docs}/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}{docs}/assets/favicon-32x32.png",
            # The default validator badge would send the document's URL to swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(f"{docs}/openapi.json", include_in_schema=False)
    async def reference_document() -> JSONResponse:
        return JSONResponse(as_openapi_30(app.openapi()))

    @app.get(docs + "/assets/{name}", include_in_schema=False, response_model=None)
    async def asset(name: str) -> FileResponse | JSONResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            return error_response(404, "Not Found")
        return FileResponse(
            assets / name, media_type=media_type, headers={"Cache-Control": "max-age=86400"}
        )


def as_openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.1 document as OpenAPI 3.0 shows it: ``nullable`` instead of a
    ``null`` type, numeric ``exclusiveMinimum``/``Maximum`` as flags, ``const`` as
    a one-value ``enum``, ``examples`` lists as one ``example``."""
    converted = _schema_30(copy.deepcopy(document))
    assert isinstance(converted, dict)
    converted["openapi"] = "3.0.3"
    return converted


def _schema_30(node: Any) -> Any:
    if isinstance(node, list):
        return [_schema_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _schema_30(value) for key, value in node.items()}
    for keyword in ("anyOf", "oneOf"):
        options = node.get(keyword)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            node["nullable"] = True
            if len(rest) == 1:
                del node[keyword]
                only = rest[0]
                if "$ref" in only:
                    node["allOf"] = [only]
                else:
                    node = {**only, **node}
            else:
                node[keyword] = rest
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            node[flag] = value
            node[bound] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    examples = node.get("examples")
    if isinstance(examples, list):  # a schema's; elsewhere ``examples`` is a map
        del node["examples"]
        if examples:
            node["example"] = examples[0]
    return node
