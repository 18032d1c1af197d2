"""Airflow plugin: the package's pages in the Airflow UI.

* The test panels (script, mapping, response script on one plan): FastAPI app mounted by the
  api-server under /order-cancel-panels, shown in the UI's Browse menu.
* The plans page (the plan ledger: search, a plan's timeline, retry): FastAPI app under
  /order-cancel-plans, shown in the Browse menu and as a "Plan history" tab of every task instance.

Every process that loads plugins (scheduler, DAG processor, each task runner) imports this file, so it
imports nothing heavy: an app, which needs the api-server's security code, is built on the first
request the api-server routes to it.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin

PANELS_PREFIX, PANELS_ROUTE = "/order-cancel-panels", "order-cancel-panels"
PLANS_PREFIX, PLANS_ROUTE = "/order-cancel-plans", "order-cancel-plans"
# Airflow fills these in for a task instance's tab.
TASK_INSTANCE_QUERY = "?dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}"


class _AppOnFirstRequest:
    """An ASGI app that builds a FastAPI app (`module.create_app()`) when the api-server first routes
    a request to it."""

    def __init__(self, module: str) -> None:
        self._module = module
        self._app: Any = None
        self._lock = threading.Lock()

    def _build(self):
        with self._lock:
            if self._app is None:
                self._app = importlib.import_module(self._module).create_app()
        return self._app

    async def __call__(self, scope, receive, send) -> None:
        app = self._app or self._build()
        await app(scope, receive, send)


class OrderCancelPanelsPlugin(AirflowPlugin):
    name = "order_cancel_panels"
    fastapi_apps = [
        {
            "app": _AppOnFirstRequest("order_cancel.panels.app"),
            "url_prefix": PANELS_PREFIX,
            "name": "Order cancel test panels",
        },
        {
            "app": _AppOnFirstRequest("order_cancel.ledger_page.app"),
            "url_prefix": PLANS_PREFIX,
            "name": "Order cancel plans",
        },
    ]
    external_views = [
        {
            "name": "Order cancel test panels",
            # Relative to the UI's base URL, so it follows [api] base_url.
            "href": PANELS_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": PANELS_ROUTE,
        },
        {
            "name": "Order cancel plans",
            "href": PLANS_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": PLANS_ROUTE,
        },
        {
            "name": "Plan history",
            "href": PLANS_PREFIX.lstrip("/") + "/" + TASK_INSTANCE_QUERY,
            "destination": "task_instance",
            "url_route": "plan-history",
        },
    ]
