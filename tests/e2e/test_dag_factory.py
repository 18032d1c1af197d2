"""What the DAG factory builds from a flow file, as Airflow parses it (no run)."""

from __future__ import annotations

import datetime as dt


def test_a_flow_file_becomes_a_dag_with_its_schedule_and_safety_settings(flows):
    flows.write(
        schedule="0 2 * * *",
        timezone="Europe/Istanbul",
        tags=["acme"],
        retries=3,
        retry_delay_seconds=60,
        erp={"pool": "acme_erp", "max_parallel_writes": 4},
        post_script=None,
    )

    dag = flows.dagbag().get_dag("acme_cancel")

    assert dag.max_active_runs == 1 and dag.catchup is False
    assert {"order-cancel", "waiting", "acme"} <= set(dag.tags)
    assert dag.timetable.expression == "0 2 * * *" and dag.timetable.timezone.name == "Europe/Istanbul"
    assert dag.default_args["retries"] == 3 and dag.default_args["retry_exponential_backoff"] is True
    assert dag.default_args["retry_delay"] == dt.timedelta(seconds=60)
    write_erp = dag.get_task("plan.write_erp")
    assert write_erp.pool == "acme_erp" and write_erp.max_active_tis_per_dagrun == 4
    assert set(dag.task_ids) == {
        "login",
        "fetch_plans",
        "plan.transform",
        "plan.write_erp",
        "plan.write_omnitron",
        "summary",
    }


def test_optional_steps_add_their_tasks(flows):
    flows.write_file("scripts/post.py", "log.info('done')\n")
    flows.write(post_script="scripts/post.py", get_data={"cancel_status": "completed"}, schedule="@daily")

    dag = flows.dagbag().get_dag("acme_cancel")

    assert "plan.post_script" in dag.task_ids and "advance_watermark" in dag.task_ids
    assert dag.get_task("advance_watermark").trigger_rule == "all_done"
    assert dag.get_task("summary").trigger_rule == "all_done"
    assert dag.timetable.expression == "0 0 * * *"


def test_manual_only_flows_have_no_schedule(flows):
    flows.write(schedule=None)
    assert type(flows.dagbag().get_dag("acme_cancel").timetable).__name__ == "NullTimetable"


def test_every_task_ends_once_the_flows_limits_are_spent(flows):
    """A task past every limit of its calls and scripts has hung: Airflow ends it (execution_timeout),
    so the flow's next run can start."""
    flows.write_file("scripts/enrich.py", "log.info('x')\n")
    limits = {
        "script": "scripts/enrich.py",
        "script_timeout_seconds": 10,
        "omnitron": {"timeout_seconds": 3},
        "erp": {"timeout_seconds": 5, "max_auth_retries": 1},
    }
    # One plan: the script (10 s), login and send twice (2 x 2 x 5 s), four Omnitron calls (4 x 3 s),
    # and two minutes for Airflow's own work.
    plan_limit = dt.timedelta(seconds=120 + 10 + 20 + 12)
    flows.write(**limits)
    per_step = flows.dagbag().get_dag("acme_cancel")
    flows.write(flow_id="acme_batch", batch={"size": 20, "concurrency": 4}, **limits)
    batches = flows.dagbag().get_dag("acme_batch")

    assert {per_step.get_task(f"plan.{step}").execution_timeout for step in ("transform", "write_erp")} == {plan_limit}
    assert batches.get_task("plan_batch").execution_timeout == dt.timedelta(seconds=120 + 5 * 42)
    assert batches.get_task("plan").execution_timeout == plan_limit
    assert all(task.execution_timeout for dag in (per_step, batches) for task in dag.tasks)
