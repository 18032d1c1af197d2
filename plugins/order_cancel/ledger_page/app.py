"""The plans page as a FastAPI app inside Airflow's api-server (see plugins/order_cancel_panels.py).

    GET <prefix>/                                the page (HTML + JS, no build step)
    GET <prefix>/api/flows                       the ledger's flows the user may read
    GET <prefix>/api/plans?order=&plan=&flow=&relation=&since=&until=&open=
                                                 plans with their latest attempt
    GET <prefix>/api/plans/{flow_id}/{plan_pk}   a plan's timeline: every attempt
    GET <prefix>/api/task-instance?dag_id=&run_id=&task_id=&map_index=
                                                 the plans a task instance worked on (its tab)

Reading needs what reading the flow's DAG needs (Airflow's auth manager, each DAG with its team); the
user sees only the attempts of DAGs they may read, and where the ledger is only when they may read
its connection. **Retry** is the page's JavaScript calling Airflow's REST API
(`clearTaskInstances`) with the user's own session, so Airflow checks the user's right to clear.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails
from airflow.api_fastapi.core_api.security import GetUserDep
from annotated_types import Interval
from fastapi import APIRouter, FastAPI, HTTPException, Query, status
from fastapi.responses import HTMLResponse

from order_cancel.airflow import web
from order_cancel.airflow.ledger import ledger_settings, open_ledger
from order_cancel.airflow.run_data import BATCH_TASK
from order_cancel.ledger.attempts import Attempt
from order_cancel.ledger.history import PlanHistory, attempt_said, histories
from order_cancel.ledger.location import LEDGER_CONN_ID
from order_cancel.ledger.store import Ledger, Search

PAGE = "page.html"
# The ledger's plan_pk is 64 bits: a number beyond it is in no row, and the database would fail on it
# (500) rather than find nothing, so it is refused (422).
PlanPk = Annotated[int, Interval(ge=-(2**63), le=2**63 - 1)]
router = APIRouter()


def _ledger() -> Ledger:
    return open_ledger(ledger_settings())


def _readable_flows(user: BaseUser, ledger: Ledger) -> list[str]:
    return web.authorized_dags(user, ledger.flows())


def _ledger_shown(user: BaseUser) -> str | None:
    """Where the ledger is (database, host, user), for those who may read its connection."""
    details = ConnectionDetails(conn_id=LEDGER_CONN_ID)
    may_read = get_auth_manager().is_authorized_connection(method="GET", details=details, user=user)
    return ledger_settings().shown if may_read else None


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {**attempt.model_dump(mode="json"), "said": attempt_said(attempt)}


def _retry(history: PlanHistory) -> dict[str, Any] | None:
    """The task instance to clear to retry the plan: its latest attempt's, when that failed (a batch's
    failed plan is retried in its own plan task, never by clearing the batch)."""
    failed = history.standing
    if not failed.failed or failed.task_id == BATCH_TASK:
        return None
    return {"dag_id": failed.flow_id, "run_id": failed.run_id, "task_id": failed.task_id, "map_index": failed.map_index}


def _plan_json(history: PlanHistory) -> dict[str, Any]:
    return {
        "flow_id": history.flow_id,
        "plan_pk": history.plan_pk,
        "order_number": history.order_number,
        "label": history.label,
        "attempts": len(history.attempts),
        "latest": _attempt_json(history.latest),
        "now": _attempt_json(history.standing),
        "open": history.is_open,
        "retry": _retry(history),
    }


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def show_page(user: GetUserDep) -> HTMLResponse:
    return web.page(__package__, PAGE)


@router.get("/api/flows")
def flows(user: GetUserDep) -> dict[str, Any]:
    ledger = _ledger()
    return {"flows": _readable_flows(user, ledger), "ledger": _ledger_shown(user), "user": user.get_name()}


@router.get("/api/plans")
def plans(
    user: GetUserDep,
    order: str | None = None,
    plan: PlanPk | None = None,
    flow: str | None = None,
    relation: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
) -> dict[str, Any]:
    """The plans that match, newest attempt first; `open`: only failed and left-for-later plans."""
    ledger = _ledger()
    readable = _readable_flows(user, ledger)
    flow_ids = [flow] if flow in readable else [] if flow else readable
    search = Search(order_number=order or None, plan_pk=plan, flow_ids=flow_ids, since=since, until=until)
    found = histories(ledger.find(search))
    if relation:
        found = [history for history in found if history.standing.relation == relation]
    if open_only:
        found = [history for history in found if history.is_open]
    found.sort(key=lambda history: history.latest.started_at, reverse=True)
    return {"plans": [_plan_json(history) for history in found]}


@router.get("/api/plans/{flow_id}/{plan_pk}")
def timeline(user: GetUserDep, flow_id: str, plan_pk: PlanPk) -> dict[str, Any]:
    ledger = _ledger()
    if flow_id not in _readable_flows(user, ledger):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no plan {plan_pk} of {flow_id} in the ledger")
    found = histories(ledger.find(Search(flow_ids=[flow_id], plan_pk=plan_pk, limit=None)))
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no plan {plan_pk} of {flow_id} in the ledger")
    [history] = found
    return {"plan": _plan_json(history), "attempts": [_attempt_json(attempt) for attempt in history.attempts]}


@router.get("/api/task-instance")
def task_instance(user: GetUserDep, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """The plans a task instance worked on (one, or a batch's), for the task instance's tab."""
    ledger = _ledger()
    if dag_id not in _readable_flows(user, ledger):
        return {"plans": []}
    in_run = ledger.find(Search(flow_ids=[dag_id], run_id=run_id, limit=None))
    pks = {a.plan_pk for a in in_run if (a.task_id, a.map_index) == (task_id, map_index) and a.plan_pk is not None}
    every = ledger.find(Search(flow_ids=[dag_id], plan_pks=sorted(pks), limit=None))
    return {"plans": [_plan_json(history) for history in histories(every)]}


def create_app() -> FastAPI:
    return web.create_app("Order cancel plans", router)
