"""Get Data From Omnitron: which plans a run processes.

A status flow lists the plans with the configured filters. A completed flow lists the plans
modified since its watermark (or inside a backfill window), and first the plans earlier runs left
pending (see `watermark`), by pk. An Order Transaction flow lists return
transactions without an integration mapping, then the plans of each transaction's order. At most
`max_plans_per_run` plans are taken; the rest still match and wait for the next run.

Two assumptions have no public evidence (shared/reference/omnitron-api.md, "Evidence review"), so
nothing here depends on them silently: a completed flow takes the earliest plans since its
watermark whatever order Omnitron lists them in, and an order transaction without the field that
leads to its order fails alone, naming the field.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from order_cancel.clients.omnitron import TRANSACTION_ORDER_FIELD, OmnitronClient, PlanQuery
from order_cancel.flows.models import CancelStatus, CancelType, FlowConfig
from order_cancel.pipeline.plan import WorkItem
from order_cancel.pipeline.watermark import Watermark, Window, modification_order

# Pending plans asked for in one request (`pk__in`), to keep its URL short.
PENDING_PER_REQUEST = 100


def plan_type_filter(flow: FlowConfig) -> str | None:
    cancel_type = flow.get_data.cancel_type
    return None if cancel_type is CancelType.ALL else cancel_type.value


def plan_query(flow: FlowConfig, *, window: Window | None = None, watermark: Watermark | None = None) -> PlanQuery:
    settings = flow.get_data
    return PlanQuery(
        channel_type=settings.channel_type,
        status=settings.cancel_status.value,
        plan_type=plan_type_filter(flow),
        channel_ids=tuple(settings.channel_ids),
        modified_from=window.start if window else watermark.modified_date if watermark else None,
        modified_until=window.end if window else None,
    )


def fetch_work_items(omnitron: OmnitronClient, flow: FlowConfig, *, window: Window | None = None) -> list[WorkItem]:
    return list(islice(work_items(omnitron, flow, window=window), flow.get_data.max_plans_per_run))


def work_items(omnitron: OmnitronClient, flow: FlowConfig, *, window: Window | None = None) -> Iterator[WorkItem]:
    """The flow's plans as a run lists them, page by page: a caller that stops early fetches no further page."""
    settings = flow.get_data
    if settings.cancel_status is CancelStatus.ORDER_TRANSACTION:
        return _order_transaction_items(omnitron, flow)
    plans = omnitron.cancellation_plans(plan_query(flow, window=window), settings.page_size)
    return (WorkItem.of(plan) for plan in plans)


def _order_transaction_items(omnitron: OmnitronClient, flow: FlowConfig) -> Iterator[WorkItem]:
    settings = flow.get_data
    transactions = omnitron.return_transactions(settings.channel_type, tuple(settings.channel_ids), settings.page_size)
    reported = False
    for transaction in transactions:
        order_pk = transaction_order(transaction)
        if order_pk is not None:
            query = PlanQuery(order_id=order_pk, plan_type=plan_type_filter(flow))
            for plan in omnitron.cancellation_plans(query, settings.page_size):
                yield WorkItem.of(plan, transaction)
        elif not reported:
            # Items are told apart by their plan's pk, which this one has not: one per run. The
            # others still match the list, unmapped, and come again with the next run.
            reported = True
            yield WorkItem.unusable(transaction, _no_order(transaction))


def transaction_order(transaction: dict[str, Any]) -> int | None:
    """The pk of the transaction's order, None when its field does not give one."""
    value = transaction.get(TRANSACTION_ORDER_FIELD)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _no_order(transaction: dict[str, Any]) -> str:
    field = TRANSACTION_ORDER_FIELD
    found = f"is {transaction[field]!r}" if field in transaction else "is missing"
    return (
        f"order transaction {transaction.get('pk')}: its field {field!r}, the pk of its order, {found}: its "
        "cancellation plans cannot be found (python -m order_cancel preflight checks this field)"
    )


@dataclass(frozen=True)
class CompletedFetch:
    """A completed flow's run from its watermark: its plans (pending ones first), the watermark to
    keep once they were processed, and the pending plans given up on."""

    items: list[WorkItem]
    next_watermark: Watermark
    given_up: list[int]


def fetch_completed(
    omnitron: OmnitronClient, flow: FlowConfig, watermark: Watermark, now: dt.datetime
) -> CompletedFetch:
    settings = flow.get_data
    given_up = watermark.expired(now, settings.retry_pending_for)
    carried = watermark.without_pending(given_up)
    pending = list(islice(_pending_items(omnitron, flow, sorted(carried.pending)), settings.max_plans_per_run))
    # A pending plan Omnitron no longer lists with the flow's filters is no longer the flow's.
    carried = carried.without_pending(set(carried.pending) - {item.ref.plan_pk for item in pending})
    taken = {item.ref.plan_pk for item in pending}
    new = _earliest_since(omnitron, flow, watermark, settings.max_plans_per_run - len(pending), taken)
    return CompletedFetch(pending + new, carried.advanced_over([item.plan for item in new]), given_up)


def _earliest_since(
    omnitron: OmnitronClient, flow: FlowConfig, watermark: Watermark, room: int, taken: set[int | None]
) -> list[WorkItem]:
    """The `room` plans modified first since the watermark, in modification order, whatever order
    Omnitron lists them in."""
    if room <= 0:
        return []
    page_size, query = flow.get_data.page_size, plan_query(flow, watermark=watermark)

    def fresh(plans: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return (plan for plan in plans if plan.get("pk") not in taken and not watermark.already_taken(plan))

    read = list(islice(fresh(omnitron.cancellation_plans(query, page_size)), room + 1))
    if len(read) > room:
        # The cap cut the list. An Omnitron that ignores `ordering` may list an older plan after
        # these, which the watermark would then pass: every plan up to the latest read is listed
        # again, and the earliest are kept (at most `room` of them held at once).
        latest = max(read[:room], key=modification_order)["modified_date"]
        plans = fresh(omnitron.cancellation_plans(replace(query, modified_through=latest), page_size))
        read = heapq.nsmallest(room, plans, key=modification_order)
    return [WorkItem.of(plan) for plan in sorted(read, key=modification_order)]


def _pending_items(omnitron: OmnitronClient, flow: FlowConfig, pks: list[int]) -> Iterator[WorkItem]:
    for start in range(0, len(pks), PENDING_PER_REQUEST):
        query = replace(plan_query(flow), plan_pks=tuple(pks[start : start + PENDING_PER_REQUEST]))
        for plan in omnitron.cancellation_plans(query, flow.get_data.page_size):
            yield WorkItem.of(plan)
