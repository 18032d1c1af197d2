"""A plan's history: its attempts across runs, where it stands now, and its timeline as text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from order_cancel.ledger.attempts import Attempt
from order_cancel.pipeline.plan import Step, plan_label

_TIME = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class PlanHistory:
    flow_id: str
    plan_pk: int | None
    attempts: list[Attempt]
    """Oldest first."""

    @property
    def latest(self) -> Attempt:
        return self.attempts[-1]

    @property
    def standing(self) -> Attempt:
        """The attempt that says where the plan stands: the latest, but for a post script that ran
        after it (the post script's own task knows the ERP's answer, not the Omnitron write). A search
        (--limit, --since) may have found the post script's attempts alone: then the latest."""
        return next(
            (attempt for attempt in reversed(self.attempts) if attempt.failed or not _only_posted(attempt)),
            self.latest,
        )

    @property
    def order_number(self) -> str | None:
        return self.latest.order_number

    @property
    def label(self) -> str:
        return plan_label(self.plan_pk, self.order_number)

    @property
    def is_open(self) -> bool:
        """Not finished: it failed, or the ERP could not decide (left for a later run)."""
        return self.standing.failed or self.standing.left_for_later

    @property
    def accepted(self) -> list[Attempt]:
        return [attempt for attempt in self.attempts if attempt.accepted]


def _only_posted(attempt: Attempt) -> bool:
    return attempt.steps == Step.POST_SCRIPT.value


def histories(attempts: Iterable[Attempt]) -> list[PlanHistory]:
    """The attempts grouped by flow and plan, in the order the plans were first attempted."""
    grouped: dict[tuple[str, int | None], list[Attempt]] = {}
    for attempt in sorted(attempts, key=lambda attempt: attempt.started_at):
        grouped.setdefault((attempt.flow_id, attempt.plan_pk), []).append(attempt)
    return [PlanHistory(flow_id, plan_pk, found) for (flow_id, plan_pk), found in grouped.items()]


def open_plans(attempts: Iterable[Attempt]) -> list[PlanHistory]:
    return [history for history in histories(attempts) if history.is_open]


def timeline_lines(found: Sequence[PlanHistory]) -> list[str]:
    """Each plan, then one line per attempt: when, which run and task try, what it did."""
    lines: list[str] = []
    for history in found:
        plan = f"{history.flow_id} · {history.label}"
        lines.append(f"{plan} · now: {history.standing.outcome}")
        lines.extend(f"  {attempt_line(attempt)}" for attempt in history.attempts)
        lines.append("")
    return lines


def attempt_line(attempt: Attempt) -> str:
    where = f"{attempt.run_id}  {attempt.task_id}[{attempt.map_index}] try {attempt.try_number}"
    return f"{attempt.started_at.strftime(_TIME)}  {where}  {attempt.steps}: {attempt_said(attempt)}"


def attempt_said(attempt: Attempt) -> str:
    """What the attempt did, in words: its ERP call and answer, its Omnitron write, its error."""
    said = []
    if attempt.erp_sends or attempt.erp_status_code is not None or attempt.erp_no_answer:
        answer = attempt.erp_status_code if attempt.erp_status_code is not None else attempt.erp_no_answer
        said.append(f"ERP {answer} -> {attempt.relation} (sent {attempt.erp_sends}x, key {attempt.idempotency_key})")
    if attempt.omnitron_outcome:
        said.append(f"Omnitron: {attempt.omnitron_outcome}")
    if attempt.error:
        said.append(f"FAILED at {attempt.failed_step}: {attempt.error}")
    return "; ".join(said) or attempt.outcome


def as_json(attempts: Sequence[Attempt]) -> str:
    return json.dumps([attempt.model_dump(mode="json") for attempt in attempts], indent=2, ensure_ascii=False)
