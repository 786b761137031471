"""The dashboard: static pages served by the hub, no CDN, no build step.

``static/`` holds four pages (``index.html`` Live, ``events.html``, ``compliance.html``,
``control.html``), one stylesheet and plain ES modules. They read the hub's REST API
(``/api/...``) and follow its Server-Sent Events (``/api/stream``) with relative
URLs, so the hub may also sit behind a reverse proxy under a path prefix.

Example::

    app = create_app(services)
    mount_dashboard(app)   # last: the dashboard answers every path the API does not
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

#: The dashboard's files.
STATIC = Path(__file__).parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/`` of ``app``; call it after every API route is added."""
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="dashboard")
