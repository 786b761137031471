"""The interactive API docs (``/docs``, Swagger UI; ``/redoc``, ReDoc) served with no internet access.

FastAPI's own pages load their JavaScript and CSS from a CDN, so at a site without internet they stay blank.
The hub serves the same assets from the ``fastapi-offline`` wheel (Swagger UI 5, ReDoc) under
``/docs-assets/``, and its pages name no external URL (the favicon is the dashboard's, or none).
"""

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the assets are served.
ASSETS_URL = "/docs-assets"
#: The folder of the packaged assets (``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js``).
ASSETS = files("fastapi_offline") / "static"
#: The favicon the pages name: none, so the browser asks no server for one.
NO_FAVICON = "data:,"


def mount_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their assets to ``app`` (created with ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API docs",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=NO_FAVICON,
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=NO_FAVICON,
            with_google_fonts=False,
        )
