"""The test panels (issue 7): `order_cancel.panels.try_flow` against the flow's own steps, and the
panels' FastAPI app with Airflow's own authentication (SimpleAuthManager, in process).

The same app inside a running api-server, and the page in a browser: tests/browser/.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from devtools.airflow_env import ROOT
from fakes.data import demo_dataset, make_plan
from order_cancel.flows.loading import UnknownFlow, find_flow, load_flow
from order_cancel.panels.service import PanelInputError, list_flows, try_flow
from order_cancel.pipeline.plan import WorkItem
from order_cancel.pipeline.steps import PlanPipeline
from order_cancel.runtime.nifi_api import ERROR_ATTRIBUTE
from tests.flow_runner import BASE_FLOW, merged
from tests.pages import PANELS, bearer, pages_client

# fastapi.testclient with httpx (not httpx2) warns on import: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")

EXAMPLE_FLOWS = ROOT / "include" / "flows"
ACCEPTED = '{"id": "ERP-1", "status": "accepted"}'


@pytest.fixture
def waiting():
    return find_flow("acme_waiting_cancellations", EXAMPLE_FLOWS)


@pytest.fixture
def refunds():
    return find_flow("acme_confirmed_refunds", EXAMPLE_FLOWS)


def write_flow(folder: Path, files: dict[str, str] | None = None, **overrides) -> Path:
    import yaml

    for relative, text in (files or {}).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(textwrap.dedent(text), encoding="utf-8")
    document = merged(BASE_FLOW, overrides)
    path = folder / f"{document['flow_id']}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


# -- the panels compute what the flow computes -----------------------------------------------------


def transformed(pipeline: PlanPipeline, plan: dict) -> dict:
    """What the flow's transform task makes of a plan: the ERP body, the attributes, the script's lines."""
    records = pipeline.transform(WorkItem.of(plan))
    script = [record for record in records if record.step == "script"]
    return {
        "body": records[-1].output if records else plan,
        "attributes": records[-1].attributes,
        "logs": [tuple(line) for line in script[0].logs] if script else [],
    }


@pytest.mark.parametrize("flow_id", ["acme_waiting_cancellations", "acme_confirmed_refunds"])
def test_the_request_body_and_attributes_are_those_of_the_flows_transform_task(flow_id):
    flow = find_flow(flow_id, EXAMPLE_FLOWS)
    steps = PlanPipeline.build(flow)
    plans, _ = demo_dataset(24)
    for plan in plans:
        expected = transformed(steps, plan)
        result = try_flow(flow, plan)
        assert result["ok"] and result["failed_step"] is None, result["error"]
        assert result["request_body"] == expected["body"]
        assert result["attributes"] == expected["attributes"]
        if flow.script:
            assert [(log["level"], log["message"]) for log in result["script"]["logs"]] == expected["logs"]


def test_script_mapping_and_custom_response_of_the_example_flow(waiting):
    plan = make_plan(4)
    result = try_flow(waiting, plan, {"note": "from the panel"}, 422, '{"status": "rejected", "error": "shipped"}')

    assert result["ok"] is True
    assert result["input_attributes"]["plan_pk"] == "4" and result["input_attributes"]["note"] == "from the panel"
    assert result["input_attributes"]["crm_url"] == waiting.attributes["crm_url"]  # the flow's static attributes
    script = result["script"]
    assert script["ran"] and script["name"] == "scripts/enrich_plan.py" and script["error"] is None
    assert script["result_data"]["erp_reason_code"] == "WRONG_SIZE" and script["result_data"]["total_quantity"] == 3
    assert script["attributes"]["integration_code"] == "IC-4"
    assert script["attributes"]["log.transform"] == "plan 4 (web): reason WRONG_SIZE, 3 unit(s)"
    mapping = result["mapping"]
    assert mapping["ran"] and mapping["name"] == "mappings/erp_cancel.json"
    assert result["request_body"] == mapping["result"]
    assert result["request_body"]["cancellationId"] == 4
    assert result["request_body"]["orderNumber"] == plan["order"]["number"]
    assert result["request_body"]["currency"] == "TRY"
    response = result["response"]
    assert response["evaluator"] == "scripts/acme_response.py"
    assert response["relation"] == "failure"
    assert response["attributes"]["invokehttp.status.code"] == "422"
    assert response["attributes"]["rejected_count"] == "0"
    assert response["attributes"]["log.response"] == "plan 4: HTTP 422, 0 previously rejected -> failure"
    assert response["response_data"] == {"status": "rejected", "error": "shipped"}
    assert result["post_script"] == "not run by the panel"


@pytest.mark.parametrize(
    ("status", "body", "rejected", "relation"),
    [
        (201, ACCEPTED, "0", "continue"),
        (409, '{"status": "duplicate"}', "0", "continue"),
        (422, '{"status": "rejected"}', "1", "do_nothing"),  # the order already has a rejected plan
        (401, '{"error": "unauthorized"}', "0", "auth_fail"),
        (503, "maintenance", "0", "do_nothing"),
    ],
)
def test_the_flows_response_script_decides_the_relation(waiting, status, body, rejected, relation):
    result = try_flow(waiting, make_plan(1), {"rejected_count": rejected}, status, body)
    assert result["response"]["relation"] == relation
    assert result["response"]["attributes"]["rejected_count"] == rejected


@pytest.mark.parametrize(
    ("status", "relation"),
    [(201, "continue"), (422, "failure"), (403, "auth_fail"), (429, "do_nothing"), (500, "do_nothing")],
)
def test_a_flow_without_a_response_script_uses_the_default_table(refunds, status, relation):
    result = try_flow(refunds, make_plan(7, status="confirmed", plan_type="refund"), None, status, "")
    assert result["mapping"]["ran"] is False and result["request_body"] == result["script"]["result_data"]
    assert result["response"]["evaluator"] == "default table"
    assert result["response"]["relation"] == relation
    assert "rejected_count" not in result["response"]["attributes"]  # only response scripts get it


def test_without_an_erp_status_the_response_step_is_not_tried(waiting):
    result = try_flow(waiting, make_plan(1))
    assert result["ok"] and result["response"] == {
        "ran": False,
        "evaluator": "scripts/acme_response.py",
        "skipped": "no ERP status code given",
    }


def test_the_erp_body_may_be_json_rather_than_text(waiting):
    result = try_flow(waiting, make_plan(1), None, 201, {"status": "accepted", "id": "ERP-9"})
    assert result["response"]["relation"] == "continue"
    assert result["response"]["response_data"] == {"status": "accepted", "id": "ERP-9"}


# -- failures: shown as the flow would fail ---------------------------------------------------------


def test_a_raising_script_shows_its_attributes_with_log_script_error(tmp_path):
    flow = load_flow(
        write_flow(
            tmp_path,
            {
                "scripts/t.py": """
        import json
        plan = json.loads(input_text)
        session.putAttribute(flowFile, "seen", "yes")
        outputStream.write(json.dumps({"reason": plan["reason"]["code"]}))
        """
            },
            script="scripts/t.py",
        )
    )
    plan = make_plan(3)

    result = try_flow(flow, plan)

    assert result["ok"] is False and result["failed_step"] == "script"
    script = result["script"]
    assert script["result_data"] is None
    assert script["attributes"]["seen"] == "yes"
    assert script["attributes"][ERROR_ATTRIBUTE].startswith("KeyError: 'code'")
    assert script["attributes"][ERROR_ATTRIBUTE].endswith("t.py:5)")
    assert script["error"] == script["attributes"][ERROR_ATTRIBUTE]
    assert result["mapping"]["ran"] is False and result["response"]["ran"] is False
    # The flow's transform task fails with the same attributes.
    [failed] = PlanPipeline.build(flow).transform(WorkItem.of(plan))
    assert failed.error and failed.attributes == script["attributes"]


def test_a_plan_sent_to_rel_failure_fails_at_the_script_step_with_its_attributes(refunds):
    plan = make_plan(7)
    del plan["order"]  # the NiFi-style script cannot read it and transfers it to REL_FAILURE

    result = try_flow(refunds, plan)

    assert result["failed_step"] == "script" and "REL_FAILURE" in result["error"]
    assert result["script"]["transferred"] == "failure"
    assert result["script"]["attributes"]["plan_pk"] == "7"
    assert any(log["level"] == "error" for log in result["script"]["logs"])
    [failed] = PlanPipeline.build(refunds).transform(WorkItem.of(plan))
    assert failed.error.startswith("PlanDataError: the script transferred the plan to REL_FAILURE")


def test_a_script_whose_output_is_not_json_fails_the_plan(tmp_path):
    flow = load_flow(write_flow(tmp_path, {"scripts/t.py": "outputStream.write('not json')\n"}, script="scripts/t.py"))
    result = try_flow(flow, make_plan(1))
    assert result["failed_step"] == "script" and "not JSON" in result["error"]
    assert result["script"]["result_data"] == "not json"


def test_a_script_that_runs_too_long_is_stopped(tmp_path):
    flow = load_flow(write_flow(tmp_path, {"scripts/t.py": "while True:\n    pass\n"}, script="scripts/t.py"))
    result = try_flow(flow, make_plan(1), timeout=0.3)
    assert result["failed_step"] == "script"
    assert result["script"]["attributes"][ERROR_ATTRIBUTE].startswith("ScriptTimeout: stopped after 0.3 s")


def test_a_failing_jolt_spec_fails_at_the_mapping_step(tmp_path):
    mapping = [{"operation": "shift", "spec": {"pk": "pk", "order": {"extra_field": {"erp_line": "lines[@(0)].line"}}}}]
    flow = load_flow(write_flow(tmp_path, mapping=mapping))
    plan = make_plan(4)
    plan["order"]["extra_field"] = {"erp_line": "999999999"}

    result = try_flow(flow, plan, None, 201, ACCEPTED)

    assert result["failed_step"] == "mapping" and "exceeds max_array_index" in result["mapping"]["error"]
    assert result["script"]["ran"] is False and result["response"]["ran"] is False
    assert result["request_body"] is None


def test_a_raising_response_script_and_one_without_a_relation(tmp_path):
    files = {
        "scripts/raises.py": "raise ValueError('no idea')\n",
        "scripts/silent.py": "session.putAttribute(flowFile, 'looked', 'yes')\n",
    }
    raising = load_flow(
        write_flow(
            tmp_path,
            files,
            flow_id="raises",
            write_erp={"custom_response": True, "response_script": "scripts/raises.py"},
        )
    )
    silent = load_flow(
        write_flow(
            tmp_path, flow_id="silent", write_erp={"custom_response": True, "response_script": "scripts/silent.py"}
        )
    )

    result = try_flow(raising, make_plan(1), None, 201, ACCEPTED)
    assert result["ok"] is True and result["failed_step"] == "response"  # sent, then the task fails
    assert result["response"]["attributes"][ERROR_ATTRIBUTE].startswith("ValueError: no idea")
    assert result["response"]["relation"] is None

    result = try_flow(silent, make_plan(1), None, 201, ACCEPTED)
    assert result["failed_step"] == "response" and "relation=None" in result["response"]["error"]


def test_the_default_response_template_when_custom_response_names_no_script(tmp_path):
    flow = load_flow(write_flow(tmp_path, write_erp={"custom_response": True}))
    result = try_flow(flow, make_plan(1), None, 422, "")
    assert result["response"]["evaluator"].startswith("default_response.py")
    assert result["response"]["relation"] == "failure"


def test_a_script_that_does_not_compile_is_reported(tmp_path):
    flow = load_flow(write_flow(tmp_path, {"scripts/t.py": "def broken(:\n"}, script="scripts/t.py"))
    result = try_flow(flow, make_plan(1))
    assert result["failed_step"] == "build" and "t.py:1" in result["error"]


def test_inputs_that_are_not_a_plan_or_attributes_are_refused(waiting):
    with pytest.raises(PanelInputError, match="plan must be a JSON object"):
        try_flow(waiting, [make_plan(1)])
    with pytest.raises(PanelInputError, match="attributes must be a JSON object"):
        try_flow(waiting, make_plan(1), ["a"])
    with pytest.raises(PanelInputError, match="between 100 and 599"):
        try_flow(waiting, make_plan(1), None, 42)


def test_extra_attributes_become_strings_and_reach_the_script(tmp_path):
    flow = load_flow(
        write_flow(
            tmp_path,
            {
                "scripts/t.py": """
        echo = get_attribute("n") + "/" + get_attribute("flag") + "/" + get_attribute("obj")
        session.putAttribute(flowFile, "echo", echo)
        """
            },
            script="scripts/t.py",
        )
    )
    result = try_flow(flow, make_plan(1), {"n": 5, "flag": True, "obj": {"a": 1}, "gone": None})
    assert result["script"]["attributes"]["echo"] == '5/true/{"a": 1}'
    assert "gone" not in result["input_attributes"]


def test_flows_are_listed_with_what_runs_and_broken_files_are_named(tmp_path):
    write_flow(tmp_path, {"scripts/t.py": "pass\n"}, script="scripts/t.py")
    (tmp_path / "broken.yaml").write_text("flow_id: broken\n", encoding="utf-8")

    listing = list_flows(tmp_path)

    assert [flow["flow_id"] for flow in listing["flows"]] == ["acme_cancel"]
    assert listing["flows"][0]["script"] == "scripts/t.py"
    assert listing["flows"][0]["response"] == "default table"
    assert any(line.startswith("broken.yaml: omnitron:") for line in listing["broken"])
    with pytest.raises(UnknownFlow):
        find_flow("broken", tmp_path)


# -- the FastAPI app, with Airflow's own authentication ---------------------------------------------

PREFIX = PANELS


@pytest.fixture
def panels_client(airflow_db, tmp_path, monkeypatch):
    """The plugin's apps with two users: admin (may trigger runs) and viewer (may only read)."""
    return pages_client(monkeypatch, tmp_path, ["admin:admin", "viewer:viewer"], EXAMPLE_FLOWS)


def try_body(**overrides):
    return {
        "plan": make_plan(4),
        "attributes": {},
        "erp_status": 422,
        "erp_body": '{"status": "rejected"}',
        **overrides,
    }


def test_the_plugin_mounts_the_app_and_shows_the_page_in_the_ui_nav():
    import order_cancel_panels

    plugin = order_cancel_panels.OrderCancelPanelsPlugin
    assert [(app["url_prefix"], app["name"]) for app in plugin.fastapi_apps] == [
        (PREFIX, "Order cancel test panels"),
        ("/order-cancel-plans", "Order cancel plans"),
    ]
    panels, plans, tab = plugin.external_views
    assert panels["href"] == "order-cancel-panels/" and panels["destination"] == "nav"
    assert panels["url_route"] == "order-cancel-panels" and panels["category"] == "browse"
    assert plans["href"] == "order-cancel-plans/" and plans["destination"] == "nav"
    assert tab["destination"] == "task_instance" and tab["name"] == "Plan history"
    assert tab["href"] == (
        "order-cancel-plans/?dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}"
    )


def test_anonymous_calls_are_refused(panels_client):
    assert panels_client.get(f"{PREFIX}/api/flows").status_code == 401
    assert panels_client.post(f"{PREFIX}/api/flows/acme_waiting_cancellations/try", json=try_body()).status_code == 401
    assert panels_client.get(f"{PREFIX}/").status_code == 401
    bad = {"Authorization": "Bearer not-a-jwt"}
    assert panels_client.get(f"{PREFIX}/api/flows", headers=bad).status_code == 403
    panels_client.cookies.set("_token", "not-a-jwt")
    assert panels_client.post(f"{PREFIX}/api/flows/acme_waiting_cancellations/try", json=try_body()).status_code == 403


def test_a_browser_without_a_session_is_sent_to_the_airflow_login(panels_client):
    response = panels_client.get(f"{PREFIX}/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/auth/login?next=%2Forder-cancel-panels%2F"


def test_the_ui_session_cookie_and_a_bearer_token_both_work(panels_client):
    listing = panels_client.get(f"{PREFIX}/api/flows", headers=bearer(panels_client, "admin")).json()
    assert [flow["flow_id"] for flow in listing["flows"]] == ["acme_confirmed_refunds", "acme_waiting_cancellations"]
    assert listing["user"] == "admin" and all(listing["can_try"].values())

    # The Airflow UI's login sets the _token cookie; the page (an iframe of the UI) sends it.
    panels_client.cookies.set("_token", panels_client.tokens["admin"])
    page = panels_client.get(f"{PREFIX}/")
    assert page.status_code == 200 and "<title>Order cancel test panels</title>" in page.text
    response = panels_client.post(f"{PREFIX}/api/flows/acme_waiting_cancellations/try", json=try_body())
    assert response.status_code == 200
    result = response.json()
    assert result["script"]["attributes"]["integration_code"] == "IC-4"
    assert result["request_body"]["cancellationId"] == 4
    assert result["response"]["relation"] == "failure"


def test_a_user_who_may_not_trigger_the_dag_may_read_but_not_try(panels_client):
    listing = panels_client.get(f"{PREFIX}/api/flows", headers=bearer(panels_client, "viewer")).json()
    assert len(listing["flows"]) == 2 and not any(listing["can_try"].values())
    response = panels_client.post(
        f"{PREFIX}/api/flows/acme_waiting_cancellations/try", json=try_body(), headers=bearer(panels_client, "viewer")
    )
    assert response.status_code == 403


def test_requests_bring_data_only(panels_client):
    url = f"{PREFIX}/api/flows/acme_waiting_cancellations/try"
    admin = bearer(panels_client, "admin")
    # No field can carry code or a path: unknown fields are refused.
    response = panels_client.post(url, json=try_body(script="raise SystemExit"), headers=admin)
    assert response.status_code == 422 and "script" in response.text
    assert panels_client.post(url, json=try_body(plan=[1]), headers=admin).status_code == 422
    assert panels_client.post(url, json=try_body(erp_status=42), headers=admin).status_code == 422
    assert panels_client.post(url, content="plan=1", headers={**admin, "Content-Type": "text/plain"}).status_code == 422
    too_big = try_body(erp_body="x" * (1024 * 1024))
    assert panels_client.post(url, json=too_big, headers=admin).status_code == 413
    # Only flows of the flows folder: an unknown id (or a path) is not found.
    assert panels_client.post(f"{PREFIX}/api/flows/nope/try", json=try_body(), headers=admin).status_code == 404
    assert panels_client.post(f"{PREFIX}/api/flows/..%2Fetc/try", json=try_body(), headers=admin).status_code == 404


def test_the_request_line_and_idempotency_key_are_the_flows(waiting):
    plan = make_plan(4)
    result = try_flow(waiting, plan)
    expected = WorkItem.of(plan).ref.idempotency_key(waiting.flow_id)  # what the flow's ERP write sends
    assert result["request"] == {
        "method": "POST",
        "url": "/api/cancellations",
        "idempotency_key": expected,
    }


def test_the_response_script_runs_under_the_panel_time_limit(tmp_path):
    flow = load_flow(
        write_flow(
            tmp_path,
            {"scripts/slow.py": "while True:\n    pass\n"},
            write_erp={"custom_response": True, "response_script": "scripts/slow.py"},
        )
    )
    result = try_flow(flow, make_plan(1), None, 201, ACCEPTED, timeout=0.3)
    assert result["failed_step"] == "response"
    assert result["response"]["attributes"][ERROR_ATTRIBUTE].startswith("ScriptTimeout: stopped after 0.3 s")
