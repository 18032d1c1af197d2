"""NiFi fidelity for response scripts, and the query check: every attribute InvokeHTTP writes reaches
the response script, and an ERP that ignores Idempotency-Key is asked before a plan is sent again."""

from __future__ import annotations

import re
import uuid

import pytest
import yaml

from fakes import make_plan
from order_cancel.clients.erp import ErpAnswer
from order_cancel.flows.loading import FlowConfigError, load_flow
from order_cancel.panels.service import try_flow
from order_cancel.pipeline.invokehttp import invokehttp_attributes
from tests.conftest import every_layout
from tests.flow_runner import BASE_FLOW, merged

APPROVE = "/api/v1/orders/{order}/cancellation_approved_order/"
QUERY_CHECK = {"url": "/api/cancellations/{pk}", "found_status": [200]}

# A response script as the Integrator's users write them, reading InvokeHTTP's attributes.
NIFI_RESPONSE = """\
import re, uuid
status = int(get_attribute("invokehttp.status.code"))
message = get_attribute("invokehttp.status.message")
body = get_attribute("invokehttp.response.body") or ""
assert re.fullmatch(r"[0-9]+", get_attribute("invokehttp.request.duration"))
uuid.UUID(get_attribute("invokehttp.tx.id"))
url = get_attribute("invokehttp.request.url")
session.putAttribute(flowFile, "log.seen", "%s %s %s %s" % (status, message, url, body))
if 200 <= status < 300:
    relation = "continue"
elif "shipped" in body:
    relation = "failure"
else:
    relation = "do_nothing"
session.putAttribute(flowFile, "relation", relation)
session.transfer(flowFile, REL_SUCCESS)
"""


def erp_writes(erp) -> list[int]:
    return sorted(r.body["pk"] for r in erp.requests if r.method == "POST" and r.path == "/api/cancellations")


# -- the attributes, on their own -------------------------------------------------------------------


def test_an_answer_gives_the_attributes_invokehttp_writes():
    accepted = ErpAnswer(201, '{"id": 1}', reason="Created", request_url="http://erp/x", duration_ms=12)
    refused = ErpAnswer(422, '{"error": "shipped"}', request_url="http://erp/x", response_url="http://erp/y")

    ok, bad = invokehttp_attributes(accepted), invokehttp_attributes(refused)

    assert ok["invokehttp.status.code"] == "201" and ok["invokehttp.status.message"] == "Created"
    assert ok["invokehttp.request.duration"] == "12" and "invokehttp.response.body" not in ok, "2xx: no body attribute"
    assert ok["invokehttp.request.url"] == ok["invokehttp.response.url"] == "http://erp/x"
    assert bad["invokehttp.status.message"].startswith("Unprocessable"), "the reason phrase, when the answer had none"
    assert (
        bad["invokehttp.response.body"] == '{"error": "shipped"}' and bad["invokehttp.response.url"] == "http://erp/y"
    )
    assert uuid.UUID(ok["invokehttp.tx.id"]) != uuid.UUID(bad["invokehttp.tx.id"]), "a UUID per request"


def test_a_request_without_an_answer_gives_the_exception():
    attributes = invokehttp_attributes(
        ErpAnswer(None, error="timeout", exception=("ReadTimeout", "read timed out"), request_url="http://erp/x")
    )
    assert attributes["invokehttp.java.exception.class"] == "ReadTimeout"
    assert attributes["invokehttp.java.exception.message"] == "read timed out"
    assert "invokehttp.status.code" not in attributes and attributes["invokehttp.request.url"] == "http://erp/x"


# -- through Airflow ------------------------------------------------------------------------------------


@every_layout
def test_a_response_script_written_against_invokehttp_runs_unchanged(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2, 3)])
    erp.respond(match={"pk": 2}, status=422, body={"error": "order already shipped"})
    erp.respond(match={"pk": 3}, delay=1.5)
    flows.write_file("scripts/nifi_response.py", NIFI_RESPONSE)
    flows.write(
        write_erp={"custom_response": True, "response_script": "scripts/nifi_response.py"},
        erp={"timeout_seconds": 0.5},
    )

    run = flows.run()

    assert run.state == "success"
    assert {pk: run.summary[pk]["relation"] for pk in (1, 2, 3)} == {1: "continue", 2: "failure", 3: "do_nothing"}
    seen = {pk: run.final(pk)["attributes"].get("log.seen") for pk in (1, 2)}
    assert re.fullmatch(rf"201 Created {re.escape(erp.url)}/api/cancellations ", seen[1]), seen[1]
    assert seen[2].startswith("422 Unprocessable") and seen[2].endswith('{"error": "order already shipped"}')
    timed_out = run.final(3)["attributes"]
    assert timed_out["invokehttp.java.exception.class"] == "ReadTimeout" and "log.seen" not in timed_out, (
        "no answer: the response script is skipped, as InvokeHTTP routes it"
    )


@every_layout
def test_the_query_check_keeps_an_erp_that_ignores_idempotency_from_booking_a_plan_twice(
    flows, omnitron, erp_servers, flow_mode
):
    erp = erp_servers["token"]
    erp.set_idempotency(False)
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2)])
    # The ERP books plan 1 and its answer never comes back in time.
    erp.respond(match={"pk": 1}, delay=1.5, book=True, times=1)
    flows.write(erp={"timeout_seconds": 0.5}, write_erp={"query_check": QUERY_CHECK})

    first = flows.run()
    assert first.summary[1]["relation"] == "do_nothing" and omnitron.plans[1]["status"] == "waiting"
    assert first.summary[2]["omnitron"] == "approved"
    second = flows.run()

    assert (second.summary[1]["relation"], second.summary[1]["omnitron"]) == ("continue", "approved")
    assert sorted(body["pk"] for body in erp.booked_bodies()) == [1, 2], "each plan booked once"
    assert erp_writes(erp) == [1, 2], "plan 1 was not sent again: the ERP already had it"
    checks = sorted(r.path for r in erp.requests if r.method == "GET")
    assert checks == ["/api/cancellations/1", "/api/cancellations/1", "/api/cancellations/2"], "asked first, each run"
    assert second.final(1)["relation"] == "continue" and omnitron.plans[1]["status"] == "approved"


def test_without_a_query_check_such_an_erp_books_the_plan_twice(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    erp.set_idempotency(False)
    omnitron.add_plans([make_plan(1, order_pk=101)])
    erp.respond(match={"pk": 1}, delay=1.5, book=True, times=1)
    flows.write(erp={"timeout_seconds": 0.5})
    flows.run()
    flows.run()
    assert [body["pk"] for body in erp.booked_bodies()] == [1, 1], "the double booking the query check prevents"


@pytest.mark.parametrize("answer", [{"status": 503}, {"delay": 1.5}], ids=["5xx", "no-answer"])
def test_a_query_check_without_an_answer_leaves_the_plan_for_later_and_sends_nothing_blind(
    flows, omnitron, erp_servers, answer
):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(1, order_pk=101)])
    erp.respond(path="/api/cancellations/1", method="GET", **answer)
    flows.write(erp={"timeout_seconds": 0.5}, write_erp={"query_check": QUERY_CHECK})

    run = flows.run()

    assert run.state == "success" and run.summary[1]["relation"] == "do_nothing"
    assert erp_writes(erp) == [] and omnitron.plans[1]["status"] == "waiting"


def test_a_query_check_script_decides_whether_the_erp_has_the_plan(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2)])
    # An ERP that always answers 200, with "found": true or false in the body.
    erp.respond(path="/api/cancellations/1", method="GET", status=200, body={"found": True})
    erp.respond(path="/api/cancellations/2", method="GET", status=200, body={"found": False})
    flows.write_file(
        "scripts/check.py",
        "import json\nrelation = 'continue' if json.loads(input_text)['found'] else 'failure'\n"
        "session.putAttribute(flowFile, 'relation', relation)\n",
    )
    flows.write(write_erp={"query_check": {"url": "/api/cancellations/{pk}", "script": "scripts/check.py"}})

    run = flows.run()

    assert erp_writes(erp) == [2], "plan 1 was there already; plan 2 was sent"
    assert {pk: run.summary[pk]["omnitron"] for pk in (1, 2)} == {1: "approved", 2: "approved"}


# -- flow files, panels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "check, problem",
    [
        ({"url": "/x/{pk}", "found_status": [200], "script": "scripts/c.py"}, "give found_status or script, not both"),
        ({"url": "/x/{pk"}, "is not a str.format template"),
        ({"method": "GET"}, "write_erp.query_check.url: Field required"),
    ],
)
def test_a_query_check_that_cannot_work_is_one_line(tmp_path, check, problem):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "c.py").write_text("pass\n")
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(merged(BASE_FLOW, {"write_erp": {"query_check": check}})), encoding="utf-8")
    with pytest.raises(FlowConfigError) as refused:
        load_flow(path)
    assert problem in "\n".join(refused.value.problems)


def test_the_panels_show_the_invokehttp_attributes_and_the_query_check(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "r.py").write_text(NIFI_RESPONSE, encoding="utf-8")
    document = merged(
        BASE_FLOW,
        {"write_erp": {"custom_response": True, "response_script": "scripts/r.py", "query_check": QUERY_CHECK}},
    )
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")

    result = try_flow(load_flow(path), make_plan(4), None, 422, '{"error": "shipped"}')

    attributes = result["response"]["attributes"]
    assert result["response"]["relation"] == "failure"
    assert attributes["invokehttp.status.message"].startswith("Unprocessable")
    assert attributes["invokehttp.response.body"] == '{"error": "shipped"}'
    assert result["request"]["query_check"] == "GET /api/cancellations/{pk} (found: [200])"
