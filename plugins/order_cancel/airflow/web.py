"""What the package's pages in Airflow's api-server share: Airflow's login for a browser without a
session, a page from package data, and the app around a router.

Authentication and authorization are Airflow's own FastAPI dependencies
(airflow.api_fastapi.core_api.security): `get_user` takes the JWT from an `Authorization: Bearer`
header (REST clients) or from the `_token` cookie the Airflow UI sets at login (the pages run in an
iframe of the UI, same origin), and answers 401 without a token, 403 for an invalid one.
A DAG is checked with its team, as the api-server checks it (`authorized_dags`).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.base_auth_manager import ResourceMethod
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.models.dag import DagModel
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


async def login_first(request: Request, exc: Exception) -> Response:
    """A browser that opens the page without a session goes to Airflow's login and comes back."""
    assert isinstance(exc, HTTPException)
    root = request.scope.get("root_path", "").rstrip("/")
    wants_page = request.method == "GET" and request.url.path.rstrip("/") == root
    if wants_page and exc.status_code in (401, 403) and "text/html" in request.headers.get("accept", ""):
        next_url = f"{root}/" + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(get_auth_manager().get_url_login(next_url=next_url), status.HTTP_303_SEE_OTHER)
    return await http_exception_handler(request, exc)


def authorized_dags(
    user: BaseUser, dag_ids: Sequence[str], method: ResourceMethod = "GET", access_entity: DagAccessEntity | None = None
) -> list[str]:
    """The DAGs of `dag_ids` the user may `method` (with `access_entity`), each checked with its team.

    In multi-team mode a DAG belongs to its bundle's team, and the auth manager lets only that team's
    users at it when it knows the team: the api-server's own checks pass it (`requires_access_dag`),
    so these pages must too.
    """
    teams = DagModel.get_dag_id_to_team_name_mapping(list(dag_ids))
    auth = get_auth_manager()
    return [
        dag_id
        for dag_id in dag_ids
        if auth.is_authorized_dag(
            method=method,
            access_entity=access_entity,
            details=DagDetails(id=dag_id, team_name=teams.get(dag_id)),
            user=user,
        )
    ]


def page(package: str | None, name: str) -> HTMLResponse:
    assert package, "a page lives in a package"
    text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    return HTMLResponse(text, headers=PAGE_HEADERS)


class BodyCap:
    """ASGI middleware: a request body over `limit` bytes answers 413, counted as it arrives. A
    chunked body has no Content-Length to check first, and FastAPI reads a whole body before any
    dependency runs."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        read = 0

        async def capped() -> Message:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > self.limit:  # FastAPI answers an HTTPException raised while it reads the body
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"at most {self.limit} bytes")
            return message

        await self.app(scope, capped, send)


def create_app(title: str, router: APIRouter) -> FastAPI:
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(HTTPException, login_first)
    app.include_router(router)
    return app
