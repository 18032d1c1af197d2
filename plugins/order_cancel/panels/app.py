"""The test panels as a FastAPI app inside Airflow's api-server (see plugins/order_cancel_panels.py).

    GET  <prefix>/                         the page (HTML + JS, no build step)
    GET  <prefix>/api/flows                the flows of the flows folder that the user may read
    POST <prefix>/api/flows/{dag_id}/try   panels.service.try_flow on one plan, in a child process

Authentication and authorization are Airflow's own (see `order_cancel.airflow.web`), each DAG with
its team. Reading a flow needs what reading its DAG needs; trying a flow runs the flow's scripts, so
it needs what triggering a run of its DAG needs (`requires_access_dag("POST", DagAccessEntity.RUN)`).
The request brings data only: the flow is looked up by id in the flows folder, and only its own
scripts and Jolt spec run. A body is at most MAX_REQUEST_BYTES, at most MAX_TRIES_AT_ONCE tries run
at once (429 beyond), and a deployment may turn the script runs off (`[order_cancel]
panels_run_scripts = False`).

Importing this module imports Airflow's api-server security code; the plugin file imports it only
when the first request arrives, so that schedulers, DAG processors and task runners (which all load
plugins) do not pay for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.configuration import conf
from fastapi import APIRouter, Depends, FastAPI, HTTPException, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from order_cancel.airflow import web
from order_cancel.airflow.locations import flows_folder
from order_cancel.flows.loading import UnknownFlow, find_flow
from order_cancel.panels import service as panels

PAGE = "page.html"
# A plan is a few kilobytes; this keeps a pasted mistake (or a hostile client) small.
MAX_REQUEST_BYTES = 1024 * 1024
# A try holds a thread of the api-server (and runs a script) for up to its time limits: a few at
# once serve the people testing flows and leave the api-server to everyone else.
MAX_TRIES_AT_ONCE = 4
RETRY_AFTER_SECONDS = 5
SCRIPTS_OFF = (
    "This deployment turns the test panels' script runs off ([order_cancel] panels_run_scripts = False): "
    "the flows are shown, nothing runs."
)
_tries = threading.BoundedSemaphore(MAX_TRIES_AT_ONCE)


class TryRequest(BaseModel):
    """One test: data only. Unknown fields are refused, so nothing else can ride along."""

    model_config = ConfigDict(extra="forbid")

    plan: dict[str, Any] = Field(description="one cancellation plan, as Omnitron returns it")
    attributes: dict[str, Any] = Field(default_factory=dict, description="extra flow file attributes")
    erp_status: int | None = Field(default=None, ge=100, le=599, description="the ERP's HTTP status code")
    erp_body: Any = Field(default=None, description="the ERP's answer body (text, or JSON)")
    order_transaction: dict[str, Any] | None = Field(default=None, description="order_transaction flows")


def _scripts_off() -> str | None:
    """Why nothing runs, when the deployment says so: a flow's scripts are its DAG authors' code,
    which Airflow otherwise runs only in DAG processors and workers."""
    return None if conf.getboolean("order_cancel", "panels_run_scripts", fallback=True) else SCRIPTS_OFF


def _scripts_on() -> None:
    if why := _scripts_off():
        raise HTTPException(status.HTTP_403_FORBIDDEN, why)


def _a_free_try() -> Iterator[None]:
    if not _tries.acquire(blocking=False):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"at most {MAX_TRIES_AT_ONCE} tries at once: try again in a few seconds",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    try:
        yield
    finally:
        _tries.release()


router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def show_page(user: GetUserDep) -> HTMLResponse:
    return web.page(__package__, PAGE)


@router.get("/api/flows")
def flows(user: GetUserDep) -> dict[str, Any]:
    """The flows whose DAG the user may read; broken flow files, one line per problem."""
    listing = panels.list_flows(flows_folder())
    readable = web.authorized_dags(user, [flow["flow_id"] for flow in listing["flows"]])
    triable = web.authorized_dags(user, readable, "POST", DagAccessEntity.RUN)
    return {
        **listing,
        "flows": [flow for flow in listing["flows"] if flow["flow_id"] in readable],
        "user": user.get_name(),
        "can_try": {flow_id: flow_id in triable for flow_id in readable},
        "scripts_off": _scripts_off(),
    }


@router.post(
    "/api/flows/{dag_id}/try",
    dependencies=[
        Depends(requires_access_dag("POST", DagAccessEntity.RUN)),
        Depends(_scripts_on),
        Depends(_a_free_try),
    ],
)
def try_flow(dag_id: str, body: TryRequest) -> dict[str, Any]:
    """The flow's script, mapping and response evaluation on one plan (nothing is sent)."""
    try:
        flow = find_flow(dag_id, flows_folder())
    except UnknownFlow as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    try:
        return panels.try_contained(
            flow, body.plan, body.attributes, body.erp_status, body.erp_body, order_transaction=body.order_transaction
        )
    except panels.PanelInputError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


def create_app() -> FastAPI:
    app = web.create_app("Order cancel test panels", router)
    app.add_middleware(web.BodyCap, limit=MAX_REQUEST_BYTES)
    return app
