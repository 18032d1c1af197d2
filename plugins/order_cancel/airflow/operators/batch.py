"""High-volume mode: one mapped task instance per batch of plans (see `pipeline.batch`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Variable
from airflow.sdk.exceptions import AirflowException

from order_cancel.airflow import run_data
from order_cancel.airflow.operators.base import FlowOperator, long_lived_objects_frozen
from order_cancel.pipeline.batch import BatchCheckpoint, BatchRunner

BATCH_LABEL = (
    "plans {{ task.plan_refs[0].ref.plan_pk }}–{{ task.plan_refs[-1].ref.plan_pk }} ({{ task.plan_refs | length }})"
)


class ProcessBatchOperator(FlowOperator):
    """Every stage of a batch of plans, the plans processed concurrently.

    Each plan keeps its own records, relation, error and log lines (prefixed with the plan and its
    order). A batch with a failed plan fails after the others are done; its retry (or a clear) runs
    only the failed plans again, from the batch's checkpoint, kept in a Variable because Airflow
    clears a task's XComs on every try.
    """

    template_fields: Sequence[str] = ("plan_refs",)

    def __init__(self, *, plan_refs: Any, **kwargs: Any):
        super().__init__(do_xcom_push=False, **kwargs)
        self.plan_refs = plan_refs

    @long_lived_objects_frozen()
    def run(self, context: Any) -> None:
        ti = context["ti"]
        assert self.flow.batch is not None
        runner = BatchRunner(self.pipeline(context), self.plan_clients(context), self.flow.batch.concurrency)
        key = run_data.batch_checkpoint_variable(self.flow.flow_id, context["run_id"], ti.map_index)
        # A first try has no checkpoint to read (its key names the run and the batch); a retry or a
        # cleared batch (Airflow counts a clear as a new try) has one if an earlier try left one.
        stored = Variable.get(key, default=None) if ti.try_number > 1 else None
        checkpoint = BatchCheckpoint.model_validate_json(stored) if stored else BatchCheckpoint()
        plans = runner.run(
            run_data.pull_batch(ti), checkpoint, save=lambda done: Variable.set(key, done.model_dump_json())
        )
        for plan in plans:
            self.log_plan(plan.progress, plan.fresh, prefix=f"{plan.progress.ref.label}: ")
        run_data.push_batch(ti, [plan.progress for plan in plans])
        failed = [plan for plan in plans if plan.progress.failure]
        if failed:
            raise AirflowException(f"{len(failed)} of {len(plans)} plans of this batch failed; a retry runs only them")
        Variable.delete(key)
