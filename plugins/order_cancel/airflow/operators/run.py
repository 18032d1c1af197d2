"""The tasks around the plans: Login Step, Get Data From Omnitron, the completed watermark, and the
run summary (which hands the run's after-work to `after_run`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from airflow.sdk import Variable
from airflow.sdk.exceptions import AirflowFailException

from order_cancel.airflow import run_data
from order_cancel.airflow.after_run import after_run
from order_cancel.airflow.operators.base import FlowOperator, is_dry_run, long_lived_objects_frozen
from order_cancel.flows.models import CancelStatus, Layout
from order_cancel.pipeline.batch import batches
from order_cancel.pipeline.fetch import fetch_completed, fetch_work_items
from order_cancel.pipeline.plan import WorkItem
from order_cancel.pipeline.report import RunReport
from order_cancel.pipeline.summary import summarize
from order_cancel.pipeline.watermark import Watermark, Window, iso, run_window


class LoginOperator(FlowOperator):
    """Login Step: checks the Omnitron (and ERP) credentials before any plan is touched.

    The tokens stay in the worker process; nothing of them reaches XCom or the log.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(do_xcom_push=False, **kwargs)

    def run(self, context: Any) -> None:
        self.omnitron_hook(context).get_conn().login()
        self.log.info("Logged in to Omnitron with connection %r", self.flow.omnitron.conn_id)
        if self.flow.erp.login is not None and not is_dry_run(self.flow, context):
            self.erp_hook(context).get_conn().login()
            self.log.info("ERP login (%s) with connection %r is ready", self.flow.erp.login.type, self.flow.erp.conn_id)


class FetchPlansOperator(FlowOperator):
    """Get Data From Omnitron Step: the plans of this run, for the plan (or batch) tasks, which are
    mapped over its return value (see `run_data.push_work`)."""

    @long_lived_objects_frozen()
    def run(self, context: Any) -> list[Any]:
        omnitron = self.omnitron_hook(context).get_conn()
        window = self._window(context)
        if window is not None:
            items = fetch_work_items(omnitron, self.flow, window=window)
            self.log.info("Window run: plans modified from %s until %s; the watermark stays", window.start, window.end)
        elif self.flow.get_data.cancel_status is CancelStatus.COMPLETED:
            items = self._from_watermark(context, omnitron)
        else:
            items = fetch_work_items(omnitron, self.flow)
        self.log.info("Fetched %d cancellation plans: %s", len(items), [item.ref.plan_pk for item in items])
        groups = batches(items, self.flow.batch.size) if self.flow.batch else None
        return run_data.push_work(context["ti"], items, groups)

    def _window(self, context: Any) -> Window | None:
        if self.flow.get_data.cancel_status is not CancelStatus.COMPLETED:
            return None
        dag_run = context["dag_run"]
        interval = (context.get("data_interval_start"), context.get("data_interval_end"))
        return run_window(str(getattr(dag_run.run_type, "value", dag_run.run_type)), dag_run.conf or {}, interval)

    def _from_watermark(self, context: Any, omnitron: Any) -> list[WorkItem]:
        fetched = fetch_completed(omnitron, self.flow, self._watermark(context), dt.datetime.now(dt.UTC))
        for plan_pk in fetched.given_up:
            self.log.warning(
                "Plan %s was left for later longer than get_data.retry_pending_for (%s): it is not fetched again "
                "(reconcile reports it)",
                plan_pk,
                self.flow.get_data.retry_pending_for,
            )
        if fetched.next_watermark.pending:
            self.log.info(
                "Plans left for later by earlier runs, fetched again: %s", sorted(fetched.next_watermark.pending)
            )
        if not is_dry_run(self.flow, context):
            context["ti"].xcom_push(key=run_data.NEXT_WATERMARK_KEY, value=fetched.next_watermark.dumps())
        return fetched.items

    def _watermark(self, context: Any) -> Watermark:
        key = run_data.watermark_variable(self.flow.flow_id)
        stored = Variable.get(key, default=None)
        if stored is not None:
            self.log.info("Watermark %s: %s", key, stored)
            return Watermark.loads(stored)
        since = (
            self.flow.get_data.completed_since
            or context.get("data_interval_start")
            or context.get("logical_date")
            or dt.datetime.now(dt.UTC)
        )
        self.log.info("No watermark yet: starting from plans modified since %s", since)
        return Watermark(iso(since))


class AdvanceWatermarkOperator(FlowOperator):
    """Moves a completed flow's watermark over the plans this run fetched, once they were processed,
    and keeps the plans the ERP did not decide on (do_nothing, or stopped by a failure a retry may
    mend) pending for the following runs.

    It runs whatever the plans did. A plan failed by its script or spec keeps its failed task
    instance (fix, then clear it), and is not fetched again. A window run or a dry run leaves it alone.
    """

    def __init__(self, *, plan_task_ids: Sequence[str], **kwargs: Any):
        super().__init__(trigger_rule="all_done", **kwargs)
        self.plan_task_ids = list(plan_task_ids)

    def run(self, context: Any) -> str | None:
        ti = context["ti"]
        proposed = ti.xcom_pull(task_ids=run_data.FETCH_TASK, key=run_data.NEXT_WATERMARK_KEY)
        if proposed is None:
            self.log.info("Nothing to move: no plans were fetched from the watermark in this run")
            return None
        taken: list[Any] = []
        left: list[Any] = []
        for progress in run_data.run_progress(ti, self.plan_task_ids, batches=self.flow.layout is Layout.BATCH) or []:
            taken.append(progress.ref.plan_pk)
            if progress.undecided:
                left.append(progress.ref.plan_pk)
        key = run_data.watermark_variable(self.flow.flow_id)
        stored = Variable.get(key, default=None)
        moved = Watermark.loads(proposed).after_run(taken, left, dt.datetime.now(dt.UTC))
        advanced = moved.later(Watermark.loads(stored) if stored else None).dumps()
        Variable.set(key, advanced)
        if left:
            self.log.info("Left for later, fetched again by the following runs: %s", left)
        self.log.info("Watermark %s set to %s", key, advanced)
        return advanced


class RunSummaryOperator(FlowOperator):
    """One line per plan (plan, order, relation, Omnitron outcome); fails the run if any plan failed.

    It runs whatever the plans did (trigger rule all_done), and because it is the leaf of the DAG
    its failure keeps a run with a failed plan red in the UI.
    """

    def __init__(self, *, plan_task_ids: Sequence[str], **kwargs: Any):
        super().__init__(trigger_rule="all_done", do_xcom_push=False, **kwargs)
        self.plan_task_ids = list(plan_task_ids)

    @long_lived_objects_frozen()
    def run(self, context: Any) -> None:
        ti = context["ti"]
        plans = run_data.run_progress(ti, self.plan_task_ids, batches=self.flow.layout is Layout.BATCH)
        if plans is None:
            raise AirflowFailException("no plans were fetched: the login or fetch_plans task did not succeed")
        summary = summarize(plans)
        for line in summary.lines():
            self.log.info("%s", line)
        # Published before failing, so a red run still shows what happened to each plan.
        run_data.push_summary(ti, summary)
        started = context["dag_run"].start_date or dt.datetime.now(dt.UTC)
        report = RunReport(summary.rows, (dt.datetime.now(dt.UTC) - started).total_seconds())
        after_run(context, self.flow, report, dry_run=is_dry_run(self.flow, context))
        if summary.failed:
            raise AirflowFailException(
                f"{len(summary.failed)} of {len(summary.rows)} plans failed: {summary.failed_refs()}"
            )
