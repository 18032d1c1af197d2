"""The test panels inside a running api-server (the stack of tests/browser/conftest.py): the plugin is
loaded, anonymous calls are refused, and an Airflow user's JWT (as POST /auth/token gives it) works.
No browser here; the UI session cookie is exercised by test_airflow_ui.py."""

from __future__ import annotations

import requests

PREFIX = "/order-cancel-panels"
TRY = f"{PREFIX}/api/flows/acme_waiting_cancellations/try"


def anonymous() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy for 127.0.0.1
    return session


def try_body(stack) -> dict:
    plan = next(plan for plan in stack.fake("GET", f"{stack.omnitron}/_fake/plans") if plan["pk"] == 4)
    return {
        "plan": plan,
        "attributes": {"rejected_count": "1"},
        "erp_status": 422,
        "erp_body": '{"status": "rejected"}',
    }


def test_the_api_server_loads_the_plugin(ui_stack):
    plugins = {plugin["name"]: plugin for plugin in ui_stack.api("GET", "/plugins")["plugins"]}
    plugin = plugins["order_cancel_panels"]
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == [PREFIX, "/order-cancel-plans"]
    assert [(view["href"], view["url_route"], view["destination"]) for view in plugin["external_views"]] == [
        ("order-cancel-panels/", "order-cancel-panels", "nav"),
        ("order-cancel-plans/", "order-cancel-plans", "nav"),
        (
            "order-cancel-plans/?dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}",
            "plan-history",
            "task_instance",
        ),
    ]
    assert ui_stack.api("GET", "/plugins/importErrors")["total_entries"] == 0


def test_anonymous_calls_are_refused(ui_stack):
    http = anonymous()
    base = ui_stack.base
    assert http.get(f"{base}{PREFIX}/api/flows", timeout=30).status_code == 401
    assert http.post(f"{base}{TRY}", json=try_body(ui_stack), timeout=30).status_code == 401
    assert http.get(f"{base}{PREFIX}/", timeout=30).status_code == 401
    forged = {"Authorization": "Bearer eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"}
    assert http.get(f"{base}{PREFIX}/api/flows", headers=forged, timeout=30).status_code == 403
    http.cookies.set("_token", "not-a-jwt")
    assert http.post(f"{base}{TRY}", json=try_body(ui_stack), timeout=30).status_code == 403
    page = anonymous().get(f"{base}{PREFIX}/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert page.status_code == 303 and page.headers["location"] == "/auth/login?next=%2Forder-cancel-panels%2F"


def test_an_airflow_token_lists_and_tries_the_flows(ui_stack):
    http = anonymous()
    token = http.post(f"{ui_stack.base}/auth/token", json={"username": "admin", "password": "admin"}, timeout=30)
    http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    listing = http.get(f"{ui_stack.base}{PREFIX}/api/flows", timeout=30).json()
    assert [flow["flow_id"] for flow in listing["flows"]] == ["acme_confirmed_refunds", "acme_waiting_cancellations"]
    assert listing["user"] == "admin" and all(listing["can_try"].values()) and listing["broken"] == []

    body = try_body(ui_stack)
    erp_requests = len(ui_stack.fake("GET", f"{ui_stack.erp}/_fake/requests"))
    response = http.post(f"{ui_stack.base}{TRY}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["script"]["attributes"]["integration_code"] == "IC-4"
    assert result["request_body"]["cancellationId"] == 4
    # The order already has a rejected plan: the flow's response script leaves this one for later.
    assert result["response"]["relation"] == "do_nothing"
    # Nothing was sent: the panel never calls the ERP.
    assert len(ui_stack.fake("GET", f"{ui_stack.erp}/_fake/requests")) == erp_requests
