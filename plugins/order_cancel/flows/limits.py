"""How long a flow's tasks may run (Airflow's `execution_timeout`), derived from the flow's own limits.

Every call and script of a plan has a limit of its own (`omnitron.timeout_seconds`,
`erp.timeout_seconds`, `script_timeout_seconds`); a task that runs past all of them used in full
has hung, and is ended, so that the flow's next run (one at a time) can start.
"""

from __future__ import annotations

import datetime as dt
import math

from order_cancel.flows.models import FlowConfig

# Airflow's own work around a task's calls: its start, XCom, the task state store, the ledger.
SLACK_SECONDS = 120.0
# Omnitron calls of one plan: the plan read when a write may have happened, the write, the
# rejected_count query, and one more after a new login.
_OMNITRON_CALLS_PER_PLAN = 4
# A fetch reads each page of plans (and for order transaction flows, of transactions) and may log in again.
_OMNITRON_CALLS_PER_PAGE = 2


def scripts_per_plan(flow: FlowConfig) -> int:
    write = flow.write_erp
    check_script = write.query_check is not None and write.query_check.script is not None
    response_script = write.custom_response or write.response_script is not None
    return sum((flow.script is not None, response_script, flow.post_script is not None, check_script))


def plan_seconds(flow: FlowConfig) -> float:
    """The longest one plan's work can take with every call and script at its limit: each ERP
    call (login, query check, send) once per authentication retry, then Omnitron's calls."""
    erp_calls = (flow.erp.max_auth_retries + 1) * (2 + (flow.write_erp.query_check is not None))
    return (
        scripts_per_plan(flow) * flow.script_timeout_seconds
        + erp_calls * flow.erp.timeout_seconds
        + _OMNITRON_CALLS_PER_PLAN * flow.omnitron.timeout_seconds
    )


def plan_task_timeout(flow: FlowConfig) -> dt.timedelta:
    """A task that works on one plan (or on one stage of one plan)."""
    return dt.timedelta(seconds=SLACK_SECONDS + plan_seconds(flow))


def batch_task_timeout(flow: FlowConfig) -> dt.timedelta:
    """A batch: its plans `concurrency` at a time."""
    assert flow.batch is not None
    rounds = math.ceil(flow.batch.size / flow.batch.concurrency)
    return dt.timedelta(seconds=SLACK_SECONDS + rounds * plan_seconds(flow))


def run_task_timeout(flow: FlowConfig) -> dt.timedelta:
    """The run's own tasks (login, fetch, summary): the fetch's pages are the most of them."""
    pages = math.ceil(flow.get_data.max_plans_per_run / flow.get_data.page_size) + 1
    calls = _OMNITRON_CALLS_PER_PAGE * pages + flow.erp.max_auth_retries + 1
    return dt.timedelta(seconds=SLACK_SECONDS + calls * max(flow.omnitron.timeout_seconds, flow.erp.timeout_seconds))
