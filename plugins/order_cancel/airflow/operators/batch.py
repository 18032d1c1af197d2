"""High-volume mode: one mapped task instance per batch of plans (see `pipeline.batch`), and the
failed plans of the batches, each continued in a task instance of its own.

A batch does not fail for its plans: a plan that ended in an error is handed over to the `plan`
task (mapped over `failed_plans`), which runs its remaining steps from where the batch left it,
fails alone, and is retried or cleared alone. The batch keeps each plan's progress in the task
state store as it goes (`run_data.BatchJournal`): a batch whose worker was lost resumes every plan
where it was kept, and a batch cleared after it finished runs nothing again (its failed plans
belong to their own tasks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from order_cancel.airflow import run_data
from order_cancel.airflow.labels import show_batch_outcome
from order_cancel.airflow.ledger import record_attempts
from order_cancel.airflow.operators.base import FlowOperator, long_lived_objects_frozen
from order_cancel.flows.models import MAX_PLANS_PER_RUN_LIMIT
from order_cancel.pipeline.batch import BatchCheckpoint, BatchPlan, BatchRunner
from order_cancel.pipeline.plan import PlanProgress


class ProcessBatchOperator(FlowOperator):
    """Every stage of a batch of plans, the plans processed concurrently; each keeps its own records,
    relation, error and log lines (prefixed with the plan and its order)."""

    template_fields: Sequence[str] = ("plan_refs",)

    def __init__(self, *, plan_refs: Any, **kwargs: Any):
        super().__init__(do_xcom_push=False, **kwargs)
        self.plan_refs = plan_refs

    @long_lived_objects_frozen()
    def run(self, context: Any) -> None:
        ti, state = context["ti"], context["task_state_store"]
        assert self.flow.batch is not None
        # A first try has nothing stored; a lost worker's retry, or a clear, may.
        journal = run_data.BatchJournal(state)
        resumed = ti.try_number > 1
        checkpoint = journal.read() if resumed else BatchCheckpoint()
        items = run_data.pull_batch(ti)
        if checkpoint.finished:
            self.log.info("This batch finished in an earlier try: nothing runs again")
            plans = [
                BatchPlan(checkpoint.plans.get(str(item.ref.plan_pk)) or PlanProgress(ref=item.ref), [])
                for item in items
            ]
        else:
            runner = BatchRunner(self.pipeline(context), self.plan_clients(context), self.flow.batch.concurrency)
            plans = runner.run(items, checkpoint, journal.keep, resumed=resumed)
            journal.finish()
            self.log.info(
                "The plans' progress was kept in %d writes to the task state store, %.2f s in all",
                journal.writes,
                journal.write_seconds,
            )
        for plan in plans:
            self.log_plan(plan.progress, plan.fresh, prefix=f"{plan.progress.ref.label}: ")
        record_attempts(context, [(plan.progress, plan.fresh) for plan in plans])
        run_data.push_batch(ti, [plan.progress for plan in plans])
        failed = [(item, plan.progress) for item, plan in zip(items, plans, strict=True) if plan.progress.failure]
        run_data.push_hand_over(ti, failed)
        show_batch_outcome(context, [plan.progress for plan in plans])
        if failed:
            self.log.warning("%d of %d plans failed; each continues in a plan task of its own", len(failed), len(plans))


class CollectFailedPlansOperator(FlowOperator):
    """The batches' failed plans, for the `plan` task to be mapped over (none: no plan task runs)."""

    def __init__(self, **kwargs: Any):
        super().__init__(trigger_rule="all_done", **kwargs)

    def run(self, context: Any) -> list[dict[str, Any]]:
        failed = run_data.pull_failed_refs(context["ti"])
        if len(failed) > MAX_PLANS_PER_RUN_LIMIT:
            self.log.error(
                "%d plans failed; the first %d continue in their own tasks, the others stay failed in their "
                "batches (Airflow's max_map_length)",
                len(failed),
                MAX_PLANS_PER_RUN_LIMIT,
            )
        self.log.info("%d failed plans continue in tasks of their own", min(len(failed), MAX_PLANS_PER_RUN_LIMIT))
        return failed[:MAX_PLANS_PER_RUN_LIMIT]
