"""The Airflow UI in Chromium: a plan that fails, is fixed and is cleared; and the test panels page.

Every wait is on something the UI shows (a role, a label, a state badge), never a sleep. Each step
leaves a screenshot in artifacts/browser/.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

import pytest

from devtools.stack import ADMIN_PASSWORD, ADMIN_USER

try:
    from playwright.sync_api import Page, expect
except ImportError:  # not skipped: the `browser` fixture fails every test here and says what to install
    Page = expect = None

DAG_ID = "acme_waiting_cancellations"
RUN_TIMEOUT_MS = 120_000
PANEL_TITLE = "Order cancel test panels"


def log_in(page: Page, base: str, path: str = "/") -> None:
    """Open `path` without a session: Airflow sends the browser to its login form, then back."""
    page.goto(base + path)
    page.wait_for_url(re.compile(r"/auth/login\?next="))
    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + path)


def waiting_plans(stack) -> list[dict]:
    """The plans acme_waiting_cancellations takes: waiting, web channels 1 and 2 (the fake's own data)."""
    plans = stack.fake("GET", f"{stack.omnitron}/_fake/plans")
    return sorted(
        (plan for plan in plans if plan["status"] == "waiting" and plan["order"]["channel"] in (1, 2)),
        key=lambda plan: plan["pk"],
    )


def label(plan: dict, outcome: str) -> str:
    """A plan's instance label, with what became of the plan."""
    return f"plan {plan['pk']} · order {plan['order']['number']} · {outcome}"


FAILED, APPROVED = "failed at Omnitron write", "approved"


def approve_fails(stack, plan: dict) -> None:
    """Omnitron answers 500 to the approval of this plan, for good."""
    stack.fake(
        "POST",
        f"{stack.omnitron}/_fake/faults",
        json={
            "method": "POST",
            "path_regex": f"/orders/{plan['order']['pk']}/cancellation_approved_order/",
            "status": 500,
            "body": {"detail": "omnitron is down"},
            "times": None,
        },
    )


def run_state_badge(page: Page, run_id: str):
    heading = page.get_by_role("heading", name=run_id, exact=True, level=2)
    return heading.locator("xpath=..").get_by_test_id("state-badge")


def erp_calls(stack, path: str) -> list[dict]:
    return [call for call in stack.fake("GET", f"{stack.erp}/_fake/requests") if call["path"] == path]


@pytest.mark.shots("1-run")
def test_a_plan_failed_by_omnitron_is_fixed_and_cleared_in_the_ui(browser, page, shot, ui_stack):
    base = ui_stack.base
    plans = waiting_plans(ui_stack)
    assert len(plans) >= 3, plans
    failing = plans[1]
    # Omnitron answers 500 to the approval of one plan, for good: its write_omnitron task fails (retries 0).
    ui_stack.fake("DELETE", f"{ui_stack.omnitron}/_fake/faults")
    approve_fails(ui_stack, failing)
    try:
        # Log in through the login form.
        log_in(page, base)
        expect(page.get_by_role("link", name="Dags", exact=True)).to_be_visible()
        shot(page, "logged-in")

        # Unpause, then trigger.
        page.goto(f"{base}/dags/{DAG_ID}")
        toggle = page.get_by_test_id("toggle-pause")
        expect(toggle).to_have_attribute("data-state", "unchecked")  # new DAGs start paused
        toggle.click()
        expect(toggle).to_have_attribute("data-state", "checked")
        assert ui_stack.api("GET", f"/dags/{DAG_ID}")["is_paused"] is False
        shot(page, "unpaused")
        page.get_by_role("button", name="Trigger Dag").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_role("heading", name=f"Trigger Dag - {DAG_ID}")).to_be_visible()
        shot(page, "trigger-dialog")
        dialog.get_by_role("button", name="Trigger", exact=True).click()
        page.wait_for_url(re.compile(rf"/dags/{DAG_ID}/runs/[^/]+$"))
        run_id = unquote(page.url.rsplit("/", 1)[1])
        run_url = page.url
        assert run_id.startswith("manual__")

        # The run fails: one plan's Omnitron update.
        expect(run_state_badge(page, run_id)).to_have_text("Failed", timeout=RUN_TIMEOUT_MS)
        shot(page, "run-failed")

        # The grid: expand the plan group and open the mapped write_omnitron instances of this run.
        page.get_by_role("button", name="Expand all task groups").click()
        for step in ("transform", "write_erp", "write_omnitron", "post_script"):
            expect(page.get_by_role("link", name=f"{step} [ ]")).to_be_visible()
        shot(page, "grid-expanded")
        page.locator(f"a[href$='/runs/{run_id}/tasks/plan.write_omnitron/mapped']").click()
        expect(page.get_by_role("heading", name=f"{len(plans)} Task Instances")).to_be_visible()
        for plan in plans:  # every mapped instance carries its plan's label, with its outcome
            outcome = FAILED if plan is failing else APPROVED
            row = page.get_by_role("row").filter(has=page.get_by_role("link", name=label(plan, outcome), exact=True))
            expect(row).to_contain_text("Failed" if plan is failing else "Success")
        shot(page, "mapped-instances-labelled")

        # Fix Omnitron, then clear the failed instance with its downstream tasks.
        ui_stack.fake("DELETE", f"{ui_stack.omnitron}/_fake/faults")
        page.get_by_role("link", name=label(failing, FAILED), exact=True).click()
        expect(page.get_by_role("navigation", name="breadcrumb")).to_contain_text(label(failing, FAILED))
        shot(page, "failed-instance")
        page.get_by_role("button", name="Press shift+c to clear").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_role("heading", name=re.compile("Clear Task Instance"))).to_be_visible()
        # Downstream is the dialog's default; select it if a later UI version changes that.
        expect(dialog.get_by_role("row").filter(has_text="plan.write_omnitron")).to_have_count(1)  # list loaded
        affected = dialog.get_by_role("button", name=re.compile(r"Affected Tasks: \d+"))
        if affected.inner_text().strip() != "Affected Tasks: 3":
            dialog.get_by_role("button", name="Downstream", exact=True).click()
        expect(affected).to_have_text("Affected Tasks: 3")  # write_omnitron, its post_script, the summary
        for task_id in ("plan.write_omnitron", "plan.post_script", "summary"):
            expect(dialog.get_by_role("row").filter(has_text=task_id)).to_have_count(1)
        shot(page, "clear-dialog")
        dialog.get_by_role("button", name="Confirm").click()
        expect(dialog).to_be_hidden()

        # The run ends in success; the plan is approved, and the ERP was not called again.
        page.goto(run_url)
        expect(run_state_badge(page, run_id)).to_have_text("Success", timeout=RUN_TIMEOUT_MS)
        row = (
            page.get_by_role("row")
            .filter(has_text="plan.write_omnitron")
            .filter(has=page.get_by_role("link", name=label(failing, APPROVED), exact=True))
        )
        expect(row).to_contain_text("Success")
        shot(page, "run-success")
    finally:
        ui_stack.fake("DELETE", f"{ui_stack.omnitron}/_fake/faults")

    states = {plan["pk"]: plan["status"] for plan in ui_stack.fake("GET", f"{ui_stack.omnitron}/_fake/plans")}
    assert all(states[plan["pk"]] == "approved" for plan in plans), states
    sent = [call["body"]["cancellationId"] for call in erp_calls(ui_stack, "/api/cancellations")]
    assert sorted(sent) == [plan["pk"] for plan in plans]  # each plan sent once: clearing did not resend
    assert len(erp_calls(ui_stack, "/api/crm/notify")) == len(plans)  # every post script ran


@pytest.mark.shots("2-panels")
def test_the_test_panels_page_in_the_airflow_ui(browser, page, shot, ui_stack):
    base = ui_stack.base
    plan = next(plan for plan in ui_stack.fake("GET", f"{ui_stack.omnitron}/_fake/plans") if plan["pk"] == 4)

    # Without a session the panel sends the browser to Airflow's login, and comes back after it.
    log_in(page, base, "/order-cancel-panels/")
    expect(page.get_by_role("heading", name=PANEL_TITLE, level=1)).to_be_visible()
    shot(page, "panel-after-login")

    # In the Airflow UI: Browse > Order cancel test panels shows the page in the UI.
    page.goto(f"{base}/")
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name=PANEL_TITLE).click()
    page.wait_for_url(re.compile(r"/plugin/order-cancel-panels"))
    panel = page.frame_locator(f"iframe[title='{PANEL_TITLE}']")
    expect(panel.get_by_role("heading", name=PANEL_TITLE, level=1)).to_be_visible()

    # Pick a flow, paste a plan, attributes and an ERP answer.
    panel.get_by_label("Flow", exact=True).select_option(DAG_ID)
    expect(panel.locator("#flow-info")).to_contain_text("scripts/enrich_plan.py")
    panel.get_by_label("Plan JSON").fill(json.dumps(plan, indent=2, ensure_ascii=False))
    panel.get_by_label("Extra attributes").fill('{"rejected_count": "0"}')
    panel.get_by_label("ERP status code").fill("422")
    panel.get_by_label("ERP answer body").fill('{"status": "rejected", "error": "order already shipped"}')
    shot(page, "panel-filled")
    panel.get_by_role("button", name="Run the panels").click()

    # Script step: result_data and attributes; mapping: the ERP request body; response: the relation.
    expect(panel.get_by_role("status")).to_have_text("Done: relation failure")
    expect(panel.get_by_test_id("result-data")).to_contain_text('"erp_reason_code": "WRONG_SIZE"')
    script_attributes = panel.get_by_role("table", name="script attributes")
    expect(script_attributes.get_by_role("row").filter(has_text="integration_code")).to_contain_text("IC-4")
    expect(panel.get_by_test_id("request-body")).to_contain_text('"cancellationId": 4')
    expect(panel.get_by_test_id("request-body")).to_contain_text(f'"orderNumber": "{plan["order"]["number"]}"')
    expect(panel.get_by_test_id("evaluator")).to_have_text("scripts/acme_response.py")
    expect(panel.get_by_test_id("relation")).to_have_text("failure")
    response_attributes = panel.get_by_role("table", name="response attributes")
    expect(response_attributes.get_by_role("row").filter(has_text="log.response")).to_contain_text(
        "plan 4: HTTP 422, 0 previously rejected -> failure"
    )
    panel.locator("#results").scroll_into_view_if_needed()
    shot(page, "panel-results")

    # A plan the script cannot read: the script step shows the error and log.script.error.
    broken = {key: value for key, value in plan.items() if key != "pk"}
    panel.get_by_label("Plan JSON").fill(json.dumps(broken, ensure_ascii=False))
    panel.get_by_role("button", name="Run the panels").click()
    expect(panel.get_by_role("status")).to_have_text("The plan fails at its script step")
    expect(panel.get_by_test_id("script-error")).to_contain_text("KeyError: 'pk'")
    error_row = (
        panel.get_by_role("table", name="script attributes").get_by_role("row").filter(has_text="log.script.error")
    )
    expect(error_row).to_contain_text("enrich_plan.py")
    expect(panel.locator("#response-panel")).to_contain_text("Not run: the plan fails before it is sent.")
    panel.locator("#results").scroll_into_view_if_needed()
    shot(page, "panel-script-error")
