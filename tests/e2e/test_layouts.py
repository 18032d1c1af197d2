"""The three task layouts (per step, one task per plan, batches) through real Airflow: each plan's
outcome in its task's label, a failed plan resumed at its failed step by a retry or a clear, and
the batches' failed plans each continued in a task instance of its own."""

from __future__ import annotations

import pytest

from fakes import make_plan
from tests.conftest import every_layout
from tests.flow_runner import RunResult, TaskRecord

APPROVE = "/api/v1/orders/{order}/cancellation_approved_order/"
# The task whose instance holds a plan's last step, per layout.
PLAN_TASK = {"per_step": "plan.write_omnitron", "single": "plan", "batch": "plan"}
# How often a failed step runs before a clear: a try and a retry, and in batch mode the batch first.
TRIES_BEFORE_CLEAR = {"per_step": 2, "single": 2, "batch": 3}


def sent(erp) -> list[int]:
    return sorted(r.body["pk"] for r in erp.requests if r.path == "/api/cancellations")


def approvals(omnitron) -> list[str]:
    return sorted(r.path for r in omnitron.requests if r.path.endswith("/cancellation_approved_order/"))


def failed_instance(run: RunResult) -> TaskRecord:
    [failed] = [task for task in run.tasks if task.state == "failed" and task.map_index >= 0]
    return failed


def plan_labels(run: RunResult, flow_mode: str) -> dict[str, str]:
    """Each plan's label on the instance that holds its outcome: the per-step layout's last step,
    the one-task-per-plan instance, a batch's failed plans' own instances."""
    tasks = [task for task in run.tasks if task.task_id == PLAN_TASK[flow_mode] and task.map_index >= 0]
    if flow_mode == "per_step":  # a plan that failed before its Omnitron write has its label there
        tasks += [task for task in run.tasks if task.task_id.startswith("plan.") and task.state == "failed"]
    return {task.label.split(" · ")[0]: task.label for task in tasks}


def four_outcomes(omnitron, erp) -> None:
    """Plans 1 to 4: approved, rejected by the ERP (422), left for later (ERP 503), and accepted by the
    ERP but failed at its Omnitron write (for good)."""
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2, 3, 4)])
    erp.respond(match={"pk": 2}, status=422, body={"error": "shipped"})
    erp.respond(match={"pk": 3}, status=503, body={"error": "maintenance"})
    omnitron.add_fault("POST", APPROVE.format(order=104), status=500, times=None)


@every_layout
def test_each_label_says_what_became_of_its_plan(flows, omnitron, erp_servers, flow_mode):
    four_outcomes(omnitron, erp_servers["token"])
    flows.write()

    run = flows.run()

    labels = plan_labels(run, flow_mode)
    expected = {
        "plan 1": "plan 1 · order 429452101 · approved",
        "plan 2": "plan 2 · order 429452102 · rejected",
        "plan 3": "plan 3 · order 429452103 · left for a later run (ERP 503)",
        "plan 4": "plan 4 · order 429452104 · failed at Omnitron write",
    }
    if flow_mode == "batch":  # only the failed plan has an instance of its own
        expected = {"plan 4": expected["plan 4"]}
        assert {task.label for task in run.mapped("plan_batch")} == {
            "plans 1–2 (2)",
            "plans 3–4 (2) · 1 failed, each continued in its own plan task",
        }
    assert labels == expected
    assert run.state == "failed"


@every_layout
def test_an_accepted_plan_whose_omnitron_write_failed_is_cleared_after_the_fix_and_approved_once(
    flows, omnitron, erp_servers, flow_mode
):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2)])
    omnitron.add_fault("POST", APPROVE.format(order=102), status=502, times=None)
    flows.write(retries=1, retry_delay_seconds=0)
    failed = flows.run()
    instance = failed_instance(failed)
    assert failed.state == "failed" and instance.task_id == PLAN_TASK[flow_mode]
    assert instance.try_number == 2, "a 5xx is retried"
    assert omnitron.plans[2]["status"] == "waiting"

    omnitron.clear_faults()
    cleared = flows.clear(failed, instance.task_id, instance.map_index)

    assert cleared.state == "success"
    assert sent(erp) == [1, 2], "the ERP got plan 2 once, through a try, a retry and a clear"
    assert approvals(omnitron).count(APPROVE.format(order=102)) == TRIES_BEFORE_CLEAR[flow_mode] + 1
    assert omnitron.plans[2]["status"] == "approved"
    assert cleared.summary[2]["omnitron"] == "approved" and cleared.summary[2]["error"] is None


@every_layout
def test_a_failed_post_script_runs_again_alone(flows, omnitron, erp_servers, flow_mode):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2)])
    ran, down = flows.folder / "post_script_runs", flows.folder / "crm_down"
    flows.write_file(
        "scripts/post.py",
        (
            "import os\n"
            f"with open({str(ran)!r}, 'a') as runs:\n"
            "    runs.write(get_attribute('plan_pk') + '\\n')\n"
            f"if get_attribute('plan_pk') == '2' and os.path.exists({str(down)!r}):\n"
            "    raise RuntimeError('CRM down')\n"
        ),
    )
    down.touch()
    flows.write(post_script="scripts/post.py", retries=1, retry_delay_seconds=0)
    failed = flows.run()
    instance = failed_instance(failed)
    assert failed.summary[2]["error"].startswith("post_script: RuntimeError: CRM down")

    down.unlink()
    cleared = flows.clear(failed, instance.task_id, instance.map_index)

    assert cleared.state == "success"
    # A script error is not retried: one try (in batch mode the batch's, then the plan task's), the clear.
    runs = {"per_step": 2, "single": 2, "batch": 3}[flow_mode]
    assert sorted(ran.read_text().split()) == ["1"] + ["2"] * runs
    assert sent(erp) == [1, 2]
    assert approvals(omnitron) == [APPROVE.format(order=101), APPROVE.format(order=102)], "written once"


@pytest.mark.parametrize("flow_mode", ["single"], indirect=True)
def test_one_task_per_plan_keeps_its_progress_and_a_clear_of_a_done_plan_sends_nothing(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(1, order_pk=101)])
    flows.write()
    done = flows.run()
    assert done.state == "success" and [task.label for task in done.mapped("plan")] == [
        "plan 1 · order 429452101 · approved"
    ]
    omnitron.reset_data()
    erp.clear_requests()
    omnitron.clear_requests()

    cleared = flows.clear(done, "plan", 0)

    assert cleared.state == "success"
    assert sent(erp) == [] and approvals(omnitron) == [], "the plan was done: nothing is sent or written again"
    assert cleared.summary[1]["omnitron"] == "approved"


@pytest.mark.parametrize("flow_mode", ["single"], indirect=True)
def test_a_plan_whose_script_failed_runs_from_the_start_with_the_same_input(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(1, order_pk=101)])
    seen, broken = flows.folder / "inputs", flows.folder / "broken"
    flows.write_file(
        "scripts/t.py",
        (
            "import os\n"
            f"with open({str(seen)!r}, 'a') as inputs:\n"
            "    inputs.write(input_text + '\\n')\n"
            f"if os.path.exists({str(broken)!r}):\n"
            "    raise ValueError('not yet')\n"
            "outputStream.write(input_text)\n"
        ),
    )
    broken.touch()
    flows.write(script="scripts/t.py")
    failed = flows.run()
    omnitron.plans[1]["refund_amount"] = "1.00"  # Omnitron changed meanwhile: the clear keeps the run's input

    broken.unlink()
    cleared = flows.clear(failed, "plan", 0)

    first, second = seen.read_text().splitlines()
    assert first == second, "the same input"
    assert cleared.state == "success" and sent(erp) == [1]


@pytest.mark.parametrize("flow_mode", ["batch"], indirect=True)
def test_a_batch_run_without_failures_has_only_its_batch_instances(flows, omnitron, erp_servers):
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2, 3)])
    flows.write()

    run = flows.run()

    assert run.state == "success"
    assert [task.state for task in run.mapped("plan_batch")] == ["success", "success"]
    assert run.mapped("plan") == [] and run.task("plan").state == "skipped"
    assert run.task("failed_plans").state == "success"
