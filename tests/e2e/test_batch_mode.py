"""High-volume mode: batches of plans per mapped task, each plan still isolated, and a retry or a
clear that runs only a batch's failed plans again. (The mode-agnostic end-to-end tests of the other
modules also run in batch mode: see `every_layout`.)"""

from __future__ import annotations

import re

import pytest

from fakes import make_plan
from tests.flow_runner import variable_keys

pytestmark = pytest.mark.parametrize("flow_mode", ["batch"], indirect=True)
APPROVE = "/api/v1/orders/{order}/cancellation_approved_order/"
ERP_WRITE = "/api/cancellations"


def sent(erp) -> list[int]:
    return sorted(r.body["pk"] for r in erp.requests if r.path == ERP_WRITE)


def test_batches_are_mapped_and_labelled_with_their_plans(flows, omnitron, erp_servers, capsys):
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in range(1, 6)])
    flows.write()

    run = flows.run()

    assert run.state == "success"
    assert [r.label for r in run.mapped("plan_batch")] == ["plans 1–2 (2)", "plans 3–4 (2)", "plans 5–5 (1)"]
    assert sent(erp_servers["token"]) == [1, 2, 3, 4, 5]
    assert {pk: row["omnitron"] for pk, row in run.summary.items()} == dict.fromkeys(range(1, 6), "approved")
    # Each batch task loads the list it is mapped over, so that list holds only the plans' refs;
    # the whole plans of batch i wait under fetch_plans' XCom key plan_batch.i.
    assert [[item["ref"]["plan_pk"] for item in batch] for batch in run.xcom("fetch_plans")] == [[1, 2], [3, 4], [5]]
    assert all(set(item) == {"ref"} for batch in run.xcom("fetch_plans") for item in batch)
    assert [item["plan"]["pk"] for item in run.xcom("fetch_plans", key="plan_batch.1")] == [3, 4]
    # A batch returns each plan's outcome and ERP exchange; the script's output and the Omnitron call
    # (in the ledger) stay out of the metadata database.
    returned = [record for plan in run.xcom("plan_batch", map_index=1) for record in plan["records"]]
    assert [record["step"] for record in returned] == ["write_erp", "write_omnitron"] * 2
    assert [record["phrase"] for record in returned if record["step"] == "write_omnitron"] == ["approved"] * 2
    assert not [record for record in returned if "call" in record]
    (received,) = [r.body for r in erp_servers["token"].requests if r.path == ERP_WRITE and r.body["pk"] == 3]
    assert run.final(3)["request_data"] == received
    # Each batch says what keeping its plans' progress cost: at least a write for its ERP decisions.
    kept = re.findall(r"kept in (\d+) writes to the task state store", capsys.readouterr().out)
    assert len(kept) == 3 and all(int(writes) >= 1 for writes in kept), kept


def test_a_retried_batch_runs_only_its_failed_plan(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2)])
    omnitron.add_fault("POST", APPROVE.format(order=102), status=503, times=1)
    flows.write(retries=1, retry_delay_seconds=0)

    run = flows.run()

    assert run.state == "success"
    assert sent(erp) == [1, 2], "each plan reached the ERP once, although the batch ran twice"
    approvals = [r.path for r in omnitron.requests if r.path.endswith("/cancellation_approved_order/")]
    assert sorted(approvals) == [APPROVE.format(order=101), APPROVE.format(order=102), APPROVE.format(order=102)]
    assert variable_keys() == [], "no Variable is left behind: the checkpoint is in the task state store"


def test_a_failed_plan_of_a_batch_continues_in_its_own_task_and_its_clear_sends_only_it(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2)])
    marker = flows.folder / "scripts" / "broken"
    flows.write_file(
        "scripts/check.py",
        (
            "import os\n"
            f"if get_attribute('plan_pk') == '2' and os.path.exists({str(marker)!r}):\n"
            "    raise ValueError('no reason code')\n"
        ),
    )
    marker.touch()
    flows.write(script="scripts/check.py")

    failed = flows.run()

    # The batch does not turn red for its plan: plan 2 continues, and fails, in its own instance.
    assert failed.state == "failed"
    assert [(task.label, task.state) for task in failed.mapped("plan_batch")] == [
        ("plans 1–2 (2) · 1 failed, each continued in its own plan task", "success")
    ]
    [plan_2] = failed.mapped("plan")
    assert (plan_2.label, plan_2.state) == ("plan 2 · order 429452102 · failed at script", "failed")
    assert plan_2.try_number == 1, "a script error is not retried"
    assert failed.summary[1]["omnitron"] == "approved"
    assert failed.summary[2]["error"].startswith("transform: ValueError: no reason code")
    assert sent(erp) == [1]

    marker.unlink()
    erp.clear_requests()
    cleared = flows.clear(failed, "plan", plan_2.map_index)

    assert cleared.state == "success"
    assert sent(erp) == [2], "the clear ran plan 2 alone"
    assert cleared.mapped("plan_batch")[0].try_number == 1, "the batch did not run again"
    assert [omnitron.plans[pk]["status"] for pk in (1, 2)] == ["approved", "approved"]
    assert cleared.mapped("plan")[0].label == "plan 2 · order 429452102 · approved"


def test_a_retried_batch_runs_only_the_failed_post_script_again(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2)])
    ran, marker = flows.folder / "post_script_runs", flows.folder / "crm_down"
    flows.write_file(
        "scripts/post.py",
        (
            "import os\n"
            f"with open({str(ran)!r}, 'a') as runs:\n"
            "    runs.write(get_attribute('plan_pk') + '\\n')\n"
            f"if get_attribute('plan_pk') == '2' and os.path.exists({str(marker)!r}):\n"
            f"    os.remove({str(marker)!r})\n"
            "    raise RuntimeError('CRM down')\n"
        ),
    )
    marker.touch()
    flows.write(post_script="scripts/post.py", retries=1, retry_delay_seconds=0)

    run = flows.run()

    # The retry finds both plans written to Omnitron in the checkpoint: it neither resends nor
    # rewrites them, and runs plan 2's post script again.
    assert run.state == "success"
    assert sorted(ran.read_text().split()) == ["1", "2", "2"]
    assert sent(erp) == [1, 2]
    approvals = sorted(r.path for r in omnitron.requests if r.path.endswith("/cancellation_approved_order/"))
    assert approvals == [APPROVE.format(order=101), APPROVE.format(order=102)]
    assert run.final(2)["post_script"] == "ran"
    assert variable_keys() == []


def test_a_post_script_that_keeps_failing_fails_its_plan_and_the_run(flows, omnitron, erp_servers):
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2)])
    flows.write_file("scripts/post.py", "if get_attribute('plan_pk') == '2':\n    raise RuntimeError('CRM down')\n")
    flows.write(post_script="scripts/post.py", retries=1, retry_delay_seconds=0)

    run = flows.run()

    assert run.state == "failed"
    assert run.summary[1]["error"] is None
    assert run.summary[2]["omnitron"] == "approved" and run.summary[2]["error"].startswith("post_script: ")
    approvals = sorted(r.path for r in omnitron.requests if r.path.endswith("/cancellation_approved_order/"))
    assert approvals == [APPROVE.format(order=101), APPROVE.format(order=102)], "written once, tries or not"
