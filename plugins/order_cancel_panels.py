"""Airflow plugin: the Integrator's test panels (script, mapping, response script) in the Airflow UI.

* `fastapi_apps`: the panels' FastAPI app (order_cancel.panels_api), mounted by the api-server under
  /order-cancel-panels: the page at /order-cancel-panels/, its JSON API under /order-cancel-panels/api/.
* `external_views`: a "Test panels" entry in the UI's Browse menu that shows that page inside the
  Airflow UI (an iframe at /plugin/order-cancel-panels).

Every process that loads plugins (scheduler, DAG processor, each task runner) imports this file, so it
imports nothing heavy: the app, which needs the api-server's security code, is built on the first
request the api-server routes to it.
"""

from __future__ import annotations

import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/order-cancel-panels"
UI_ROUTE = "order-cancel-panels"


class _AppOnFirstRequest:
    """An ASGI app that builds the panels' FastAPI app when the api-server first routes a request to it."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _build(self):
        with self._lock:
            if self._app is None:
                from order_cancel.panels.app import create_app

                self._app = create_app()
        return self._app

    async def __call__(self, scope, receive, send) -> None:
        app = self._app or self._build()
        await app(scope, receive, send)


class OrderCancelPanelsPlugin(AirflowPlugin):
    name = "order_cancel_panels"
    fastapi_apps = [
        {"app": _AppOnFirstRequest(), "url_prefix": URL_PREFIX, "name": "Order cancel test panels"},
    ]
    external_views = [
        {
            "name": "Order cancel test panels",
            # Relative to the UI's base URL, so it follows [api] base_url.
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": UI_ROUTE,
        },
    ]
