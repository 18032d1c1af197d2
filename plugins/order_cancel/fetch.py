"""Get Data From Omnitron: which plans a run processes.

A plain status flow lists the plans with the configured filters. An Order Transaction flow lists
return transactions without an integration mapping, then the plans of each transaction's order.
At most `max_plans_per_run` plans are taken; the rest still match the query and wait for the next run.
"""

from __future__ import annotations

from typing import Any

from order_cancel.config import CancelStatus, CancelType, FlowConfig
from order_cancel.omnitron import OmnitronClient, PlanQuery
from order_cancel.plan_steps import work_item


def plan_type_filter(flow: FlowConfig) -> str | None:
    cancel_type = flow.get_data.cancel_type
    return None if cancel_type is CancelType.ALL else cancel_type.value


def plan_query(flow: FlowConfig, *, modified_after: str | None = None) -> PlanQuery:
    settings = flow.get_data
    return PlanQuery(
        channel_type=settings.channel_type,
        status=settings.cancel_status.value,
        plan_type=plan_type_filter(flow),
        channel_ids=tuple(settings.channel_ids),
        modified_after=modified_after,
    )


def fetch_work_items(
    omnitron: OmnitronClient, flow: FlowConfig, *, modified_after: str | None = None
) -> list[dict[str, Any]]:
    settings = flow.get_data
    if settings.cancel_status is CancelStatus.ORDER_TRANSACTION:
        return _order_transaction_items(omnitron, flow)
    plans = omnitron.cancellation_plans(
        plan_query(flow, modified_after=modified_after), settings.page_size, limit=settings.max_plans_per_run
    )
    return [work_item(plan) for plan in plans]


def _order_transaction_items(omnitron: OmnitronClient, flow: FlowConfig) -> list[dict[str, Any]]:
    settings = flow.get_data
    items: list[dict[str, Any]] = []
    transactions = omnitron.return_transactions(settings.channel_type, tuple(settings.channel_ids), settings.page_size)
    for transaction in transactions:
        query = PlanQuery(order_id=transaction["order"], plan_type=plan_type_filter(flow))
        for plan in omnitron.cancellation_plans(query, settings.page_size):
            if len(items) >= settings.max_plans_per_run:
                return items
            items.append(work_item(plan, transaction))
    return items
