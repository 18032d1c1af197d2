"""Write Data to Omnitron: what the ERP's relation means for Omnitron, the write that says it, and
how a write that may already have happened is recognised there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from order_cancel.clients.omnitron import REJECTED_STATUS, OmnitronClient, Written
from order_cancel.flows.models import CancelStatus, FlowConfig, NextState
from order_cancel.pipeline.erp_write import DRY_RUN
from order_cancel.pipeline.evaluation import Relation
from order_cancel.pipeline.plan import ErpRecord, OmnitronRecord, PlanRef
from order_cancel.pipeline.recording import PlanDataError, recorded

INTEGRATION_CODE_ATTRIBUTE = "integration_code"
# What a transaction's write leaves in Omnitron, as `found_in_omnitron` names it.
MAPPING_WRITTEN = "integration mapping"


@dataclass(frozen=True)
class OmnitronWrite:
    """What a relation means for Omnitron: the outcome (a short phrase, and its reason where it
    needs one), the write to make (None: nothing is written), and what the write leaves in Omnitron
    (the status it sets, or "integration mapping"), to recognise it there."""

    phrase: str
    reason: str | None = None
    call: Callable[[OmnitronClient], Written] | None = None
    leaves: str | None = None


def omnitron_write(flow: FlowConfig, delivery: ErpRecord) -> OmnitronWrite:
    ref, status = delivery.ref, flow.get_data.cancel_status
    if delivery.relation == DRY_RUN:
        return OmnitronWrite("dry run", "nothing written")
    relation = Relation(str(delivery.relation))
    if relation is Relation.CONTINUE:
        return _accepted(flow, delivery)
    if relation is Relation.FAILURE and status.writes_status:
        return OmnitronWrite(
            "rejected", call=lambda omnitron: omnitron.reject(_pk(ref.plan_pk, ref)), leaves=REJECTED_STATUS
        )
    if relation is Relation.FAILURE and status is CancelStatus.ORDER_TRANSACTION:
        return OmnitronWrite("refused by the ERP", "the transaction stays unmapped and is retried by the next run")
    if relation is Relation.FAILURE:
        return OmnitronWrite("refused by the ERP", "completed flow: nothing written")
    if status is CancelStatus.COMPLETED and not flow.get_data.retry_pending_for:
        return OmnitronWrite("untouched", "completed flow: clear its write_erp task to send it again")
    return OmnitronWrite("untouched", "retried by a later run")


def _accepted(flow: FlowConfig, delivery: ErpRecord) -> OmnitronWrite:
    """What an ERP-accepted plan (continue) becomes in Omnitron."""
    ref, status = delivery.ref, flow.get_data.cancel_status
    if status is CancelStatus.ORDER_TRANSACTION:
        code = delivery.attributes.get(INTEGRATION_CODE_ATTRIBUTE) or str(ref.plan_pk)
        return OmnitronWrite(
            f"integration mapping {code!r} created",
            call=lambda omnitron: omnitron.create_mapping(_pk(ref.transaction_pk, ref), code),
            leaves=MAPPING_WRITTEN,
        )
    if status is CancelStatus.COMPLETED:
        return OmnitronWrite("delivered", "completed flow: nothing written")
    next_state = flow.write_omnitron.next_state
    if next_state is NextState.APPROVED:
        return OmnitronWrite(
            "approved",
            call=lambda omnitron: omnitron.approve(_pk(ref.order_pk, ref), _pk(ref.plan_pk, ref)),
            leaves=next_state.value,
        )
    return OmnitronWrite(
        f"status set to {next_state.value}",
        call=lambda omnitron: omnitron.update_status(_pk(ref.plan_pk, ref), next_state.value),
        leaves=next_state.value,
    )


def write_outcome(
    flow: FlowConfig, omnitron: OmnitronClient, delivery: ErpRecord, *, check_first: bool
) -> OmnitronRecord:
    """Report the relation to Omnitron; only an ERP-accepted plan (continue) moves forward.
    `check_first`: an earlier attempt may have written already (its answer lost with its worker),
    so Omnitron is read first and a plan it shows changed is not written again."""

    def write() -> OmnitronRecord:
        planned = omnitron_write(flow, delivery)
        if planned.call is None:
            return _record(delivery, planned.phrase, planned.reason)
        found = found_in_omnitron(flow, omnitron, delivery.ref) if check_first else None
        if found == planned.leaves:
            return _record(delivery, "already written", f"found {found} in Omnitron", found=found)
        if found is not None:
            return _record(delivery, f"changed in Omnitron to {found} meanwhile", "not written", found=found)
        return _record(delivery, planned.phrase, planned.reason, call=planned.call(omnitron).as_dict())

    return recorded(OmnitronRecord(ref=delivery.ref, attributes=delivery.attributes), write)


def _record(
    delivery: ErpRecord,
    phrase: str,
    reason: str | None,
    *,
    call: dict[str, Any] | None = None,
    found: str | None = None,
) -> OmnitronRecord:
    return OmnitronRecord(
        ref=delivery.ref, attributes=delivery.attributes, phrase=phrase, reason=reason, call=call, found=found
    )


def found_in_omnitron(flow: FlowConfig, omnitron: OmnitronClient, ref: PlanRef) -> str | None:
    """What Omnitron shows now where a write may already have happened: None while the plan (or
    transaction) is still as the flow fetched it, else what it shows instead."""
    if flow.get_data.cancel_status is CancelStatus.ORDER_TRANSACTION:
        return MAPPING_WRITTEN if omnitron.has_mapping(_pk(ref.transaction_pk, ref)) else None
    found = omnitron.plan_status(_pk(ref.plan_pk, ref))
    return None if found == flow.get_data.cancel_status.value else str(found)


def _pk(pk: int | None, ref: PlanRef) -> int:
    if pk is None:
        raise PlanDataError(
            f"{ref.label}: Omnitron cannot be written without the plan's, order's and transaction's pk", {}, []
        )
    return pk
