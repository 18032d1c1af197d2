"""Script, mapping, response and post script steps end to end through Airflow against the fakes, with
the example scripts of include/flows copied unchanged into a flow folder, as a user would."""

from __future__ import annotations

from fakes import make_plan
from tests.conftest import every_layout
from tests.flow_runner import ROOT

EXAMPLES = ROOT / "include" / "flows"


def copy_example(flows, relative: str) -> None:
    flows.write_file(relative, (EXAMPLES / relative).read_text(encoding="utf-8"))


def erp_bodies(erp) -> dict:
    return {
        (r.body.get("cancellationId") or r.body.get("cancellation_id") or r.body.get("pk")): r.body
        for r in erp.requests
        if r.path in ("/api/cancellations", "/api/refunds")
    }


@every_layout
def test_short_style_script_then_jolt_mapping_build_the_erp_body(flows, omnitron, erp_servers, capfd, flow_mode):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(1, order_pk=101, order_number="429452907", items=2)])
    copy_example(flows, "scripts/enrich_plan.py")
    copy_example(flows, "mappings/erp_cancel.json")
    flows.write(script="scripts/enrich_plan.py", mapping="mappings/erp_cancel.json")

    run = flows.run()

    assert run.state == "success"
    body = erp_bodies(erp)[1]
    plan = omnitron.plans[1]
    assert body["orderNumber"] == "429452907" and body["cancellationId"] == 1
    assert body["refundAmount"] == plan["refund_amount"]
    assert [line["sku"] for line in body["lines"]] == [
        item["order_item"]["product"]["sku"] for item in plan["cancellationplanorderitem_set"]
    ]
    assert run.final(1)["attributes"]["integration_code"] == "IC-1"
    output = capfd.readouterr().out
    assert "log.transform = plan 1 (web)" in output, "log.* attributes reach the task log"
    if flow_mode == "batch":
        assert output.count("plan 1 · order 429452907: log.transform = plan 1 (web)") == 1, "once in the batch's log"
        (returned,) = run.xcom("plan_batch", map_index=0)
        steps = [record["step"] for record in returned["records"]]
        assert steps == ["script", "mapping", "write_erp", "write_omnitron"]
        assert not [record for record in returned["records"] if "output" in record], "the body is in the ERP record"
        assert run.final(1)["request_data"] == body


@every_layout
def test_an_integrator_nifi_style_script_runs_unchanged(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(3, order_pk=103, order_number="429452903", plan_type="refund")])
    copy_example(flows, "scripts/nifi_style_transform.py")
    flows.write(script="scripts/nifi_style_transform.py", write_erp={"url": "/api/refunds", "method": "PUT"})

    run = flows.run()

    assert run.state == "success"
    [request] = [r for r in erp.requests if r.path == "/api/refunds"]
    assert request.method == "PUT"
    assert request.body["order_number"] == "429452903"
    assert request.body["type"] == "REFUND" and request.body["channel_type"] == "web"
    assert request.body["currency"] == "TRY"


@every_layout
def test_a_custom_response_script_decides_from_the_erp_body_and_rejected_count(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans(
        [
            make_plan(1, order_pk=101),  # ERP: 409 duplicate -> continue
            make_plan(2, order_pk=102),  # ERP: 422, no rejected plan yet -> failure
            make_plan(3, order_pk=103),  # ERP: 422, the order has a rejected plan -> do_nothing
            make_plan(4, order_pk=103, status="rejected"),
        ]
    )
    erp.respond(match={"cancellationId": 1}, status=409, body={"status": "duplicate"})
    erp.respond(match={"cancellationId": 2}, status=422, body={"status": "rejected"})
    erp.respond(match={"cancellationId": 3}, status=422, body={"status": "rejected"})
    copy_example(flows, "scripts/acme_response.py")
    copy_example(flows, "mappings/erp_cancel.json")
    flows.write(
        mapping="mappings/erp_cancel.json",
        write_erp={"custom_response": True, "response_script": "scripts/acme_response.py"},
    )

    run = flows.run()

    assert {pk: run.summary[pk]["relation"] for pk in (1, 2, 3)} == {1: "continue", 2: "failure", 3: "do_nothing"}
    assert {pk: omnitron.plans[pk]["status"] for pk in (1, 2, 3)} == {1: "approved", 2: "rejected", 3: "waiting"}
    counts = sorted(r.query["order_id"] for r in omnitron.requests if r.query.get("status") == "rejected")
    assert counts == ["101", "102", "103"], "rejected_count is asked for each plan's order"
    assert run.final(3)["attributes"]["rejected_count"] == "1"
    assert run.final(2)["attributes"]["rejected_count"] == "0"


@every_layout
def test_the_default_response_template_is_used_when_no_script_is_named(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(1, order_pk=101), make_plan(2, order_pk=102)])
    erp.respond(match={"pk": 2}, status=404, body={"error": "no such order"})
    flows.write(write_erp={"custom_response": True})

    run = flows.run()

    assert {pk: row["relation"] for pk, row in run.summary.items()} == {1: "continue", 2: "failure"}


@every_layout
def test_a_post_script_calls_the_crm_after_the_omnitron_write(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(1, order_pk=101, order_number="429452901"), make_plan(2, order_pk=102)])
    erp.respond(match={"pk": 2}, status=400, body={"error": "bad plan"})
    copy_example(flows, "scripts/post_notify.py")
    flows.write(post_script="scripts/post_notify.py", attributes={"crm_url": f"{erp.url}/api/crm/notify"})

    run = flows.run()

    assert run.state == "success"
    [notification] = [r for r in erp.requests if r.path == "/api/crm/notify"]
    assert notification.body["order_number"] == "429452901"
    assert notification.body["erp_response"]["status"] == "accepted"
    assert run.final(1)["post_script"] == "ran"
    assert run.final(2)["post_script"] == "skipped", "a rejected plan has no post script"
    assert run.summary[1]["omnitron"] == "approved"


@every_layout
def test_a_script_that_raises_fails_only_its_plan(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2, 3)])
    flows.write_file(
        "scripts/strict.py",
        (
            "import json\n"
            "plan = json.loads(input_text)\n"
            "if plan['pk'] == 2:\n"
            "    raise KeyError('erp_reason_code')\n"
            "outputStream.write(json.dumps(plan))\n"
        ),
    )
    flows.write(script="scripts/strict.py")

    run = flows.run()

    assert run.state == "failed"
    assert sorted(r.body["pk"] for r in erp.requests if r.path == "/api/cancellations") == [1, 3]
    assert {pk: omnitron.plans[pk]["status"] for pk in (1, 2, 3)} == {1: "approved", 2: "waiting", 3: "approved"}
    error = run.summary[2]["error"]
    assert error.startswith("transform: KeyError: 'erp_reason_code' (") and error.endswith("scripts/strict.py:4)")


@every_layout
def test_a_dry_run_records_each_erp_request_and_sends_nothing(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(1, order_pk=101), make_plan(2, order_pk=102)])
    copy_example(flows, "mappings/erp_cancel.json")
    flows.write(mapping="mappings/erp_cancel.json")

    run = flows.run(conf={"dry_run": True})

    assert run.state == "success"
    assert erp.requests == [], "not even a login"
    assert [r.path for r in omnitron.requests if r.method == "POST"] == ["/api/v1/auth/login/"]
    recorded = run.final(2)["request"]
    assert recorded["method"] == "POST" and recorded["url"] == f"{erp.url}/api/cancellations"
    assert recorded["json"]["cancellationId"] == 2
    assert (
        set(recorded["headers"]) == {"Idempotency-Key"}
        and recorded["auth"] == "token login: token in header Authorization"
    )
    assert {row["relation"] for row in run.summary.values()} == {"dry_run"}
    assert all(plan["status"] == "waiting" for plan in omnitron.plans.values())


@every_layout
def test_a_script_that_will_not_stop_fails_only_its_plan(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2, 3)])
    flows.write_file(
        "scripts/stubborn.py",
        (
            "import json, time\n"
            "if json.loads(input_text)['pk'] == 2:\n"
            "    while True:\n"
            "        try:\n"
            "            time.sleep(1)\n"
            "        except:\n"
            "            pass\n"
        ),
    )
    flows.write(script="scripts/stubborn.py", script_timeout_seconds=1)

    run = flows.run()

    assert run.state == "failed"
    assert sorted(r.body["pk"] for r in erp.requests if r.path == "/api/cancellations") == [1, 3]
    assert {pk: omnitron.plans[pk]["status"] for pk in (1, 2, 3)} == {1: "approved", 2: "waiting", 3: "approved"}
    assert run.summary[2]["error"] == (
        "transform: ScriptTimeout: stopped after 1 s (it did not stop when asked: its process was killed)"
    )
