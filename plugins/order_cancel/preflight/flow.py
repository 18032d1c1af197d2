"""The flow's own assumptions: its script and mapping run on real plans (nothing is sent), its ERP
login yields a token, and its query check tells a plan the ERP does not have."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from order_cancel.clients.erp import ErpClient, ErpLoginError
from order_cancel.clients.http import shown_url
from order_cancel.flows.models import FlowConfig, HttpMethod, TokenLogin
from order_cancel.pipeline.plan import WorkItem
from order_cancel.pipeline.recording import UNMENDABLE, error_text
from order_cancel.pipeline.steps import PlanPipeline, plan_attributes
from order_cancel.preflight.findings import Finding, broken, holds, unchecked
from order_cancel.preflight.omnitron import Sample

# A preflight stops a script after this many seconds, whatever the flow allows: it should take seconds.
SCRIPT_TIMEOUT = 30.0
# The key, in every field a query check URL names, of a plan that cannot exist (pks start at 1).
NO_SUCH_KEY = "0"


def build(flow: FlowConfig) -> tuple[PlanPipeline | None, str]:
    """The flow's pipeline, or why its scripts or mapping do not build."""
    try:
        return PlanPipeline.build(flow, script_timeout=SCRIPT_TIMEOUT), ""
    except (*UNMENDABLE, OSError) as exc:
        return None, error_text(exc)


def transform(flow: FlowConfig, pipeline: PlanPipeline | None, why_not: str, sample: Sample, plans: int) -> Finding:
    assumption = f"script and mapping run on the first {plans} plans"
    if pipeline is None:
        return broken(assumption, why_not)
    items: Sequence[WorkItem] = sample.items[:plans]
    if not items:
        return unchecked(
            assumption, "no plan to try: " + (str(sample.failure) if sample.failure else "none listed now")
        )
    for item in items:
        records = pipeline.transform(item)
        if records and records[-1].failed:
            return broken(assumption, f"{item.ref.label}: {records[-1].step.value}: {records[-1].error}")
    labels = ", ".join(item.ref.label for item in items)
    if flow.script is None and flow.mapping is None:
        return holds(assumption, f"the flow has neither: {labels} would be sent as listed")
    return holds(assumption, f"{labels}: transformed, nothing sent")


def erp_login(flow: FlowConfig, erp: ErpClient) -> Finding | None:
    settings = flow.erp.login
    if settings is None:
        return None
    if not isinstance(settings, TokenLogin):
        assumption = f"ERP {settings.type} credentials are accepted"
        return unchecked(assumption, "they go with each request the flow sends: only a write would show it")
    assumption = "ERP login answers a token"
    try:
        erp.login()
    except ErpLoginError as exc:
        return broken(assumption, str(exc))
    return holds(assumption, f"POST {shown_url(erp.url(settings.url))} answered a token at {settings.token_path!r}")


def query_check(flow: FlowConfig, pipeline: PlanPipeline | None, erp: ErpClient) -> Finding | None:
    settings = flow.write_erp.query_check
    if settings is None:
        return None
    assumption = "the query check finds no plan that cannot exist"
    if settings.method is not HttpMethod.GET:
        return unchecked(assumption, f"it asks with {settings.method.value}, which a preflight does not send")
    if pipeline is None:
        return unchecked(assumption, "the flow's scripts do not build")
    try:
        check = pipeline.erp.query_check(erp, _NoSuchPlan(), plan_attributes(flow, WorkItem.of({})))
    except (*UNMENDABLE, ErpLoginError) as exc:
        return broken(assumption, error_text(exc))
    answer = check.answer.status_code if check.answer.status_code is not None else check.answer.error
    seen = f"GET {check.answer.request_url} (every field {NO_SUCH_KEY}) answered {answer}"
    if check.found is False:
        return holds(assumption, f"{seen}: not found, so plans are sent")
    if check.found:
        return broken(assumption, f"{seen}, read as 'the ERP has it': no plan would ever be sent")
    return broken(assumption, f"{seen}: no decision, so every plan would wait for a later run")


class _NoSuchPlan(dict[str, Any]):
    """A plan whose every field, at any depth, is a key no plan has: what a query check URL names
    of it ({pk}, {order[number]}) becomes NO_SUCH_KEY."""

    def __getitem__(self, key: Any) -> Any:
        return self

    def __format__(self, spec: str) -> str:
        return NO_SUCH_KEY
