"""The per-plan steps of the flow, free of Airflow: transform, deliver to the ERP, write the outcome.

Each step takes the previous step's result (a JSON-ready dict, as it travels in XCom) and returns
its own. Every result carries `ref`, the plan's identity, so logs, labels and the run summary can
name the plan without the whole plan object.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from order_cancel.config import PROJECT_ROOT, CancelStatus, FlowConfig, NextState
from order_cancel.erp import ErpClient
from order_cancel.evaluation import Relation, ResponseEvaluator
from order_cancel.mapping import JoltMapping, load_spec_file
from order_cancel.omnitron import OmnitronClient
from order_cancel.scripting import Script

INTEGRATION_CODE_ATTRIBUTE = "integration_code"
DRY_RUN = "dry_run"
DEFAULT_RESPONSE_SCRIPT = PROJECT_ROOT / "include" / "templates" / "default_response.py"


class PlanDataError(ValueError):
    """A plan (or what a script made of it) cannot be processed; retrying will not help."""


def plan_ref(plan: dict[str, Any], order_transaction: dict[str, Any] | None = None) -> dict[str, Any]:
    order = plan.get("order")
    order = order if isinstance(order, dict) else {"pk": order}
    return {
        "plan_pk": plan.get("pk"),
        "order_pk": order.get("pk"),
        "order_number": order.get("number"),
        "transaction_pk": order_transaction.get("pk") if order_transaction else None,
    }


def work_item(plan: dict[str, Any], order_transaction: dict[str, Any] | None = None) -> dict[str, Any]:
    """One element of the fetch task's list: what the per-plan tasks are mapped over."""
    return {"ref": plan_ref(plan, order_transaction), "plan": plan, "order_transaction": order_transaction}


def plan_attributes(flow: FlowConfig, item: dict[str, Any]) -> dict[str, str]:
    """The attributes every script of the plan starts with (NiFi attributes are strings)."""
    ref, plan = item["ref"], item["plan"]
    order = plan.get("order") if isinstance(plan.get("order"), dict) else {}
    attributes = {
        "channel_type": flow.get_data.channel_type,
        "cancel_status": flow.get_data.cancel_status.value,
        "plan_pk": ref["plan_pk"],
        "plan_type": plan.get("plan_type"),
        "plan_status": plan.get("status"),
        "order_pk": ref["order_pk"],
        "order_number": ref["order_number"],
        "channel_id": order.get("channel"),
        "transaction_pk": ref["transaction_pk"],
    }
    return {**flow.attributes, **{key: str(value) for key, value in attributes.items() if value is not None}}


def idempotency_key(flow_id: str, plan: dict[str, Any]) -> str:
    """Stable for one version of a plan: a retried or repeated send carries the same key."""
    version = hashlib.sha256(str(plan.get("modified_date")).encode()).hexdigest()[:16]
    return f"{flow_id}-{plan.get('pk')}-{version}"


@dataclass(frozen=True)
class FlowSteps:
    """What the steps of one flow need, built once per task: compiled scripts and the Jolt chain."""

    flow: FlowConfig
    script: Script | None
    mapping: JoltMapping | None
    evaluator: ResponseEvaluator
    post_script: Script | None
    dry_run: bool = False

    @classmethod
    def build(cls, flow: FlowConfig, *, dry_run: bool = False) -> FlowSteps:
        response_script = None
        if flow.write_erp.custom_response:
            response_script = Script.from_file(flow.write_erp.response_script or DEFAULT_RESPONSE_SCRIPT)
        return cls(
            flow=flow,
            script=Script.from_file(flow.script) if flow.script else None,
            mapping=_mapping(flow),
            evaluator=ResponseEvaluator(response_script, flow.script_timeout_seconds),
            post_script=Script.from_file(flow.post_script) if flow.post_script else None,
            dry_run=dry_run,
        )

    # -- Script Step and Mapping Step ---------------------------------------------------------
    def transform(self, item: dict[str, Any]) -> dict[str, Any]:
        """The ERP request body of a plan: the plan, through the script, through the mapping."""
        attributes = plan_attributes(self.flow, item)
        logs: list[tuple[str, str]] = []
        data: Any = item["plan"]
        if self.script is not None:
            run = self.script.run(
                json.dumps(data, ensure_ascii=False), attributes, timeout=self.flow.script_timeout_seconds
            )
            attributes, logs = run.attributes, run.logs
            if run.transferred == "failure":
                raise PlanDataError("the script transferred the plan to REL_FAILURE")
            try:
                data = json.loads(run.output_text)
            except ValueError as exc:
                raise PlanDataError(f"the script's output is not JSON ({exc}): {run.output_text[:200]!r}") from None
        if self.mapping is not None:
            data = self.mapping.apply(data)
        return {
            "ref": item["ref"],
            "body": data,
            "attributes": attributes,
            "idempotency_key": idempotency_key(self.flow.flow_id, item["plan"]),
            "logs": logs,
        }

    # -- Write Data to ERP Step and Custom Response Script Step -------------------------------
    def deliver(
        self, erp: ErpClient, prepared: dict[str, Any], rejected_count: Callable[[], int]
    ) -> dict[str, Any]:
        """Send the body; on auth_fail log in again and resend, a bounded number of times."""
        settings = self.flow.write_erp
        headers = {"Idempotency-Key": prepared["idempotency_key"]}
        if self.dry_run:
            return self._dry_delivery(erp, prepared, headers)
        attributes = dict(prepared["attributes"])
        if self.evaluator.script is not None:
            attributes["rejected_count"] = str(rejected_count())
        logs: list[tuple[str, str]] = []
        for attempt in range(self.flow.erp.max_auth_retries + 1):
            if attempt:
                erp.login()
            answer = erp.send(settings.method.value, settings.url, prepared["body"], headers)
            relation, evaluated, script_logs = self.evaluator.evaluate(answer, prepared["body"], attributes)
            logs += script_logs
            if relation is not Relation.AUTH_FAIL:
                break
        else:
            logs.append(("warning", f"the ERP refused authentication {attempt + 1} times; the plan is left for a later run"))
            relation = Relation.DO_NOTHING
        return {
            "ref": prepared["ref"],
            "relation": relation.value,
            "status_code": answer.status_code,
            "error": answer.error,
            "request_data": prepared["body"],
            "response_data": answer.body(),
            "attributes": evaluated,
            "logs": logs,
        }

    def _dry_delivery(self, erp: ErpClient, prepared: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        settings = self.flow.write_erp
        request = erp.request_for(settings.method.value, settings.url, prepared["body"], headers)
        return {
            "ref": prepared["ref"],
            "relation": DRY_RUN,
            "status_code": None,
            "error": None,
            "request": {**request, "auth": erp.auth_description},
            "request_data": prepared["body"],
            "response_data": None,
            "attributes": prepared["attributes"],
            "logs": [("info", f"dry run: would send {request['method']} {request['url']}")],
        }

    # -- Write Data to Omnitron Step ----------------------------------------------------------
    def write_outcome(self, omnitron: OmnitronClient, delivery: dict[str, Any]) -> dict[str, Any]:
        """Report the relation to Omnitron; only an ERP-accepted plan (continue) moves forward."""
        if delivery["relation"] == DRY_RUN:
            return {**delivery, "omnitron": "dry run: nothing written", "logs": []}
        ref, relation = delivery["ref"], Relation(delivery["relation"])
        status = self.flow.get_data.cancel_status
        if status is CancelStatus.COMPLETED:
            outcome = "untouched (completed flow: clear its write_erp task to send it again)"
        else:
            outcome = "untouched (retried by a later run)"
        if relation is Relation.CONTINUE:
            if status is CancelStatus.ORDER_TRANSACTION:
                code = delivery["attributes"].get(INTEGRATION_CODE_ATTRIBUTE) or str(ref["plan_pk"])
                omnitron.create_mapping(ref["transaction_pk"], code)
                outcome = f"integration mapping {code!r} created"
            elif status is CancelStatus.COMPLETED:
                outcome = "delivered (completed flow: nothing written)"
            elif self.flow.write_omnitron.next_state is NextState.APPROVED:
                omnitron.approve(ref["order_pk"], ref["plan_pk"])
                outcome = "approved"
            else:
                next_state = self.flow.write_omnitron.next_state.value
                omnitron.update_status(ref["plan_pk"], next_state)
                outcome = f"status set to {next_state}"
        elif relation is Relation.FAILURE and status.writes_status:
            omnitron.reject(ref["plan_pk"])
            outcome = "rejected"
        elif relation is Relation.FAILURE and status is CancelStatus.ORDER_TRANSACTION:
            outcome = "refused by the ERP: the transaction stays unmapped and is retried by the next run"
        elif relation is Relation.FAILURE:
            outcome = "refused by the ERP (completed flow: nothing written)"
        return {**delivery, "omnitron": outcome, "logs": []}

    # -- Post Script Step ----------------------------------------------------------------------
    def run_post_script(self, written: dict[str, Any]) -> dict[str, Any]:
        """Runs after a successful Omnitron write of an accepted plan; its output is not used."""
        if self.post_script is None or written["relation"] != Relation.CONTINUE.value:
            return {**written, "post_script": "skipped", "logs": []}
        variables = {"request_data": written["request_data"], "response_data": written["response_data"]}
        run = self.post_script.run(
            json.dumps(variables, ensure_ascii=False),
            written["attributes"],
            variables=variables,
            timeout=self.flow.script_timeout_seconds,
        )
        return {**written, "attributes": run.attributes, "post_script": "ran", "logs": run.logs}


def _mapping(flow: FlowConfig) -> JoltMapping | None:
    if flow.mapping is None:
        return None
    if isinstance(flow.mapping, Path):
        return JoltMapping(load_spec_file(flow.mapping), source=str(flow.mapping))
    return JoltMapping(flow.mapping, source=f"{flow.source}: mapping")
