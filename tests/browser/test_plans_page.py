"""The plans page in Chromium: a plan found by its order number, its timeline across attempts, Retry on
one failed plan and Retry all failed of its run, and the same timeline as a tab of the plan's task
instance. Every wait is on something the page shows; each step leaves a screenshot."""

from __future__ import annotations

import re

import pytest

from fakes import make_plan
from tests.browser.test_airflow_ui import DAG_ID, approve_fails, erp_calls, log_in

try:
    from playwright.sync_api import expect
except ImportError:  # not skipped: the `browser` fixture fails every test here and says what to install
    expect = None

PLANS_TITLE = "Order cancel plans"
FAILED, APPROVED = "failed at Omnitron write", "approved"


def triggered_run(stack) -> str:
    stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    return stack.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None})["dag_run_id"]


@pytest.mark.shots("3-plans")
def test_the_plans_page_finds_a_failed_plan_and_retries_it(browser, page, shot, ui_stack):
    base = ui_stack.base
    first, second = (make_plan(pk, order_pk=pk, channel=1) for pk in (9001, 9002))
    ui_stack.fake("DELETE", f"{ui_stack.omnitron}/_fake/faults")
    ui_stack.fake("POST", f"{ui_stack.omnitron}/_fake/plans", json=[first, second])
    for plan in (first, second):
        approve_fails(ui_stack, plan)
    try:
        run_id = triggered_run(ui_stack)
        assert ui_stack.wait_for_run(DAG_ID, run_id)["state"] == "failed"
        ui_stack.fake("DELETE", f"{ui_stack.omnitron}/_fake/faults")  # Omnitron is fixed

        # Without a session the page sends the browser to Airflow's login; back, it finds the plan.
        number = first["order"]["number"]
        log_in(page, base, f"/order-cancel-plans/?order={number}")
        expect(page.get_by_role("heading", name=PLANS_TITLE, level=1)).to_be_visible()
        expect(page.get_by_role("status")).to_have_text("1 plan(s)")
        row = page.get_by_role("table", name="plans").get_by_role("row").filter(has_text=number)
        expect(row).to_contain_text(FAILED)
        timeline = page.get_by_role("table", name="attempts")
        title = f"{DAG_ID} · plan 9001 · order {number} · now: {FAILED}"
        expect(page.locator("#timeline-title")).to_have_text(title)
        sent = timeline.get_by_role("row").filter(has_text="plan.write_erp")
        expect(sent).to_contain_text("ERP 201 -> continue")
        sent.get_by_text("ERP request").click()
        expect(sent.locator("details").filter(has_text="ERP request").locator("pre")).to_contain_text(
            '"cancellationId": 9001'
        )
        expect(timeline.get_by_role("row").filter(has_text="plan.transform")).not_to_contain_text("ERP request")
        expect(timeline.get_by_role("row").filter(has_text="plan.write_omnitron")).to_contain_text("FAILED")
        shot(page, "failed-plan-found", full_page=True)

        # Retry: the plan's failed instance is cleared through the REST API, with this user's session.
        row.get_by_role("button", name="Retry plan 9001").click()
        expect(page.get_by_role("status")).to_contain_text(f"task instance(s) of {run_id}: plan 9001 runs again")
        shot(page, "retried")
        assert ui_stack.wait_for_run(DAG_ID, run_id)["state"] == "failed", "plan 9002 still failed"
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#timeline-title")).to_have_text(f"{DAG_ID} · plan 9001 · order {number} · now: {APPROVED}")
        expect(timeline.get_by_role("row").filter(has_text="try 2")).to_contain_text(f"Omnitron: {APPROVED}")
        shot(page, "approved-after-retry", full_page=True)

        # The flow's open plans, and Retry all failed of the run.
        page.get_by_label("Order number").fill("")
        page.get_by_label("Flow").select_option(DAG_ID)
        page.get_by_label("Only failed and left for later").check()
        page.get_by_role("button", name="Search").click()
        expect(page.get_by_role("table", name="plans").get_by_role("row").filter(has_text="9002")).to_contain_text(
            FAILED
        )
        shot(page, "open-plans")
        page.get_by_role("button", name=f"Retry all 1 failed of {run_id}").click()
        expect(page.get_by_role("status")).to_contain_text("1 failed plan(s) runs again")
        assert ui_stack.wait_for_run(DAG_ID, run_id)["state"] == "success"
        page.get_by_role("button", name="Search").click()
        expect(page.get_by_role("status")).to_have_text("No plan matches")

        # The timeline as a tab of the plan's task instance, opened from its grid link.
        page.get_by_label("Only failed and left for later").uncheck()
        page.get_by_label("Plan pk").fill("9002")
        page.get_by_role("button", name="Search").click()
        page.get_by_role("link", name=re.compile(r"plan\.write_omnitron\[\d+\] try 2")).click()
        page.wait_for_url(re.compile(r"/tasks/plan\.write_omnitron/mapped/\d+"))
        page.get_by_role("link", name="Plan history", exact=True).click()
        tab = page.frame_locator("iframe[title='Plan history']")
        expect(tab.locator("#timeline-title")).to_have_text(
            f"{DAG_ID} · plan 9002 · order {second['order']['number']} · now: {APPROVED}"
        )
        shot(page, "task-instance-tab", full_page=True)
    finally:
        ui_stack.fake("DELETE", f"{ui_stack.omnitron}/_fake/faults")

    sent = [call["body"]["cancellationId"] for call in erp_calls(ui_stack, "/api/cancellations")]
    assert sent.count(9001) == 1 and sent.count(9002) == 1, "retried plans were not sent to the ERP again"
    states = {plan["pk"]: plan["status"] for plan in ui_stack.fake("GET", f"{ui_stack.omnitron}/_fake/plans")}
    assert states[9001] == states[9002] == "approved"


def test_the_plans_page_is_in_the_browse_menu(browser, page, ui_stack):
    log_in(page, ui_stack.base)
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name=PLANS_TITLE).click()
    page.wait_for_url(re.compile(r"/plugin/order-cancel-plans"))
    frame = page.frame_locator(f"iframe[title='{PLANS_TITLE}']")
    expect(frame.get_by_role("heading", name=PLANS_TITLE, level=1)).to_be_visible()
    expect(frame.locator("#ledger")).to_contain_text("order_cancel_ledger.db")
