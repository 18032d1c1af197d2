"""The test panels as a FastAPI app inside Airflow's api-server (see plugins/order_cancel_panels.py).

    GET  <prefix>/                         the page (HTML + JS, no build step)
    GET  <prefix>/api/flows                the flows of the flows folder that the user may read
    POST <prefix>/api/flows/{dag_id}/try   panels.service.try_flow on one plan

Authentication and authorization are Airflow's own (see `order_cancel.airflow.web`). Reading a flow
needs what reading its DAG needs; trying a flow runs the flow's scripts, so it needs what triggering
a run of its DAG needs (`requires_access_dag("POST", DagAccessEntity.RUN)`).
The request brings data only: the flow is looked up by id in the flows folder, and only its own
scripts and Jolt spec run.

Importing this module imports Airflow's api-server security code; the plugin file imports it only
when the first request arrives, so that schedulers, DAG processors and task runners (which all load
plugins) do not pay for it.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from order_cancel.airflow import web
from order_cancel.airflow.locations import flows_folder
from order_cancel.panels import service as panels

PAGE = "page.html"
# A plan is a few kilobytes; this keeps a pasted mistake (or a hostile client) small.
MAX_REQUEST_BYTES = 1024 * 1024


class TryRequest(BaseModel):
    """One test: data only. Unknown fields are refused, so nothing else can ride along."""

    model_config = ConfigDict(extra="forbid")

    plan: dict[str, Any] = Field(description="one cancellation plan, as Omnitron returns it")
    attributes: dict[str, Any] = Field(default_factory=dict, description="extra flow file attributes")
    erp_status: int | None = Field(default=None, ge=100, le=599, description="the ERP's HTTP status code")
    erp_body: Any = Field(default=None, description="the ERP's answer body (text, or JSON)")
    order_transaction: dict[str, Any] | None = Field(default=None, description="order_transaction flows")


def _small_request(request: Request) -> None:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_REQUEST_BYTES):
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"at most {MAX_REQUEST_BYTES} bytes")


router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def show_page(user: GetUserDep) -> HTMLResponse:
    return web.page(__package__, PAGE)


@router.get("/api/flows")
def flows(user: GetUserDep) -> dict[str, Any]:
    """The flows whose DAG the user may read; broken flow files, one line per problem."""
    listing = panels.list_flows(flows_folder())
    auth = get_auth_manager()
    listing["flows"] = [
        flow
        for flow in listing["flows"]
        if auth.is_authorized_dag(method="GET", details=DagDetails(id=flow["flow_id"]), user=user)
    ]
    listing["user"] = user.get_name()
    listing["can_try"] = {
        flow["flow_id"]: auth.is_authorized_dag(
            method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=flow["flow_id"]), user=user
        )
        for flow in listing["flows"]
    }
    return listing


@router.post(
    "/api/flows/{dag_id}/try",
    dependencies=[Depends(_small_request), Depends(requires_access_dag("POST", DagAccessEntity.RUN))],
)
def try_flow(dag_id: str, body: TryRequest) -> dict[str, Any]:
    """The flow's script, mapping and response evaluation on one plan (nothing is sent)."""
    try:
        flow = panels.find_flow(dag_id, flows_folder())
    except panels.UnknownFlow as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    try:
        return panels.try_flow(
            flow, body.plan, body.attributes, body.erp_status, body.erp_body, order_transaction=body.order_transaction
        )
    except panels.PanelInputError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


def create_app() -> FastAPI:
    return web.create_app("Order cancel test panels", router)
