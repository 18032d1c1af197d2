"""Where a run's data lives in Airflow and how it is encoded: the one module that knows.

Task ids of a flow's DAG, and its XComs (Airflow clears a task instance's XComs on each try):

* `fetch_plans`: its return value is what the plan tasks are mapped over, the plans' refs (one per
  plan, or a list per batch), because Airflow loads that whole list to resolve a mapped argument;
  the whole work items wait under keys of their own, 50 a key (`plan_items.<i>`; a batch's under
  `plan_batch.<i>`), so that a plan or batch task reads its own part only; `next_watermark` is
  where a completed flow's watermark moves.
* a plan task (per step, or one per plan) returns `{"ref": <the plan's ref>, "records": <the step
  records it added>}`; the ref stays structured for the task's label; a failed one pushes its
  records under `plan_error`.
* `plan_batch` returns its plans' progress without their payloads (`PAYLOADS`); its failed plans'
  refs are under `failed_plans`, and each failed plan's work item and whole progress under
  `handed_over.<plan pk>`, for its own `plan` task.
* `summary` pushes the run's rows under `plans`.

The task state store (kept across a task instance's retries and clears): a one-task-per-plan
instance's `progress`; a batch's plans as kept, one group per key (`batch.kept.<i>`, written once
each), and `batch`, set once the batch finished; `state_codec` encodes the values.

Airflow Variables, per flow: `order_cancel.<flow_id>.completed_watermark` (a completed flow's
watermark) and `order_cancel.<flow_id>.run_seconds` (the latest run times, for the alarms).

Values that hold plans travel as JSON text: pushing or pulling a structured value, Airflow walks
every nested object (serialization, secrets masking), which for hundreds of plans costs more than
their HTTP calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from airflow.sdk.bases.xcom import BaseXCom
from pydantic import TypeAdapter

from order_cancel.airflow.state_codec import load_state, save_state
from order_cancel.pipeline.batch import BatchCheckpoint
from order_cancel.pipeline.plan import RECORDS, PlanProgress, PlanRef, Stage, StepRecord, WorkItem
from order_cancel.pipeline.summary import RunSummary, progress_by_plan

LOGIN_TASK = "login"
FETCH_TASK = "fetch_plans"
PLAN_GROUP = "plan"
PLAN_TASK = "plan"
BATCH_TASK = "plan_batch"
FAILED_PLANS_TASK = "failed_plans"
SUMMARY_TASK = "summary"
WATERMARK_TASK = "advance_watermark"

# A batch's plans as JSON in one pass of pydantic's serializer.
PLANS = TypeAdapter(list[PlanProgress])
# What a batch's return value leaves out of each record: the script's and the mapping's output (the
# ERP record's request holds the body sent) and the Omnitron call (the plan ledger keeps it). The
# summary and the watermark read only the outcomes, and those payloads were most of a batch's bytes,
# written to the metadata database and read back by the summary.
PAYLOADS = {"__all__": {"records": {"__all__": {"output", "call"}}}}
RETURN_KEY = BaseXCom.XCOM_RETURN_KEY
NEXT_WATERMARK_KEY = "next_watermark"
PLAN_ERROR_KEY = "plan_error"
SUMMARY_KEY = "plans"
FAILED_REFS_KEY = "failed_plans"
_ITEMS_KEY = "plan_items.{index}"
# Plans per `plan_items.<i>` key: one XCom per plan cost fetch_plans a write each; one for all would
# make every plan task read them all.
ITEMS_PER_KEY = 50
_BATCH_KEY = "plan_batch.{index}"
_HANDED_OVER_KEY = "handed_over.{plan_pk}"

# Task state store keys (scoped to a task instance, kept across its retries and clears).
PROGRESS_STATE = "progress"
BATCH_STATE = "batch"
_KEPT_STATE = "batch.kept.{index}"


def watermark_variable(flow_id: str) -> str:
    return f"order_cancel.{flow_id}.completed_watermark"


def run_seconds_variable(flow_id: str) -> str:
    return f"order_cancel.{flow_id}.run_seconds"


def stage_task(stage: Stage) -> str:
    """The per-step layout's task id of a stage, in the plan task group."""
    return f"{PLAN_GROUP}.{stage.value}"


def encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# -- fetch_plans: the refs the plan tasks are mapped over, the work items under their own keys ------


def push_work(ti: Any, items: list[WorkItem], batches: list[list[WorkItem]] | None) -> list[Any]:
    """Stores the work items for their task instances; answers the list to map the plan tasks over."""
    if batches is None:
        for index, start in enumerate(range(0, len(items), ITEMS_PER_KEY)):
            ti.xcom_push(key=_ITEMS_KEY.format(index=index), value=_encode_items(items[start : start + ITEMS_PER_KEY]))
        return [_mapped_ref(item) for item in items]
    for index, batch in enumerate(batches):
        ti.xcom_push(key=_BATCH_KEY.format(index=index), value=_encode_items(batch))
    return [[_mapped_ref(item) for item in batch] for batch in batches]


def _encode_items(items: list[WorkItem]) -> str:
    return encode([item.model_dump(mode="json") for item in items])


def _mapped_ref(item: WorkItem) -> dict[str, Any]:
    return {"ref": item.ref.model_dump(mode="json")}


def pull_item(ti: Any) -> WorkItem:
    """This per-plan task instance's work item."""
    chunk, position = divmod(ti.map_index, ITEMS_PER_KEY)
    stored = decode(ti.xcom_pull(task_ids=FETCH_TASK, key=_ITEMS_KEY.format(index=chunk)))
    return WorkItem.model_validate(stored[position])


def pull_batch(ti: Any) -> list[WorkItem]:
    """This batch task instance's work items."""
    stored = decode(ti.xcom_pull(task_ids=FETCH_TASK, key=_BATCH_KEY.format(index=ti.map_index)))
    return [WorkItem.model_validate(item) for item in stored]


# -- plan tasks: step records ---------------------------------------------------------------------


def step_result(ref: PlanRef, records: Sequence[StepRecord]) -> dict[str, Any]:
    """A per-step plan task's return value."""
    return {"ref": ref.model_dump(mode="json"), "records": _encode_records(records)}


def records_of(step_input: dict[str, Any]) -> PlanProgress:
    """The records an upstream plan task returned, as the plan's progress so far."""
    ref = PlanRef.model_validate(step_input["ref"])
    return PlanProgress(
        ref=ref, records=RECORDS.validate_json(step_input["records"]) if "records" in step_input else []
    )


def push_failure(ti: Any, records: Sequence[StepRecord]) -> None:
    """What a failed per-step task did, for the summary (a failed task pushes no return value)."""
    ti.xcom_push(key=PLAN_ERROR_KEY, value=_encode_records(records))


def pull_stage_records(ti: Any, task_ids: list[str]) -> list[StepRecord]:
    """Every step record of the per-step plan tasks: their return values and their failures."""
    # A list of task ids always answers a list (one id with one mapped value answers the value).
    returned = ti.xcom_pull(task_ids=task_ids) or []
    failed = ti.xcom_pull(task_ids=task_ids, key=PLAN_ERROR_KEY) or []
    records: list[StepRecord] = [record for value in returned if value for record in records_of(value).records]
    return records + [record for text in failed if text for record in RECORDS.validate_json(text)]


def push_batch(ti: Any, plans: list[PlanProgress]) -> None:
    """A batch's plans without their payloads, pushed also when the batch fails (then Airflow would
    push nothing)."""
    ti.xcom_push(key=RETURN_KEY, value=PLANS.dump_json(plans, exclude=PAYLOADS).decode())


def run_progress(ti: Any, plan_task_ids: list[str], *, batches: bool) -> Iterator[PlanProgress] | None:
    """Each plan fetch_plans handed out, in order, with its progress from every task that worked on
    it; None when fetch_plans did not succeed."""
    mapped = ti.xcom_pull(task_ids=FETCH_TASK)
    if mapped is None:
        return None
    records = pull_stage_records(ti, plan_task_ids)
    if not batches:
        return iter(progress_by_plan([PlanRef.model_validate(entry["ref"]) for entry in mapped], records).values())
    return _batches_progress(ti, mapped, records)


def _batches_progress(ti: Any, mapped: list[list[Any]], records: list[StepRecord]) -> Iterator[PlanProgress]:
    """One batch's records at a time in memory: a run of thousands of plans would otherwise hold all
    their records at once. A batch's failed plans add the records of their own tasks."""
    handed_over: dict[Any, list[StepRecord]] = {}
    for record in records:
        handed_over.setdefault(record.ref.plan_pk, []).append(record)
    for index, group in enumerate(mapped):
        text = ti.xcom_pull(task_ids=BATCH_TASK, map_indexes=index)
        done = {plan["ref"]["plan_pk"]: plan["records"] for plan in decode(text)} if text else {}
        for entry in group:
            ref = PlanRef.model_validate(entry["ref"])
            own = RECORDS.validate_python(done.get(ref.plan_pk, [])) + handed_over.get(ref.plan_pk, [])
            yield progress_by_plan([ref], own)[ref.plan_pk]


def _encode_records(records: Sequence[StepRecord]) -> str:
    return encode([record.model_dump(mode="json") for record in records])


# -- the one-task-per-plan layout and the batches' failed plans ---------------------------------------


def push_hand_over(ti: Any, handed: list[tuple[WorkItem, PlanProgress]]) -> None:
    """A batch's failed plans, each for the one task instance that continues it."""
    refs = []
    for item, progress in handed:
        key = _HANDED_OVER_KEY.format(plan_pk=item.ref.plan_pk)
        ti.xcom_push(
            key=key, value=encode({"item": item.model_dump(mode="json"), "progress": progress.model_dump(mode="json")})
        )
        refs.append({"ref": item.ref.model_dump(mode="json"), "batch": ti.map_index})
    ti.xcom_push(key=FAILED_REFS_KEY, value=refs)


def pull_failed_refs(ti: Any) -> list[dict[str, Any]]:
    """Every batch's failed plans: what the plan task is mapped over in the batch layout."""
    per_batch = ti.xcom_pull(task_ids=[BATCH_TASK], key=FAILED_REFS_KEY) or []
    return [ref for refs in per_batch if refs for ref in refs]


def pull_hand_over(ti: Any, handed: dict[str, Any]) -> tuple[WorkItem, PlanProgress]:
    """The work item and progress a batch handed over to this task instance."""
    key = _HANDED_OVER_KEY.format(plan_pk=handed["ref"]["plan_pk"])
    stored = decode(ti.xcom_pull(task_ids=BATCH_TASK, key=key, map_indexes=handed["batch"]))
    return WorkItem.model_validate(stored["item"]), PlanProgress.model_validate(stored["progress"])


class BatchJournal:
    """A batch's checkpoint in the task state store: its plans' progress as kept, group by group,
    each group under a key of its own that is never written again (a worker lost while writing a
    group loses only that group), and the mark that it finished. A group holds only the records each
    plan added since it was last kept; reading appends them in order."""

    def __init__(self, state: Any):
        self._state = state
        self._groups = 0
        self._kept: dict[str, int] = {}  # records kept so far, by plan
        self.writes, self.write_seconds = 0, 0.0

    def read(self) -> BatchCheckpoint:
        """Everything kept by the batch's earlier tries, each plan's records in order."""
        checkpoint = load_state(self._state, BATCH_STATE, BatchCheckpoint) or BatchCheckpoint()
        plans = dict(checkpoint.plans)
        while (group := load_state(self._state, _KEPT_STATE.format(index=self._groups), BatchCheckpoint)) is not None:
            for key, added in group.plans.items():
                plans[key] = plans[key].add(*added.records) if key in plans else added
            self._groups += 1
        self._kept = {key: len(progress.records) for key, progress in plans.items()}
        return checkpoint.model_copy(update={"plans": plans})

    def keep(self, plans: dict[str, PlanProgress]) -> None:
        """Writes the records the plans added since they were last kept; counts the writes and their
        time (the batch's threads wait for them: the figure says what keeping progress cost)."""
        added = {
            key: progress.model_copy(update={"records": progress.records[self._kept.get(key, 0) :]})
            for key, progress in plans.items()
        }
        started = time.monotonic()
        save_state(self._state, _KEPT_STATE.format(index=self._groups), BatchCheckpoint(plans=added))
        self.writes, self.write_seconds = self.writes + 1, self.write_seconds + time.monotonic() - started
        self._groups += 1
        self._kept.update({key: len(progress.records) for key, progress in plans.items()})

    def finish(self) -> None:
        save_state(self._state, BATCH_STATE, BatchCheckpoint(finished=True))


def push_summary(ti: Any, summary: RunSummary) -> None:
    ti.xcom_push(key=SUMMARY_KEY, value=summary.rows)
