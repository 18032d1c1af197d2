"""The Order Cancel Flow end to end: real DAG files parsed by Airflow, run with dag.test() against the
fake Omnitron and ERP on 127.0.0.1. Assertions are on what each side received and the plans' final state."""

from __future__ import annotations

import pytest

from fakes import make_plan
from tests.conftest import every_layout
from tests.flow_runner import BASE_FLOW

APPROVE = "/api/v1/orders/{order}/cancellation_approved_order/"
UPDATE_STATUS = "/api/v1/cancellation_plans/{plan}/update_status/"
PLANS = "/api/v1/cancellation_plans/"


def plan_lists(omnitron):
    return [r for r in omnitron.requests if r.method == "GET" and r.path == PLANS]


def omnitron_writes(omnitron):
    return [(r.path, r.body) for r in omnitron.requests if r.method == "POST" and "auth/login" not in r.path]


def erp_writes(erp):
    return [r for r in erp.requests if r.path == "/api/cancellations"]


@every_layout
@pytest.mark.parametrize(
    ("get_data", "expected_query"),
    [
        (
            {"cancel_type": "cancel", "cancel_status": "waiting", "channel_ids": [1, 2]},
            {"status": "waiting", "plan_type": "cancel", "channel_type": "web", "channel_id__in": "1,2"},
        ),
        (
            {"cancel_type": "refund", "cancel_status": "confirmed", "channel_ids": "3"},
            {"status": "confirmed", "plan_type": "refund", "channel_type": "web", "channel_id__in": "3"},
        ),
        (
            {"cancel_type": "all", "cancel_status": "confirmation_waiting"},
            {"status": "confirmation_waiting", "channel_type": "web"},
        ),
        (
            {"cancel_type": "cancel", "cancel_status": "waiting", "channel_type": "marketplace", "channel_ids": []},
            {"status": "waiting", "plan_type": "cancel", "channel_type": "marketplace"},
        ),
    ],
    ids=["cancel-waiting-channels", "refund-confirmed-one-channel", "all-confirmation-waiting", "no-channel-ids"],
)
def test_the_plan_query_carries_exactly_the_flow_filters(flows, omnitron, get_data, expected_query):
    flows.write(get_data=get_data)

    run = flows.run()

    assert run.state == "success"
    [query] = [request.query for request in plan_lists(omnitron)]
    assert query == {**expected_query, "ordering": "modified_date", "limit": "100", "page": "1"}


@every_layout
def test_each_relation_gets_its_omnitron_call(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2, 3, 4)])
    erp.respond(match={"pk": 2}, status=400, body={"error": "unknown order"})
    erp.respond(match={"pk": 3}, status=503, body={"error": "maintenance"})
    erp.respond(match={"pk": 4}, status=401, body={"error": "token expired"}, times=1)
    flows.write()

    run = flows.run()

    assert run.state == "success"
    sent = erp_writes(erp)
    assert sorted(request.body["pk"] for request in sent) == [1, 2, 3, 4, 4]
    logins = [r for r in erp.requests if r.path == "/api/auth/login"]
    assert len(logins) == 2, "one login at the start, one more after plan 4's auth_fail"
    assert all(request.headers["Authorization"].startswith("Bearer ") for request in sent)
    assert all(request.headers["Idempotency-Key"].startswith("acme_cancel-") for request in sent)
    assert sorted(omnitron_writes(omnitron), key=str) == sorted(
        [
            (APPROVE.format(order=101), {"cancellation_plan": 1}),
            (UPDATE_STATUS.format(plan=2), {"status": "rejected"}),
            (APPROVE.format(order=104), {"cancellation_plan": 4}),
        ],
        key=str,
    )
    assert {pk: omnitron.plans[pk]["status"] for pk in (1, 2, 3, 4)} == {
        1: "approved",
        2: "rejected",
        3: "waiting",
        4: "approved",
    }
    assert {pk: (row["relation"], row["omnitron"]) for pk, row in run.summary.items()} == {
        1: ("continue", "approved"),
        2: ("failure", "rejected"),
        3: ("do_nothing", "untouched (retried by a later run)"),
        4: ("continue", "approved"),
    }


@every_layout
@pytest.mark.parametrize("next_state", ["confirmation_waiting", "confirmed", "completed"])
def test_next_state_other_than_approved_updates_the_plan_status(flows, omnitron, next_state):
    omnitron.add_plans([make_plan(7, order_pk=70)])
    flows.write(write_omnitron={"next_state": next_state})

    run = flows.run()

    assert run.state == "success"
    assert omnitron_writes(omnitron) == [(UPDATE_STATUS.format(plan=7), {"status": next_state})]
    assert omnitron.plans[7]["status"] == next_state


@every_layout
def test_auth_fail_is_bounded_then_left_for_later(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(5, order_pk=50)])
    erp.respond(match={"pk": 5}, status=401, body={"error": "nope"})
    flows.write(erp={"max_auth_retries": 2})

    run = flows.run()

    assert run.state == "success"
    assert len(erp_writes(erp)) == 3, "the first send and two resends after new logins"
    assert omnitron_writes(omnitron) == []
    assert run.summary[5]["relation"] == "do_nothing"


@every_layout
@pytest.mark.parametrize(
    ("erp_auth", "login", "expected_header"),
    [
        ("basic", {"type": "basic"}, "Basic ZXJwOmVycC1wYXNz"),
        ("header", {"type": "header", "prefix": "Bearer"}, "Bearer static-secret"),
        ("none", None, None),
    ],
)
def test_other_erp_login_styles(flows, omnitron, erp_servers, erp_auth, login, expected_header):
    erp = erp_servers[erp_auth]
    omnitron.add_plans([make_plan(9, order_pk=90)])
    flows.write({**BASE_FLOW, "erp": {"conn_id": f"erp_{erp_auth}", "login": login}})

    run = flows.run()

    assert run.state == "success"
    [sent] = erp_writes(erp)
    assert sent.headers.get("Authorization") == expected_header
    assert omnitron.plans[9]["status"] == "approved"


@every_layout
def test_get_method_sends_the_plan_as_query_parameters(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(11, order_pk=110)])
    flows.write(write_erp={"method": "GET"})

    flows.run()

    [sent] = erp_writes(erp)
    assert sent.method == "GET"
    assert sent.query["pk"] == "11"
    assert sent.body is None


@every_layout
def test_pagination_and_the_per_run_cap(flows, omnitron, erp_servers):
    omnitron.add_plans([make_plan(pk, order_pk=1000 + pk) for pk in range(1, 26)])
    flows.write(get_data={"page_size": 10, "max_plans_per_run": 22})

    first = flows.run()

    assert [r.query["page"] for r in plan_lists(omnitron)] == ["1", "2", "3"]
    assert len(first.summary) == 22
    assert sorted(pk for pk, plan in omnitron.plans.items() if plan["status"] == "approved") == list(range(1, 23))

    omnitron.clear_requests()
    second = flows.run()

    assert len(second.summary) == 3
    assert sorted(request.body["pk"] for request in erp_writes(erp_servers["token"]))[-3:] == [23, 24, 25]
    assert all(plan["status"] == "approved" for plan in omnitron.plans.values())


def test_mapped_instances_are_labelled_with_plan_and_order(flows, omnitron):
    omnitron.add_plans(
        [make_plan(31, order_pk=310, order_number="429452907"), make_plan(32, order_pk=320, order_number="429452908")]
    )
    flows.write()

    run = flows.run()

    # Each step's label says what the step made of the plan (tests/e2e/test_layouts.py: every layout).
    steps = {
        "plan.transform": "transformed",
        "plan.write_erp": "accepted by the ERP",
        "plan.write_omnitron": "approved",
    }
    for task_id, outcome in steps.items():
        assert [record.label for record in run.mapped(task_id)] == [
            f"plan 31 · order 429452907 · {outcome}",
            f"plan 32 · order 429452908 · {outcome}",
        ]
        assert all(record.state == "success" for record in run.mapped(task_id))


def test_a_failed_omnitron_update_fails_that_plan_only_and_the_run(flows, omnitron, erp_servers):
    omnitron.add_plans([make_plan(pk, order_pk=200 + pk) for pk in (1, 2, 3)])
    omnitron.add_fault("POST", r"/api/v1/orders/202/cancellation_approved_order/", status=500, times=None)
    flows.write()

    run = flows.run()

    assert run.state == "failed"
    states = {record.map_index: record.state for record in run.mapped("plan.write_omnitron")}
    assert states == {0: "success", 1: "failed", 2: "success"}
    assert run.task("summary").state == "failed"
    assert run.summary[2]["error"].startswith("write_omnitron: OmnitronError: Omnitron POST /api/v1/orders/202/")
    assert run.summary[1]["error"] is None and run.summary[1]["omnitron"] == "approved"
    assert omnitron.plans[1]["status"] == "approved" and omnitron.plans[3]["status"] == "approved"
    assert omnitron.plans[2]["status"] == "waiting"
    assert sorted(request.body["pk"] for request in erp_writes(erp_servers["token"])) == [1, 2, 3]


@every_layout
def test_bad_credentials_fail_the_login_task_with_a_clear_error(flows, omnitron, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OMNITRON_TEST",
        f'{{"conn_type": "http", "host": "{omnitron.url}", "login": "omnitron", "password": "wrong"}}',
    )
    omnitron.add_plans([make_plan(1, order_pk=100)])
    flows.write()

    run = flows.run()

    assert run.state == "failed"
    assert run.task("login").state == "failed"
    assert run.task("fetch_plans").state == "upstream_failed"
    assert run.task("summary").state == "failed"
    assert omnitron_writes(omnitron) == []


@every_layout
def test_a_bad_flow_file_breaks_only_its_own_dag(flows, omnitron):
    omnitron.add_plans([make_plan(1, order_pk=100)])
    flows.write()
    flows.write(name="broken", flow_id="broken_flow", get_data={"cancel_status": "pending"})

    bag = flows.dagbag()

    assert "acme_cancel" in bag.dags and "broken_flow" not in bag.dags
    [(path, message)] = bag.import_errors.items()
    assert path.endswith("order_cancel_flow_errors.py")
    assert "broken.yaml" in message and "get_data.cancel_status" in message
    assert flows.run().state == "success"
    assert omnitron.plans[1]["status"] == "approved"


def test_clearing_a_failed_omnitron_update_retries_it_without_resending_to_the_erp(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=300 + pk) for pk in (1, 2)])
    omnitron.add_fault("POST", r"/api/v1/orders/302/cancellation_approved_order/", status=502, times=None)
    flows.write()
    failed = flows.run()
    [failed_plan] = [r for r in failed.mapped("plan.write_omnitron") if r.state == "failed"]
    assert failed.state == "failed" and omnitron.plans[2]["status"] == "waiting"
    omnitron.clear_faults()
    omnitron.clear_requests()
    erp.clear_requests()

    cleared = flows.clear(failed, "plan.write_omnitron", failed_plan.map_index)

    assert cleared.state == "success"
    assert erp_writes(erp) == [], "the ERP already accepted plan 2: it is not sent again"
    assert omnitron_writes(omnitron) == [(APPROVE.format(order=302), {"cancellation_plan": 2})]
    assert omnitron.plans[2]["status"] == "approved"
    assert cleared.summary[2] == {
        "plan": 2,
        "order": omnitron.plans[2]["order"]["number"],
        "relation": "continue",
        "omnitron": "approved",
        "error": None,
    }
