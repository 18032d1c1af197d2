"""Deterministic Omnitron data shaped like the seed's "Example Order Cancel Data Structure".

Everything derives from the primary keys, so the same call always builds the same object and tests
can state expected values. Plan pks, order pks and order item pks are deliberately different numbers
(order 1000 + plan pk by default) so that a client mixing them up fails loudly.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

BASE_TIME = datetime(2023, 2, 7, 8, 0, 0, tzinfo=UTC)
SYSTEM_USER = {"pk": 12, "username": "mp_test_user"}
PRODUCTS = [
    ("Erkek Pamuklu Tişört", "199.90"),
    ("Kadın Kot Pantolon", "649.99"),
    ("Deri Cüzdan", "349.50"),
    ("Çocuk Spor Ayakkabı", "899.00"),
    ("Yün Kazak", "529.95"),
    ("Şişme Mont", "1299.00"),
    ("Çelik Termos", "279.90"),
]
REASONS = ["Yanlış ürün aldım.", "Ürün hasarlı geldi.", "Vazgeçtim.", "Beden uymadı."]
PLAN_STATUSES = ("waiting", "confirmed", "completed", "confirmation_waiting", "rejected", "approved")


def iso(moment: datetime) -> str:
    """Django REST Framework's datetime format: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _money(value) -> str:
    return str(Decimal(str(value)).quantize(Decimal("0.01")))


def _as_iso(value: datetime | str | None, default: datetime) -> str:
    if value is None:
        return iso(default)
    return iso(value) if isinstance(value, datetime) else value


def make_plan(
    pk: int,
    *,
    order_pk: int | None = None,
    order_number: str | None = None,
    status: str = "waiting",
    plan_type: str = "cancel",
    channel: int = 1,
    modified_date: datetime | str | None = None,
    items: int = 2,
    refund_amount=None,
) -> dict:
    """A cancellation plan with its nested order, items and reason, as Omnitron returns it."""
    order_pk = 1000 + pk if order_pk is None else order_pk
    modified = _as_iso(modified_date, BASE_TIME + timedelta(minutes=pk, microseconds=pk * 4321))
    created = iso(BASE_TIME + timedelta(minutes=pk) - timedelta(seconds=1))
    plan_items = [_plan_item(pk, order_pk, index, modified) for index in range(items)]
    total = sum((Decimal(i["order_item"]["price"]) * i["order_item"]["quantity"] for i in plan_items), Decimal("0"))
    refund = _money(total if refund_amount is None else refund_amount)
    order = _order(order_pk, order_number, channel, _money(total), refund, modified)
    return {
        "pk": pk,
        "invoice_number": None,
        "order_previous_status": "400",
        "shipping_refund_amount": "0.00",
        "refund_amount": refund,
        "discount_refund_amount": "0.00",
        "status": status,
        "plan_type": plan_type,
        "order": order,
        "cancellationplanorderitem_set": plan_items,
        "reason": _reason(pk, plan_type),
        "created_date": created,
        "retail_store_remote_id": None,
        "staff_remote_id": None,
        "created_by": dict(SYSTEM_USER),
        "modified_date": modified,
        "last_updated_by": dict(SYSTEM_USER),
        "payment_plan": {},
        "modified_by_id": SYSTEM_USER["pk"],
    }


def make_order_transaction(pk: int, order_pk: int, *, amount, modified_date: datetime | str) -> dict:
    """A "return" order transaction without an integration mapping (Order Transaction mode)."""
    return {
        "pk": pk,
        "order": order_pk,
        "amount": _money(amount),
        "transaction_type": "return",
        "integration_mapping": None,
        "modified_date": _as_iso(modified_date, BASE_TIME),
    }


def demo_dataset(plan_count: int = 12) -> tuple[list[dict], list[dict]]:
    """A mixed set for the demo: every status, both plan types, channels 1..3, some transactions."""
    statuses = ("waiting", "confirmed", "completed", "waiting", "confirmation_waiting")
    plans, transactions = [], []
    for index in range(plan_count):
        pk = index + 1
        plan = make_plan(
            pk,
            status=statuses[index % len(statuses)],
            plan_type="refund" if index % 4 == 2 else "cancel",
            channel=index % 3 + 1,
            items=index % 3 + 1,
        )
        plans.append(plan)
        if plan["plan_type"] == "refund":
            transactions.append(
                make_order_transaction(
                    5000 + pk, plan["order"]["pk"], amount=plan["refund_amount"], modified_date=plan["modified_date"]
                )
            )
    return plans, transactions


def _order(pk: int, number: str | None, channel: int, amount: str, refund: str, modified: str) -> dict:
    placed = BASE_TIME - timedelta(hours=14, minutes=pk % 60)
    return {
        "pk": pk,
        "number": number or str(429452000 + pk),
        "channel": channel,
        "status": "100",
        "date_placed": iso(placed),
        "customer": 1 + pk % 97,
        "shipping_address": 2 + pk % 89,
        "billing_address": 2 + pk % 89,
        "currency": "try",
        "amount": amount,
        "shipping_amount": "0.00",
        "shipping_tax_rate": "0.00",
        "extra_field": {},
        "payment_option": None,
        "payment_option_slug": None,
        "bin_number": None,
        "installment": None,
        "installment_count": None,
        "delivery_type": None,
        "installment_interest_amount": "0.00",
        "cargo_company": 2,
        "invoice_number": None,
        "invoice_date": None,
        "e_archive_url": "https://example.earchive.url",
        "refund_amount": refund,
        "discount_refund_amount": "0.00",
        "shipping_refund_amount": "0.00",
        "discount_amount": "0.00",
        "is_send": False,
        "net_shipping_amount": "0.00",
        "shipping_interest_amount": "0.00",
        "tracking_number": str(7260000009966000 + pk),
        "carrier_shipping_code": "",
        "remote_addr": None,
        "fundstransfertransaction_set": [],
        "has_gift_box": False,
        "gift_box_note": "",
        "external_status": None,
        "client_type": "default",
        "language_code": "tr-tr",
        "notes": "",
        "delivery_range": None,
        "shipping_option_slug": "",
        "segment": None,
        "modified_date": modified,
        "checkout_provider_id": None,
        "created_date": iso(placed + timedelta(minutes=5)),
        "cancellation_info": {},
        "shipping_company": None,
        "cancel_status": None,
        "defined_tracking_url": None,
        "installment_free": False,
        "first_refund_strategy": None,
    }


def _plan_item(plan_pk: int, order_pk: int, index: int, modified: str) -> dict:
    name, price = PRODUCTS[(plan_pk + index) % len(PRODUCTS)]
    product_pk = 700 + (plan_pk + index) % len(PRODUCTS)
    order_item = {
        "pk": order_pk * 100 + index + 1,
        "order": order_pk,
        "status": "100",
        "product": {
            "pk": product_pk,
            "sku": f"SKU-{product_pk}",
            "base_code": f"BC-{product_pk}",
            "name": name,
            "attributes": {},
        },
        "price": price,
        "retail_price": price,
        "tax_rate": "20.00",
        "price_currency": "try",
        "quantity": 1 + index % 2,
        "extra_field": {},
        "discount_amount": "0.00",
    }
    return {
        "pk": plan_pk * 100 + index + 1,
        "order_item": order_item,
        "order_item_previous_status": "400",
        "status": "100",
        "modified_date": modified,
    }


def _reason(plan_pk: int, plan_type: str) -> dict:
    index = (plan_pk - 1) % len(REASONS)
    return {
        "pk": index + 1,
        "cancellation_type": plan_type,
        "extra_information_needed": False,
        "order": 100,
        "subject": REASONS[index],
        "is_active": True,
        "send_to_remote": False,
        "modified_date": "2022-11-23T07:51:22.698626Z",
        "created_date": "2022-11-23T07:51:22.534643Z",
        "translations": None,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"reason-{index + 1}")),
        "send_to_oms": False,
    }
