"""The run summary: one row per plan with its relation and what was written to Omnitron."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from order_cancel.pipeline.erp_write import DRY_RUN
from order_cancel.pipeline.evaluation import Relation
from order_cancel.pipeline.plan import ErpRecord, PlanProgress, PlanRef, Step, StepRecord

COLUMNS = ("plan", "order", "relation", "omnitron", "error")


@dataclass(frozen=True)
class RunSummary:
    rows: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["error"]]

    def failed_refs(self) -> str:
        return ", ".join(f"plan {row['plan']} ({row['error']})" for row in self.failed)

    def lines(self) -> list[str]:
        table = [COLUMNS] + [
            tuple(str(row[column] if row[column] is not None else "-") for column in COLUMNS) for row in self.rows
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
        return [
            " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in table
        ]


_STEP_ORDER = {step: index for index, step in enumerate(Step)}
STEP_NAMES = {
    Step.SCRIPT: "script",
    Step.MAPPING: "mapping",
    Step.WRITE_ERP: "ERP write",
    Step.WRITE_OMNITRON: "Omnitron write",
    Step.POST_SCRIPT: "post script",
}


def outcome(progress: PlanProgress) -> str:
    """What became of a plan so far, in a few words: "rejected", "failed at Omnitron write",
    "left for a later run (ERP 503)". The task labels show it."""
    failure, delivery, written = progress.failure, progress.delivery, progress.written
    if failure is not None:
        return f"failed at {STEP_NAMES[failure.step]}"
    if delivery is None:  # only the transform ran (a flow without script and mapping has no record of it)
        return "transformed"
    if delivery.relation == DRY_RUN:
        return "dry run"
    if delivery.relation == Relation.DO_NOTHING:
        return f"left for a later run ({_unanswered(delivery)})"
    if written is None:
        return "accepted by the ERP" if delivery.relation == Relation.CONTINUE else "refused by the ERP"
    return written.phrase


def _unanswered(delivery: ErpRecord) -> str:
    if delivery.status_code in (401, 403):
        return f"the ERP refused authentication {delivery.sends} times"
    return f"ERP {delivery.status_code if delivery.status_code is not None else delivery.no_answer}"


def progress_by_plan(refs: list[PlanRef], records: Sequence[StepRecord]) -> dict[Any, PlanProgress]:
    """Each plan's progress from records collected from anywhere (several tasks, batches), in step order."""
    grouped: dict[Any, list[Any]] = {ref.plan_pk: [] for ref in refs}
    for record in sorted(records, key=lambda record: _STEP_ORDER[record.step]):
        grouped.setdefault(record.ref.plan_pk, []).append(record)
    return {ref.plan_pk: PlanProgress(ref=ref, records=grouped[ref.plan_pk]) for ref in refs}


def summary_row(progress: PlanProgress) -> dict[str, Any]:
    """One plan: its relation, what became of it in Omnitron, and why it failed (naming the stage)."""
    failure, delivery, written = progress.failure, progress.delivery, progress.written
    if failure is not None:
        error: str | None = f"{failure.step.stage.value}: {failure.error}"
    elif written is None:
        error = "did not finish (see the plan's task instances)"
    else:
        error = None
    return {
        "plan": progress.ref.plan_pk,
        "order": progress.ref.order_number,
        "relation": delivery.relation if delivery else None,
        "omnitron": written.outcome if written else None,
        "error": error,
    }


def summarize(plans: Iterable[PlanProgress]) -> RunSummary:
    """The run's plans, in the order given, with what their records say."""
    return RunSummary([summary_row(progress) for progress in plans])
