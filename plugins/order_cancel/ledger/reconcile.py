"""Reconcile: what the ledger says happened, against what Omnitron shows now.

Three discrepancies, each one a refund at risk:

* accepted by the ERP, yet the plan still has the status it was fetched with in Omnitron;
* booked more than once: accepted under different idempotency keys;
* done in Omnitron (the flow's next state) with no attempt the ERP accepted;

and, for completed flows, a plan left for later longer than `get_data.retry_pending_for`, which
no run fetches again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from order_cancel.clients.omnitron import OmnitronClient, PlanQuery
from order_cancel.flows.models import CancelStatus, FlowConfig
from order_cancel.ledger.attempts import Attempt
from order_cancel.ledger.history import PlanHistory, histories
from order_cancel.ledger.store import Ledger, Search
from order_cancel.pipeline.plan import plan_label

# Plans whose Omnitron status is asked for in one request (`pk__in`).
PLANS_PER_REQUEST = 100

ACCEPTED_NOT_WRITTEN = "accepted by the ERP, but its Omnitron status never moved"
BOOKED_TWICE = "booked more than once, under different idempotency keys"
DONE_WITHOUT_ACCEPTANCE = "done in Omnitron, but no ERP attempt was accepted"
GIVEN_UP = "left for later past get_data.retry_pending_for: no run fetches it again"


@dataclass(frozen=True)
class Expectations:
    """What the flow does to a plan's status: from `waiting` (the status it fetches) to `done`.
    None for flows that write no status (completed, order_transaction)."""

    waiting: str | None
    done: str | None
    retry_pending_for: dt.timedelta | None = None

    @classmethod
    def of(cls, flow: FlowConfig) -> Expectations:
        settings = flow.get_data
        completed = settings.cancel_status is CancelStatus.COMPLETED
        pending = settings.retry_pending_for if completed and settings.retry_pending_for else None
        if not settings.cancel_status.writes_status:
            return cls(None, None, pending)
        return cls(settings.cancel_status.value, flow.write_omnitron.next_state.value, pending)


@dataclass(frozen=True)
class Discrepancy:
    kind: str
    plan_pk: int | None
    order_number: str | None
    detail: str

    def line(self) -> str:
        return f"{plan_label(self.plan_pk, self.order_number)}: {self.kind} ({self.detail})"


def reconcile(
    attempts: Iterable[Attempt],
    omnitron_status: Mapping[int, str],
    expected: Expectations,
    now: dt.datetime,
) -> list[Discrepancy]:
    """`omnitron_status`: each plan's status in Omnitron now, for the plans of `attempts`."""
    found: list[Discrepancy] = []
    for history in histories(attempts):
        found += _checked(history, omnitron_status.get(history.plan_pk or -1), expected, now)
    return found


def _checked(history: PlanHistory, status: str | None, expected: Expectations, now: dt.datetime) -> list[Discrepancy]:
    def discrepancy(kind: str, detail: str) -> Discrepancy:
        return Discrepancy(kind, history.plan_pk, history.order_number, detail)

    found = []
    keys = sorted({attempt.idempotency_key or "-" for attempt in history.accepted})
    if len(keys) > 1:
        found.append(discrepancy(BOOKED_TWICE, f"keys {', '.join(keys)}"))
    if expected.waiting is not None and history.accepted and status == expected.waiting:
        found.append(
            discrepancy(ACCEPTED_NOT_WRITTEN, f"accepted in run {history.accepted[-1].run_id}, status {status}")
        )
    if expected.done is not None and not history.accepted and status == expected.done:
        found.append(discrepancy(DONE_WITHOUT_ACCEPTANCE, f"status {status}, the plan: {history.standing.outcome}"))
    given_up = _given_up_since(history, expected.retry_pending_for, now)
    if given_up is not None:
        found.append(discrepancy(GIVEN_UP, f"first left for later at {given_up.isoformat()}"))
    return found


def _given_up_since(history: PlanHistory, limit: dt.timedelta | None, now: dt.datetime) -> dt.datetime | None:
    if limit is None or history.accepted or not history.standing.left_for_later:
        return None
    first = next(attempt.started_at for attempt in history.attempts if attempt.left_for_later)
    return first if now - first > limit else None


def reconcile_flow(
    ledger: Ledger, omnitron: OmnitronClient, flow: FlowConfig, since: dt.datetime | None, now: dt.datetime
) -> tuple[int, list[Discrepancy]]:
    """The flow's attempts (since `since`) against each of their plans' status in Omnitron now:
    how many plans were checked, and the discrepancies."""
    attempts = ledger.find(Search(flow_ids=[flow.flow_id], since=since, limit=None))
    pks = sorted({attempt.plan_pk for attempt in attempts if attempt.plan_pk is not None})
    omnitron_status = _statuses(omnitron, pks, flow.get_data.page_size)
    return len(pks), reconcile(attempts, omnitron_status, Expectations.of(flow), now)


def _statuses(omnitron: OmnitronClient, pks: list[int], page_size: int) -> dict[int, str]:
    found: dict[int, str] = {}
    for start in range(0, len(pks), PLANS_PER_REQUEST):
        query = PlanQuery(plan_pks=tuple(pks[start : start + PLANS_PER_REQUEST]))
        found |= _status_of(omnitron.cancellation_plans(query, page_size))
    return found


def _status_of(plans: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    return {int(plan["pk"]): str(plan.get("status")) for plan in plans}
