"""What the package's pages in Airflow's api-server share: Airflow's login for a browser without a
session, a page from package data, and the app around a router.

Authentication and authorization are Airflow's own FastAPI dependencies
(airflow.api_fastapi.core_api.security): `get_user` takes the JWT from an `Authorization: Bearer`
header (REST clients) or from the `_token` cookie the Airflow UI sets at login (the pages run in an
iframe of the UI, same origin), and answers 401 without a token, 403 for an invalid one.
"""

from __future__ import annotations

from importlib import resources

from airflow.api_fastapi.app import get_auth_manager
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse

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


def page(package: str | None, name: str) -> HTMLResponse:
    assert package, "a page lives in a package"
    text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    return HTMLResponse(text, headers=PAGE_HEADERS)


def create_app(title: str, router: APIRouter) -> FastAPI:
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(HTTPException, login_first)
    app.include_router(router)
    return app
