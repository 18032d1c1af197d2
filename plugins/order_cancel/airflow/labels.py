"""The labels of the plan tasks' mapped instances in the grid: who the plan is, and once its task ran,
what became of it (`plan 4 · order 429453004 · rejected`).

Airflow renders a task's `map_index_template` before `execute` (so that a running plan is found by
its label) and again after it, on success and on failure, with the task's context: the operator puts
the outcome in the context under `OUTCOME`, and the template shows it once it is there.
"""

from __future__ import annotations

from typing import Any

from order_cancel.pipeline.plan import PlanProgress, plan_label
from order_cancel.pipeline.summary import outcome

OUTCOME = "plan_outcome"
BATCH_OUTCOME = "batch_outcome"
PLAN_LABEL = plan_label("{{ task.step_input.ref.plan_pk }}", "{{ task.step_input.ref.order_number }}") + (
    "{% if " + OUTCOME + " is defined %} · {{ " + OUTCOME + " }}{% endif %}"
)
BATCH_LABEL = (
    "plans {{ task.plan_refs[0].ref.plan_pk }}–{{ task.plan_refs[-1].ref.plan_pk }} ({{ task.plan_refs | length }})"
    "{% if " + BATCH_OUTCOME + " is defined %} · {{ " + BATCH_OUTCOME + " }}{% endif %}"
)


def show_outcome(context: Any, progress: PlanProgress) -> None:
    context[OUTCOME] = outcome(progress)


def show_batch_outcome(context: Any, plans: list[PlanProgress]) -> None:
    failed = sum(1 for progress in plans if progress.failure)
    if failed:
        context[BATCH_OUTCOME] = f"{failed} failed, each continued in its own plan task"
