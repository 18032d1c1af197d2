"""One attempt at one plan: what a task try did with it, as a ledger row.

An attempt is one try of one task on one plan (a per-step task, a plan task, or a plan inside a
batch). Its ERP and Omnitron columns say what this attempt itself did; `relation` and `outcome` say
where the plan stood when it ended, so that a row read alone makes sense. Nothing in it is secret:
the step records hold no credential, and request headers carry none.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from order_cancel.pipeline.evaluation import Relation
from order_cancel.pipeline.plan import ErpRecord, OmnitronRecord, PlanProgress, Step, StepRecord
from order_cancel.pipeline.summary import outcome

# The ERP request and answer and the Omnitron call are kept as JSON text of at most this many
# characters (the ERP client already bounds an answer it reads).
MAX_JSON_CHARS = 64 * 1024


class TaskTry(BaseModel):
    """Where an attempt ran: the task instance try, in Airflow's terms, without importing Airflow."""

    model_config = ConfigDict(frozen=True)

    flow_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    dag_version: str | None = None


class Attempt(TaskTry):
    """A ledger row: where the attempt ran, and what it did."""

    plan_pk: int | None
    order_number: str | None
    transaction_pk: int | None
    idempotency_key: str | None
    steps: str
    """The steps this attempt ran, in order ("script,mapping,write_erp")."""
    step_reached: str | None
    relation: str | None
    accepted: bool
    """The ERP accepted the plan in this attempt (relation continue; a dry run never is)."""
    erp_status_code: int | None
    erp_sends: int
    erp_request: str | None
    erp_answer: str | None
    erp_no_answer: str | None
    omnitron_outcome: str | None
    omnitron_call: str | None
    outcome: str
    """Where the plan stood after the attempt ("approved", "failed at Omnitron write"); for a post
    script's own task, what the post script did."""
    error: str | None
    failed_step: str | None
    started_at: dt.datetime
    ended_at: dt.datetime

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def left_for_later(self) -> bool:
        return self.error is None and self.relation == Relation.DO_NOTHING


def attempt_of(task_try: TaskTry, progress: PlanProgress, fresh: Sequence[StepRecord]) -> Attempt:
    """The row for what `fresh` (this try's records) did to the plan; `progress` is all that is known."""
    erp = _last(fresh, Step.WRITE_ERP)
    omnitron = _last(fresh, Step.WRITE_OMNITRON)
    delivery = progress.delivery
    failure = fresh[-1] if fresh and fresh[-1].failed else None
    started = min(_moment(record.started_at) for record in fresh)
    ended = max(_moment(record.started_at) + dt.timedelta(seconds=record.seconds) for record in fresh)
    return Attempt(
        **task_try.model_dump(),
        plan_pk=progress.ref.plan_pk,
        order_number=progress.ref.order_number,
        transaction_pk=progress.ref.transaction_pk,
        idempotency_key=erp.idempotency_key if isinstance(erp, ErpRecord) else None,
        steps=",".join(record.step.value for record in fresh),
        step_reached=fresh[-1].step.value,
        relation=delivery.relation if delivery else None,
        accepted=isinstance(erp, ErpRecord) and not erp.failed and erp.relation == Relation.CONTINUE,
        erp_status_code=erp.status_code if isinstance(erp, ErpRecord) else None,
        erp_sends=erp.sends if isinstance(erp, ErpRecord) else 0,
        erp_request=_json(erp.request) if isinstance(erp, ErpRecord) else None,
        erp_answer=_json(erp.response_data) if isinstance(erp, ErpRecord) else None,
        erp_no_answer=erp.no_answer if isinstance(erp, ErpRecord) else None,
        omnitron_outcome=omnitron.outcome or None if isinstance(omnitron, OmnitronRecord) else None,
        omnitron_call=_json(omnitron.call) if isinstance(omnitron, OmnitronRecord) else None,
        outcome=_outcome(progress, fresh),
        error=failure.error if failure else None,
        failed_step=failure.step.value if failure else None,
        started_at=started,
        ended_at=ended,
    )


def attempts_of(task_try: TaskTry, plans: Sequence[tuple[PlanProgress, Sequence[StepRecord]]]) -> list[Attempt]:
    """The rows of a try that worked on several plans (a batch); a plan it did nothing to has none."""
    return [attempt_of(task_try, progress, fresh) for progress, fresh in plans if fresh]


def _outcome(progress: PlanProgress, fresh: Sequence[StepRecord]) -> str:
    """Where the plan stands; for a post script's own task (which never sees the Omnitron write),
    what the post script did."""
    if all(record.step is Step.POST_SCRIPT for record in fresh) and not fresh[-1].failed:
        return fresh[-1].said() or outcome(progress)
    return outcome(progress)


def _last(records: Sequence[StepRecord], step: Step) -> StepRecord | None:
    return next((record for record in reversed(records) if record.step is step), None)


def _moment(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= MAX_JSON_CHARS:
        return text
    return json.dumps({"truncated": True, "start": text[:MAX_JSON_CHARS]}, ensure_ascii=False)
