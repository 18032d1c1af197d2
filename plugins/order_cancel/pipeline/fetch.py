"""Get Data From Omnitron: which plans a run processes.

A status flow lists the plans with the configured filters. A completed flow lists the plans
modified since its watermark (or inside a backfill window). An Order Transaction flow lists return
transactions without an integration mapping, then the plans of each transaction's order. At most
`max_plans_per_run` plans are taken; the rest still match and wait for the next run.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from order_cancel.clients.omnitron import OmnitronClient, PlanQuery
from order_cancel.flows.models import CancelStatus, CancelType, FlowConfig
from order_cancel.pipeline.plan import WorkItem
from order_cancel.pipeline.watermark import Watermark, Window


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
