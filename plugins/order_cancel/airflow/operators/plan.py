"""The plan tasks, mapped over the plans and labelled with the plan, its order and its outcome.

* The per-step layout: a task instance per plan and stage (transform, write_erp, write_omnitron,
  post_script). Each runs its stage of the one pipeline on the records its upstream task returned;
  clearing write_omnitron never calls the ERP again, as the ERP's answer is in write_erp's XCom.
* The one-task-per-plan layout (`plan`): an instance runs all of a plan's stages, keeping its
  progress in the task state store after each stage, so that a retry or a clear resumes at the
  stage that did not succeed: once the ERP decided on a plan, it is never sent again. The batch
  layout uses the same task for each plan a batch could not finish.

A failure fails its plan only: its records are pushed for the run summary, and a failure that a
retry cannot mend (a script, a spec, bad data) skips the retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from order_cancel.airflow import run_data
from order_cancel.airflow.labels import PLAN_LABEL, show_outcome
from order_cancel.airflow.ledger import record_attempts
from order_cancel.airflow.operators.base import FlowOperator
from order_cancel.airflow.state_codec import load_state, save_state
from order_cancel.pipeline.plan import PlanProgress, Stage, StepRecord, WorkItem
from order_cancel.pipeline.summary import STEP_NAMES

# The stages that read the plan itself, which fetch_plans stored for this map index.
_READ_THE_PLAN = (Stage.TRANSFORM, Stage.WRITE_ERP)


class _PlanTaskOperator(FlowOperator):
    """A task of one plan; `step_input` is its upstream's return value (or the plan's ref)."""

    template_fields: Sequence[str] = ("step_input",)

    def __init__(self, *, step_input: Any, **kwargs: Any):
        kwargs.setdefault("map_index_template", PLAN_LABEL)
        super().__init__(**kwargs)
        self.step_input = step_input

    def finish(self, context: Any, progress: PlanProgress, now: Sequence[StepRecord], own: Sequence[StepRecord]) -> Any:
        """Logs what this try did (`now`) and records it in the ledger, labels the plan with its
        outcome, and returns the records this task added (`own`); fails the task (and only its plan)
        on a failure."""
        self.log_plan(progress, now)
        record_attempts(context, [(progress, now)])
        show_outcome(context, progress)
        failure = progress.failure
        if failure is not None:
            run_data.push_failure(context["ti"], own)
            message = f"{progress.ref.label} failed at {STEP_NAMES[failure.step]}: {failure.error}"
            raise AirflowException(message) if failure.retryable else AirflowFailException(message)
        return run_data.step_result(progress.ref, own)


class PlanStageOperator(_PlanTaskOperator):
    """One stage of one plan (the per-step layout)."""

    stage: Stage

    def run(self, context: Any) -> dict[str, Any]:
        progress = run_data.records_of(self.step_input)
        item = run_data.pull_item(context["ti"]) if self.stage in _READ_THE_PLAN else None
        done = len(progress.records)
        resumed = context["ti"].try_number > 1  # a lost try, or a clear, may have written already
        progress = self.pipeline(context).run_stage(
            self.stage, progress, self.plan_clients(context), item, resumed=resumed
        )
        fresh = progress.records[done:]
        return self.finish(context, progress, fresh, fresh)


class TransformPlanOperator(PlanStageOperator):
    """Script Step and Mapping Step: the plan becomes the ERP request body."""

    stage = Stage.TRANSFORM


class WriteErpOperator(PlanStageOperator):
    """Write Data to ERP Step with the response evaluation (re-login and resend on auth_fail)."""

    stage = Stage.WRITE_ERP


class WriteOmnitronOperator(PlanStageOperator):
    """Write Data to Omnitron Step. A task of its own, so that clearing it never re-sends to the ERP."""

    stage = Stage.WRITE_OMNITRON


class PostScriptOperator(PlanStageOperator):
    """Post Script Step: after a successful Omnitron write; its failure undoes nothing."""

    stage = Stage.POST_SCRIPT


STAGE_OPERATORS: dict[Stage, type[PlanStageOperator]] = {
    operator.stage: operator
    for operator in (TransformPlanOperator, WriteErpOperator, WriteOmnitronOperator, PostScriptOperator)
}


class PlanOperator(_PlanTaskOperator):
    """Every stage of one plan, resumable (the one-task-per-plan layout, and a batch's failed plans).

    Its return value (and on failure its `plan_error`) holds the records it added itself, across
    its tries; a plan a batch handed over starts from the batch's records.
    """

    def run(self, context: Any) -> dict[str, Any]:
        ti, state = context["ti"], context["task_state_store"]
        item, handed = self._start(ti)
        # A first try has nothing stored; a retry, or a clear (Airflow counts it as a new try), may.
        stored = load_state(state, run_data.PROGRESS_STATE, PlanProgress) if ti.try_number > 1 else None
        progress = stored or handed
        before = len(progress.records)

        def keep(stage: Stage, progress: PlanProgress) -> None:
            if stage is not Stage.TRANSFORM:  # a transform is cheap to run again, with the same input
                save_state(state, run_data.PROGRESS_STATE, progress)

        pipeline, clients, resumed = self.pipeline(context), self.plan_clients(context), ti.try_number > 1
        progress = pipeline.advance(item, progress, clients, after_stage=keep, resumed=resumed)
        return self.finish(context, progress, progress.records[before:], progress.records[len(handed.records) :])

    def _start(self, ti: Any) -> tuple[WorkItem, PlanProgress]:
        """The plan, and what was done with it before this task: nothing, or what its batch did."""
        if "batch" in self.step_input:
            return run_data.pull_hand_over(ti, self.step_input)
        item = run_data.pull_item(ti)
        return item, PlanProgress(ref=item.ref)
