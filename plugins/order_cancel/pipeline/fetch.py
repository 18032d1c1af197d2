"""Get Data From Omnitron: which plans a run processes.

A status flow lists the plans with the configured filters. A completed flow lists the plans
modified since its watermark (or inside a backfill window), and first the plans earlier runs left
pending (see `watermark`), by pk. An Order Transaction flow lists return
transactions without an integration mapping, then the plans of each transaction's order. At most
`max_plans_per_run` plans are taken; the rest still match and wait for the next run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import islice

from order_cancel.clients.omnitron import OmnitronClient, PlanQuery
from order_cancel.flows.models import CancelStatus, CancelType, FlowConfig
from order_cancel.pipeline.plan import WorkItem
from order_cancel.pipeline.watermark import Watermark, Window

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


def fetch_work_items(
    omnitron: OmnitronClient,
    flow: FlowConfig,
    *,
    window: Window | None = None,
    watermark: Watermark | None = None,
) -> list[WorkItem]:
    settings = flow.get_data
    if settings.cancel_status is CancelStatus.ORDER_TRANSACTION:
        items: Iterator[WorkItem] = _order_transaction_items(omnitron, flow)
    else:
        plans = omnitron.cancellation_plans(plan_query(flow, window=window, watermark=watermark), settings.page_size)
        if watermark is not None:
            plans = (plan for plan in plans if not watermark.already_taken(plan))
        items = (WorkItem.of(plan) for plan in plans)
    return list(islice(items, settings.max_plans_per_run))


def _order_transaction_items(omnitron: OmnitronClient, flow: FlowConfig) -> Iterator[WorkItem]:
    settings = flow.get_data
    transactions = omnitron.return_transactions(settings.channel_type, tuple(settings.channel_ids), settings.page_size)
    for transaction in transactions:
        query = PlanQuery(order_id=transaction["order"], plan_type=plan_type_filter(flow))
        for plan in omnitron.cancellation_plans(query, settings.page_size):
            yield WorkItem.of(plan, transaction)


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
    new = [item for item in fetch_work_items(omnitron, flow, watermark=watermark) if item.ref.plan_pk not in taken][
        : settings.max_plans_per_run - len(pending)
    ]
    return CompletedFetch(pending + new, carried.advanced_over([item.plan for item in new]), given_up)


def _pending_items(omnitron: OmnitronClient, flow: FlowConfig, pks: list[int]) -> Iterator[WorkItem]:
    for start in range(0, len(pks), PENDING_PER_REQUEST):
        query = replace(plan_query(flow), plan_pks=tuple(pks[start : start + PENDING_PER_REQUEST]))
        for plan in omnitron.cancellation_plans(query, flow.get_data.page_size):
            yield WorkItem.of(plan)
