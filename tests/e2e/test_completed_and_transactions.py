"""Completed-status watermark, window runs, Order Transaction mode and clearing, end to end through
Airflow against the fakes: which plans each run sent, and that none is sent twice or skipped."""

from __future__ import annotations

import datetime as dt
import json

from fakes import make_order_transaction, make_plan
from fakes.omnitron import TRANSACTIONS
from order_cancel.airflow.run_data import watermark_variable as variable_key
from tests.conftest import every_layout
from tests.flow_runner import variable

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
COMPLETED = {"get_data": {"cancel_status": "completed", "completed_since": "2026-03-01T00:00:00Z"}}
WATERMARK = variable_key("acme_cancel")


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def completed_plan(pk: int, minutes: int) -> dict:
    return make_plan(pk, order_pk=100 + pk, status="completed", modified_date=at(minutes))


def sent_pks(erp) -> list[int]:
    return sorted(request.body["pk"] for request in erp.requests if request.path == "/api/cancellations")


def omnitron_writes(omnitron) -> list:
    return [r.path for r in omnitron.requests if r.method == "POST" and "auth/login" not in r.path]


@every_layout
def test_watermark_takes_new_and_changed_plans_only(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([completed_plan(pk, pk) for pk in (1, 2, 3)])
    flows.write(**COMPLETED)

    first = flows.run()

    assert first.state == "success"
    assert sent_pks(erp) == [1, 2, 3]
    assert json.loads(variable(WATERMARK)) == {"modified_date": "2026-03-01T12:03:00Z", "plan_pks": [3]}
    assert omnitron_writes(omnitron) == [], "a completed flow writes nothing to Omnitron"

    erp.clear_requests()
    omnitron.add_plans([completed_plan(2, 10), completed_plan(4, 5)])  # plan 2 changed, plan 4 is new
    second = flows.run()

    assert second.state == "success"
    assert sent_pks(erp) == [2, 4]
    [query] = [
        r.query for r in omnitron.requests if r.path == "/api/v1/cancellation_plans/" and r.query.get("page") == "1"
    ][-1:]
    assert query["modified_date__gte"] == "2026-03-01T12:03:00Z" and query["status"] == "completed"

    erp.clear_requests()
    assert flows.run().state == "success"
    assert sent_pks(erp) == [], "nothing new: nothing sent"


@every_layout
def test_a_cap_smaller_than_the_backlog_with_equal_dates_across_a_page_boundary(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    # Plans 3, 4 and 5 share one modification date; pages of 2 split them, and the cap of 4 too.
    omnitron.add_plans(
        [
            completed_plan(1, 1),
            completed_plan(2, 2),
            completed_plan(3, 3),
            completed_plan(4, 3),
            completed_plan(5, 3),
            completed_plan(6, 4),
            completed_plan(7, 5),
        ]
    )
    flows.write(get_data={**COMPLETED["get_data"], "page_size": 2, "max_plans_per_run": 4})

    flows.run()
    assert sent_pks(erp) == [1, 2, 3, 4]
    assert json.loads(variable(WATERMARK))["plan_pks"] == [3, 4]

    erp.clear_requests()
    flows.run()
    assert sent_pks(erp) == [5, 6, 7]

    erp.clear_requests()
    flows.run()
    assert sent_pks(erp) == []


@every_layout
def test_a_failed_run_moves_nothing_and_the_next_run_takes_everything(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([completed_plan(pk, pk) for pk in (1, 2, 3)])
    omnitron.add_fault("GET", r"/api/v1/cancellation_plans/", status=503, times=1)
    flows.write(**COMPLETED)

    failed = flows.run()

    assert failed.state == "failed"
    assert failed.task("fetch_plans").state == "failed"
    assert sent_pks(erp) == [] and variable(WATERMARK) is None

    good = flows.run()

    assert good.state == "success"
    assert sent_pks(erp) == [1, 2, 3]


@every_layout
def test_a_window_run_refetches_its_window_and_leaves_the_watermark(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([completed_plan(pk, pk * 10) for pk in (1, 2, 3, 4)])
    flows.write(**COMPLETED)
    flows.run()
    watermark = variable(WATERMARK)
    erp.clear_requests()

    window = flows.run(conf={"window_start": "2026-03-01T12:15:00Z", "window_end": "2026-03-01T12:35:00Z"})

    assert window.state == "success"
    assert sent_pks(erp) == [2, 3]
    lists = [r.query for r in omnitron.requests if r.path == "/api/v1/cancellation_plans/"]
    assert lists[-1]["modified_date__gte"] == "2026-03-01T12:15:00Z"
    assert lists[-1]["modified_date__lt"] == "2026-03-01T12:35:00Z"
    assert variable(WATERMARK) == watermark


@every_layout
def test_order_transaction_mode_maps_delivered_plans_and_retries_the_rest(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    plans = [make_plan(pk, order_pk=500 + pk, status="completed", plan_type="refund") for pk in (1, 2, 3)]
    omnitron.add_plans(plans)
    omnitron.add_order_transactions(
        [make_order_transaction(900 + pk, 500 + pk, amount="100.00", modified_date=at(pk)) for pk in (1, 2, 3)]
    )
    flows.write_file(
        "scripts/code.py", 'session.putAttribute(flowFile, "integration_code", "IC-" + get_attribute("plan_pk"))\n'
    )
    erp.respond(match={"pk": 2}, status=500, body={"error": "down"}, times=1)
    flows.write(get_data={"cancel_status": "order_transaction", "cancel_type": "refund"}, script="scripts/code.py")

    first = flows.run()

    assert first.state == "success"
    assert sent_pks(erp) == [1, 2, 3]
    tx_query = next(r.query for r in omnitron.requests if r.path == "/api/v1/order_transactions/")
    assert tx_query["transaction_type"] == "return" and tx_query["integration_mapping__isnull"] == "true"
    assert sorted(r.query["order_id"] for r in omnitron.requests if "order_id" in r.query) == ["501", "502", "503"]
    mappings = {r.path: r.body for r in omnitron.requests if r.path.endswith("/create_mapping/")}
    assert mappings == {
        "/api/v1/order_transactions/901/create_mapping/": {"code": "IC-1"},
        "/api/v1/order_transactions/903/create_mapping/": {"code": "IC-3"},
    }
    assert omnitron.order_transactions[902]["integration_mapping"] is None

    erp.clear_requests()
    second = flows.run()

    assert sent_pks(erp) == [2], "only the undelivered transaction's plan is sent again"
    assert omnitron.order_transactions[902]["integration_mapping"] == {"code": "IC-2"}
    assert second.summary[2]["omnitron"] == "integration mapping 'IC-2' created"


def test_clearing_a_failed_plan_of_a_completed_flow_retries_only_that_plan(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([completed_plan(pk, pk) for pk in (1, 2, 3)])
    marker = flows.folder / "scripts" / "plan-2-is-broken"
    flows.write_file(
        "scripts/check.py",
        (
            "import os\n"
            f"if get_attribute('plan_pk') == '2' and os.path.exists({str(marker)!r}):\n"
            "    raise ValueError('plan 2 lacks the ERP reason code')\n"
        ),
    )
    marker.touch()
    flows.write(**COMPLETED, script="scripts/check.py")

    failed = flows.run()

    assert failed.state == "failed"
    assert sent_pks(erp) == [1, 3]
    [broken] = [r for r in failed.mapped("plan.transform") if r.state == "failed"]
    assert failed.summary[2]["error"].startswith("transform: ValueError: plan 2 lacks the ERP reason code")
    assert json.loads(variable(WATERMARK))["plan_pks"] == [3]

    marker.unlink()  # the user fixes the cause, then clears the failed task in the UI
    erp.clear_requests()
    cleared = flows.clear(failed, "plan.transform", broken.map_index)

    assert cleared.state == "success"
    assert sent_pks(erp) == [2]
    erp.clear_requests()
    flows.run()
    assert sent_pks(erp) == [], "the next scheduled run does not send plan 2 again"


@every_layout
def test_a_backfill_takes_each_interval_and_leaves_the_watermark(flows, omnitron, erp_servers, flow_mode):
    erp = erp_servers["token"]
    omnitron.add_plans([completed_plan(1, 30), completed_plan(2, 90), completed_plan(3, 150), completed_plan(4, 170)])
    # A flow id of its own: a backfill is planned from the latest serialized version of the DAG,
    # and does not run again the dates an earlier backfill of that DAG ran.
    flow_id = f"acme_hourly_{flow_mode}"
    flows.write(**COMPLETED, flow_id=flow_id, schedule="@hourly")
    flows.run(flow_id)  # the scheduled path: every plan once, and a watermark
    watermark = variable(variable_key(flow_id))
    erp.clear_requests()

    runs = flows.backfill(at(60), at(120), flow_id=flow_id)  # [13:00, 14:00) and [14:00, 15:00)

    assert [run.state for run in runs] == ["success", "success"]
    windows = [
        (r.query["modified_date__gte"], r.query["modified_date__lt"])
        for r in omnitron.requests
        if r.path == "/api/v1/cancellation_plans/" and "modified_date__lt" in r.query
    ]
    assert windows == [
        ("2026-03-01T13:00:00Z", "2026-03-01T14:00:00Z"),
        ("2026-03-01T14:00:00Z", "2026-03-01T15:00:00Z"),
    ]
    assert [sorted(row for row in run.summary) for run in runs] == [[2], [3, 4]]
    assert sent_pks(erp) == [2, 3, 4]
    assert variable(variable_key(flow_id)) == watermark


# Modification minutes by plan pk: Omnitron's pk order is not their modification order, and plans 2
# and 10 share a date.
UNSORTED = {1: 9, 2: 3, 3: 7, 4: 1, 5: 8, 6: 2, 7: 6, 8: 4, 9: 5, 10: 3}


def test_an_omnitron_that_ignores_ordering_skips_no_plan_and_sends_none_twice_over_capped_runs(
    flows, omnitron, erp_servers
):
    erp = erp_servers["token"]
    omnitron.ordering_param = (
        None  # it lists by pk whatever `ordering` asks, as DRF does with a parameter it does not know
    )
    omnitron.add_plans([completed_plan(pk, minutes) for pk, minutes in UNSORTED.items()])
    flows.write(get_data={**COMPLETED["get_data"], "page_size": 2, "max_plans_per_run": 3})

    sent = []
    for _ in range(5):
        erp.clear_requests()
        assert flows.run().state == "success"
        sent.append(sent_pks(erp))

    # Each run the three modified first since the watermark: every plan once, in modification order.
    assert sent == [[2, 4, 6], [8, 9, 10], [3, 5, 7], [1], []]
    assert json.loads(variable(WATERMARK)) == {"modified_date": "2026-03-01T12:09:00Z", "plan_pks": [1]}

    erp.clear_requests()
    omnitron.add_plans([completed_plan(4, 20), completed_plan(11, 15)])  # plan 4 changed, plan 11 is new
    flows.run()
    assert sent_pks(erp) == [4, 11]


@every_layout
def test_an_order_transaction_without_its_order_fails_alone_naming_the_field(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=500 + pk, status="completed", plan_type="refund") for pk in (1, 2, 3)])
    omnitron.add_order_transactions(
        [make_order_transaction(900 + pk, 500 + pk, amount="100.00", modified_date=at(pk)) for pk in (1, 2, 3)]
    )
    omnitron.omit_field(TRANSACTIONS, "order", pks=[902])  # its serializer does not show it
    flows.write(get_data={"cancel_status": "order_transaction", "cancel_type": "refund"})

    first = flows.run()

    assert first.state == "failed"
    assert sent_pks(erp) == [1, 3]
    assert {row["plan"]: row["error"] for row in first.summary.values()} == {
        1: None,
        3: None,
        None: "transform: PlanDataError: order transaction 902: its field 'order', the pk of its order, is missing: "
        "its cancellation plans cannot be found (python -m order_cancel preflight checks this field)",
    }
    assert omnitron.order_transactions[902]["integration_mapping"] is None

    erp.clear_requests()
    second = flows.run()

    assert sent_pks(erp) == [], "the delivered transactions are mapped; the one without its order fails again"
    assert [row["plan"] for row in second.summary.values()] == [None]
