"""DAG factory: one Airflow DAG per flow file.

Kept to "load flows -> build one DAG each"; parsing does no network I/O and compiles nothing, so the
DAG processor stays fast. Broken flow files are left out here and reported by `report_broken_flows`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any, NamedTuple

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, get_parsing_context, task_group

from order_cancel.airflow import run_data
from order_cancel.airflow.labels import BATCH_LABEL, PLAN_LABEL
from order_cancel.airflow.locations import flows_folder
from order_cancel.airflow.operators.batch import CollectFailedPlansOperator, ProcessBatchOperator
from order_cancel.airflow.operators.plan import (
    PlanOperator,
    PostScriptOperator,
    TransformPlanOperator,
    WriteErpOperator,
    WriteOmnitronOperator,
)
from order_cancel.airflow.operators.run import (
    AdvanceWatermarkOperator,
    FetchPlansOperator,
    LoginOperator,
    RunSummaryOperator,
)
from order_cancel.flows.checks import inspect_flows
from order_cancel.flows.limits import batch_task_timeout, plan_task_timeout, run_task_timeout
from order_cancel.flows.loading import FlowConfigError, FlowsFolderError, load_flows
from order_cancel.flows.models import CancelStatus, FlowConfig, Layout
from order_cancel.pipeline.plan import Stage
from order_cancel.pipeline.steps import flow_stages

log = logging.getLogger(__name__)


class BrokenFlowFiles(Exception):
    """Raised by the errors DAG file so that Airflow lists every broken flow file as an import error."""


def schedule_of(flow: FlowConfig) -> CronDataIntervalTimetable | str | None:
    # Cron schedules get data intervals (previous tick to this tick), which backfills and
    # completed-status windows rely on; the time zone makes "0 0 * * *" midnight in that zone.
    expression = flow.effective_schedule.expression
    if expression is None or expression == "@once":
        return expression
    return CronDataIntervalTimetable(expression, timezone=pendulum.timezone(flow.timezone))


def start_date_of(flow: FlowConfig) -> pendulum.DateTime:
    return pendulum.instance(flow.start_date.replace(tzinfo=None), tz=pendulum.timezone(flow.timezone))


def build_dag(flow: FlowConfig) -> DAG:
    note = flow.effective_schedule.note
    with DAG(
        dag_id=flow.flow_id,
        description=flow.description or f"Order Cancel Flow from {Path(flow.source or '').name}",
        schedule=schedule_of(flow),
        start_date=start_date_of(flow),
        catchup=flow.catchup,
        max_active_runs=1,
        tags=["order-cancel", flow.get_data.cancel_status.value, *flow.tags],
        default_args={
            "retries": flow.retries,
            "retry_delay": dt.timedelta(seconds=flow.retry_delay_seconds),
            "retry_exponential_backoff": True,
            "max_retry_delay": dt.timedelta(minutes=30),
            "execution_timeout": run_task_timeout(flow),
        },
        doc_md=f"Order Cancel Flow `{flow.flow_id}`, defined in `{flow.source}`." + (f" Its {note}." if note else ""),
        # Registered by the DAG file only once it is whole (see `build_dags`), never half-built.
        auto_register=False,
    ) as dag:
        login = LoginOperator(task_id=run_data.LOGIN_TASK, flow=flow)
        fetch = FetchPlansOperator(task_id=run_data.FETCH_TASK, flow=flow)

        plans = _LAYOUTS[flow.layout](flow, fetch)
        summary = RunSummaryOperator(task_id=run_data.SUMMARY_TASK, flow=flow, plan_task_ids=plans.task_ids)
        login >> fetch >> plans.first
        plans.last >> summary
        if flow.get_data.cancel_status is CancelStatus.COMPLETED:
            # A second leaf beside the summary: if it fails, the run fails too.
            plans.last >> AdvanceWatermarkOperator(
                task_id=run_data.WATERMARK_TASK, flow=flow, plan_task_ids=plans.task_ids
            )
    return dag


class LayoutTasks(NamedTuple):
    """A layout's plan tasks: the first to run after fetch_plans, the last, and the task ids whose
    records the summary reads."""

    first: Any
    last: Any
    task_ids: list[str]


def _erp_limits(flow: FlowConfig) -> dict:
    limits = {"max_active_tis_per_dagrun": flow.erp.max_parallel_writes}
    return {**limits, "pool": flow.erp.pool} if flow.erp.pool else limits


def _plan_limits(flow: FlowConfig) -> dict:
    return {"flow": flow, "execution_timeout": plan_task_timeout(flow)}


def _per_step_tasks(flow: FlowConfig, fetch: FetchPlansOperator) -> LayoutTasks:
    """A task group mapped over the plans: one task instance per plan and stage."""

    @task_group(group_id=run_data.PLAN_GROUP)
    def process_plan(item):
        prepared = TransformPlanOperator(task_id=Stage.TRANSFORM.value, step_input=item, **_plan_limits(flow))
        delivered = WriteErpOperator(
            task_id=Stage.WRITE_ERP.value, step_input=prepared.output, **_plan_limits(flow), **_erp_limits(flow)
        )
        written = WriteOmnitronOperator(
            task_id=Stage.WRITE_OMNITRON.value, step_input=delivered.output, **_plan_limits(flow)
        )
        if flow.post_script:
            # The post script reads the ERP's request and answer; it runs once Omnitron is written.
            written >> PostScriptOperator(
                task_id=Stage.POST_SCRIPT.value, step_input=delivered.output, **_plan_limits(flow)
            )

    group = process_plan.expand(item=fetch.output)
    return LayoutTasks(group, group, [run_data.stage_task(stage) for stage in flow_stages(flow)])


def _plan_task(flow: FlowConfig, mapped_over: Any) -> Any:
    """One task instance per plan, mapped over plan refs (a mapped operator takes its label from partial())."""
    partial = PlanOperator.partial(
        task_id=run_data.PLAN_TASK, map_index_template=PLAN_LABEL, **_plan_limits(flow), **_erp_limits(flow)
    )
    return partial.expand(step_input=mapped_over)


def _single_tasks(flow: FlowConfig, fetch: FetchPlansOperator) -> LayoutTasks:
    plans = _plan_task(flow, fetch.output)
    return LayoutTasks(plans, plans, [run_data.PLAN_TASK])


def _batch_tasks(flow: FlowConfig, fetch: FetchPlansOperator) -> LayoutTasks:
    """One task instance per batch of plans, then one per plan a batch could not finish."""
    batch = ProcessBatchOperator.partial(
        task_id=run_data.BATCH_TASK,
        flow=flow,
        map_index_template=BATCH_LABEL,
        execution_timeout=batch_task_timeout(flow),
        **_erp_limits(flow),
    ).expand(plan_refs=fetch.output)
    failed = CollectFailedPlansOperator(task_id=run_data.FAILED_PLANS_TASK, flow=flow)
    batch >> failed
    return LayoutTasks(batch, _plan_task(flow, failed.output), [run_data.PLAN_TASK])


_LAYOUTS = {Layout.PER_STEP: _per_step_tasks, Layout.SINGLE: _single_tasks, Layout.BATCH: _batch_tasks}


def _guarded_build(flow: FlowConfig) -> DAG:
    """A flow's DAG, or FlowConfigError naming its file: whatever goes wrong stays with that flow."""
    try:
        dag = build_dag(flow)
        dag.validate()
    except Exception as exc:
        raise FlowConfigError(flow.source, [f"the DAG cannot be built: {type(exc).__name__}: {exc}"]) from exc
    return dag


def build_dags(folder: Path | None = None) -> dict[str, DAG]:
    """The DAGs of every flow file that loads; what does not is left to `report_broken_flows`."""
    try:
        flows, _ = load_flows(folder or flows_folder())
    except FlowsFolderError as exc:
        log.error("No order cancel flows: %s", exc)
        return {}
    # A task's process parses the DAG file for its own DAG only: build that one alone.
    wanted = get_parsing_context().dag_id
    dags = {}
    for flow in (flow for flow in flows if wanted in (None, flow.flow_id)):
        if flow.effective_schedule.note:
            log.warning("%s: schedule: %s", flow.source, flow.effective_schedule.note)
        try:
            dags[flow.flow_id] = _guarded_build(flow)
        except FlowConfigError as exc:
            log.error("Flow file left out: %s", exc)
    return dags


def report_broken_flows(folder: Path | None = None) -> None:
    """Raises BrokenFlowFiles with one `<file>: <field>: <problem>` line per problem of the folder.

    It covers what loading refuses, what keeps a loaded flow from running (a script that does
    not compile, a Jolt spec that does not build: their DAGs still load, with their history), and
    a DAG that cannot be built.
    """
    try:
        inspection = inspect_flows(folder or flows_folder())
    except FlowsFolderError as exc:
        raise BrokenFlowFiles(str(exc)) from None
    errors = list(inspection.errors)
    for flow in inspection.loaded:
        try:
            _guarded_build(flow)
        except FlowConfigError as exc:
            errors.append(exc)
    if errors:
        lines = [str(error) for error in sorted(errors, key=lambda error: str(error.path))]
        files = len({error.path for error in errors})
        raise BrokenFlowFiles(
            f"{files} flow file(s) with problems (each line: file: field: problem):\n" + "\n".join(lines)
        )
