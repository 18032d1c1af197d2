"""The run summary: one row per plan with its relation and what was written to Omnitron."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from order_cancel.pipeline.plan import PlanProgress, PlanRef, Step, StepRecord

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


def summarize(refs: list[PlanRef], records: Sequence[StepRecord]) -> RunSummary:
    """The run's plans, in the order they were fetched, with what their records say."""
    plans = progress_by_plan(refs, records)
    return RunSummary([summary_row(plans[ref.plan_pk]) for ref in refs])
