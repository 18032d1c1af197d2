"""The per-step layout: a mapped task instance per plan and stage (transform, write_erp,
write_omnitron, post_script), labelled with the plan and its order.

Each task runs its stage of the one pipeline on the records its upstream task returned. A failure
fails this plan only: its record is pushed for the run summary, and a failure that a retry cannot
mend (a script, a spec, bad data) skips the retries. Clearing write_omnitron never calls the ERP
again: the ERP's answer is in write_erp's XCom.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from order_cancel.airflow import run_data
from order_cancel.airflow.operators.base import FlowOperator
from order_cancel.pipeline.plan import Stage

PLAN_LABEL = "plan {{ task.step_input.ref.plan_pk }} · order {{ task.step_input.ref.order_number }}"
# The stages that read the plan itself, which fetch_plans stored for this map index.
_READ_THE_PLAN = (Stage.TRANSFORM, Stage.WRITE_ERP)


class PlanStageOperator(FlowOperator):
    """One stage of one plan; `step_input` is the upstream task's return value (or the plan's ref)."""

    template_fields: Sequence[str] = ("step_input",)
    stage: Stage

    def __init__(self, *, step_input: Any, **kwargs: Any):
        kwargs.setdefault("map_index_template", PLAN_LABEL)
        super().__init__(**kwargs)
        self.step_input = step_input

    def run(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        progress = run_data.records_of(self.step_input)
        item = run_data.pull_item(ti) if self.stage in _READ_THE_PLAN else None
        done = len(progress.records)
        progress = self.pipeline(context).run_stage(self.stage, progress, self.plan_clients(context), item)
        fresh = progress.records[done:]
        self.log_plan(progress, fresh)
        failure = progress.failure
        if failure is not None:
            run_data.push_failure(ti, fresh)
            message = f"{progress.ref.label} failed at {self.stage.value}: {failure.error}"
            raise AirflowException(message) if failure.retryable else AirflowFailException(message)
        return run_data.step_result(progress.ref, fresh)


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
