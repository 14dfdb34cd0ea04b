"""The API reference page, served with mailmoat's own copy of Swagger UI.

The page loads nothing from another host, so it works offline and behind strict
proxies. Its assets come from the ``fastapi-offline`` package, whose Swagger UI (5.x)
renders the OpenAPI 3.1 document FastAPI produces.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from mailmoat.api.errors import error_response

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


def install_docs(app: FastAPI, prefix: str) -> None:
    """``{prefix}/docs`` and its assets under ``{prefix}/docs/assets/``."""
    docs = f"{prefix}/docs"
    assets = Path(str(files("fastapi_offline") / "static"))
    document = app.openapi_url or f"{prefix}/openapi.json"

    @app.get(docs, include_in_schema=False)
    async def reference(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{document}",
            title=f"{app.title} - reference",
            swagger_js_url=f"{root}{docs}/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{docs}/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}{docs}/assets/favicon.png",
            # The default validator badge would send the document's URL to swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(docs + "/assets/{name}", include_in_schema=False, response_model=None)
    async def asset(name: str) -> FileResponse | JSONResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            return error_response(404, "Not Found")
        return FileResponse(
            assets / name, media_type=media_type, headers={"Cache-Control": "max-age=86400"}
        )
