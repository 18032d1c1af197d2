"""The Integrator's test panels (script, mapping, response script) for one flow, free of Airflow.

`try_flow` takes a flow, one plan (as Omnitron returns it), extra attributes and optionally an ERP
answer, and shows what the flow's own pipeline makes of them (`pipeline.steps.PlanPipeline`): the
plan's attributes, the script's and the mapping's step records, the request line, and the response
evaluation of the given answer. It only ever runs the scripts and the spec of the flow file itself;
the request brings data, never code. Nothing is sent anywhere: the ERP answer is the one given, and
neither Omnitron nor the post script is called.

The web panel (`panels.app`, mounted in the Airflow UI by `plugins/order_cancel_panels.py`) and the
tests call it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from order_cancel.clients.erp import MAX_ANSWER_BYTES, ErpAnswer
from order_cancel.flows.loading import FlowsFolderError, load_flows
from order_cancel.flows.models import FlowConfig
from order_cancel.pipeline.evaluation import DEFAULT_RESPONSE_TEMPLATE, REJECTED_COUNT_ATTRIBUTE, Relation
from order_cancel.pipeline.plan import MappingRecord, ScriptRecord, StepRecord, WorkItem
from order_cancel.pipeline.steps import PlanPipeline, plan_attributes
from order_cancel.runtime import containment
from order_cancel.runtime.nifi_api import ERROR_ATTRIBUTE, LogLine

# A panel run stops a script after at most this many seconds (a flow's own limit is usually 300 s;
# an api-server thread should not wait that long for a test).
PANEL_SCRIPT_TIMEOUT = 30.0
# The scripts one try may run one after the other: the flow's script and its response script.
SCRIPTS_PER_TRY = 2

# What each relation leads to in the flow (README, "Relations and what is written to Omnitron").
RELATION_MEANINGS = {
    Relation.CONTINUE.value: "the ERP accepted the plan: Omnitron is told (the flow's Next State)",
    Relation.FAILURE.value: "the ERP refused the plan: it is marked rejected (waiting, confirmed and "
    "confirmation_waiting flows)",
    Relation.DO_NOTHING.value: "no decision: the plan is left as it is and a later run takes it again",
    Relation.AUTH_FAIL.value: "the ERP refused our credentials: the flow logs in again and resends "
    "(at most erp.max_auth_retries times), then leaves the plan for later",
}


class PanelInputError(ValueError):
    """What the panel was given cannot be used (not a flow's plan, attributes that are not a mapping)."""


def _relative(flow: FlowConfig, path: Path | None) -> str | None:
    """A script or spec path as the flow file names it (relative to its folder)."""
    if path is None:
        return None
    if flow.source is not None:
        try:
            return str(Path(path).relative_to(Path(flow.source).parent.resolve()))
        except ValueError:
            pass
    return Path(path).name


def response_script_name(flow: FlowConfig) -> str | None:
    if not flow.write_erp.custom_response:
        return None
    if flow.write_erp.response_script is None:
        return f"{DEFAULT_RESPONSE_TEMPLATE} (the Integrator's default template)"
    return _relative(flow, flow.write_erp.response_script)


def describe_flow(flow: FlowConfig) -> dict[str, Any]:
    """What the panel shows of a flow before anything runs."""
    if flow.mapping is None:
        mapping = None
    elif isinstance(flow.mapping, Path):
        mapping = _relative(flow, flow.mapping)
    else:
        mapping = "inline spec in the flow file"
    return {
        "flow_id": flow.flow_id,
        "description": flow.description,
        "file": Path(flow.source).name if flow.source else None,
        "cancel_status": flow.get_data.cancel_status.value,
        "channel_type": flow.get_data.channel_type,
        "script": _relative(flow, flow.script),
        "mapping": mapping,
        "response": response_script_name(flow) or "default table",
        "post_script": _relative(flow, flow.post_script),
        "query_check": _query_check_name(flow),
        "attributes": dict(flow.attributes),
        "script_timeout_seconds": min(flow.script_timeout_seconds, PANEL_SCRIPT_TIMEOUT),
    }


def _query_check_name(flow: FlowConfig) -> str | None:
    check = flow.write_erp.query_check
    if check is None:
        return None
    decides = f"script {_relative(flow, check.script)}" if check.script else f"found: {check.found}"
    return f"{check.method.value} {check.url} ({decides})"


def list_flows(folder: Path | None = None) -> dict[str, Any]:
    """Every loadable flow, and the broken flow files (one line per problem)."""
    try:
        flows, errors = load_flows(folder)
    except FlowsFolderError as exc:
        return {"flows": [], "broken": [str(exc)]}
    return {
        "flows": [describe_flow(flow) for flow in flows],
        "broken": [f"{Path(str(error.path)).name}: {problem}" for error in errors for problem in error.problems],
    }


# -- inputs ---------------------------------------------------------------------------------------


def _as_attributes(attributes: Any) -> dict[str, str]:
    """NiFi attributes are strings: numbers and booleans become text, objects JSON text."""
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        raise PanelInputError("the extra attributes must be a JSON object of names and values")
    out: dict[str, str] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[str(key)] = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            out[str(key)] = json.dumps(value, ensure_ascii=False)
        else:
            out[str(key)] = str(value)
    return out


def _answer_text(erp_body: Any) -> str:
    """The ERP's answer as the flow reads it: text, cut at the flow's size limit."""
    if erp_body is None:
        return ""
    text = erp_body if isinstance(erp_body, str) else json.dumps(erp_body, ensure_ascii=False)
    raw = text.encode("utf-8")
    return raw[:MAX_ANSWER_BYTES].decode("utf-8", errors="replace")


def _logs(logs: list[LogLine]) -> list[dict[str, str]]:
    return [{"level": level, "message": message} for level, message in logs]


# -- the panels -----------------------------------------------------------------------------------


def _check_input(plan: Any, erp_status: int | None) -> None:
    if not isinstance(plan, dict):
        raise PanelInputError("the plan must be a JSON object (one cancellation plan as Omnitron returns it)")
    if erp_status is not None and not (100 <= int(erp_status) <= 599):
        raise PanelInputError(f"the ERP status code must be between 100 and 599, not {erp_status}")


def try_flow(
    flow: FlowConfig,
    plan: Any,
    attributes: Any = None,
    erp_status: int | None = None,
    erp_body: Any = None,
    *,
    order_transaction: dict[str, Any] | None = None,
    timeout: float = PANEL_SCRIPT_TIMEOUT,
) -> dict[str, Any]:
    """Run the flow's Script Step, Mapping Step and (with `erp_status`) its response evaluation on
    one plan, as a run of the flow would, and report each step.

    `attributes` are added on top of the attributes the flow gives the plan, as if an earlier step
    had set them. With a custom response script, `rejected_count` (which the flow asks Omnitron for)
    is taken from them, default "0". `erp_status` None: the response step is not tried.

    Returns {"flow_id", "ok", "failed_step", "error", "input_attributes", "script", "mapping",
    "request_body", "attributes", "request", "response", ...}; `ok` is whether the plan gets through its
    transform task (then `request_body` is what the flow sends, `attributes` what it carries on).
    """
    _check_input(plan, erp_status)
    extra = _as_attributes(attributes)
    timeout = min(float(timeout), flow.script_timeout_seconds)
    result = _nothing_ran(flow, timeout)
    try:
        pipeline = PlanPipeline.build(flow, script_timeout=timeout)
    except Exception as exc:  # a script that does not compile, a spec that does not build
        return {**result, "failed_step": "build", "error": str(exc)}
    item = WorkItem.of(plan, order_transaction)
    result["input_attributes"] = {**plan_attributes(flow, item), **extra}
    records = pipeline.transform(item, extra)
    for record in records:
        _show_transform(result, record)
    if records and records[-1].failed:
        return {**result, "failed_step": records[-1].step.value, "error": records[-1].error}
    last = records[-1] if records else None
    body = last.output if isinstance(last, (ScriptRecord, MappingRecord)) else item.plan
    attributes_now = last.attributes if last else result["input_attributes"]
    result.update(
        ok=True,
        request_body=body,
        attributes=attributes_now,
        request={
            "method": flow.write_erp.method.value,
            "url": flow.write_erp.url,  # as the flow file names it (relative to the ERP connection's host)
            "idempotency_key": item.ref.idempotency_key(flow.flow_id),
            **({"query_check": _query_check_name(flow)} if flow.write_erp.query_check else {}),
        },
    )
    if erp_status is None:
        result["response"]["skipped"] = "no ERP status code given"
        return result
    answer = ErpAnswer(status_code=int(erp_status), text=_answer_text(erp_body), request_url=flow.write_erp.url)
    return _show_response(result, pipeline, answer, extra)


def try_contained(
    flow: FlowConfig,
    plan: Any,
    attributes: Any = None,
    erp_status: int | None = None,
    erp_body: Any = None,
    *,
    order_transaction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`try_flow` in a child process of its own, so that the caller (the api-server) never runs a
    flow's code: it sees none of the caller's environment, and it is killed once its scripts'
    limits are spent, whatever they do."""
    timeout = min(PANEL_SCRIPT_TIMEOUT, flow.script_timeout_seconds)
    budget = SCRIPTS_PER_TRY * timeout + containment.GRACE_SECONDS
    try:
        return containment.run_once(
            try_flow, flow, plan, attributes, erp_status, erp_body, order_transaction=order_transaction, timeout=budget
        )
    except containment.CallTimedOut:
        error = f"ScriptTimeout: a script did not stop at its limit ({timeout:g} s): the try's process was killed"
        return {**_nothing_ran(flow, timeout), "failed_step": "script", "error": error}
    except containment.ChildDied as exc:
        return {**_nothing_ran(flow, timeout), "failed_step": "script", "error": f"the try's process ended: {exc}"}


def _nothing_ran(flow: FlowConfig, timeout: float) -> dict[str, Any]:
    """The panel's answer before any step ran."""
    return {
        "flow_id": flow.flow_id,
        "ok": False,
        "failed_step": None,
        "error": None,
        "input_attributes": None,
        "script": {"ran": False, "name": _relative(flow, flow.script)},
        "mapping": {"ran": False, "name": describe_flow(flow)["mapping"]},
        "request_body": None,
        "response": {"ran": False, "evaluator": response_script_name(flow) or "default table"},
        "post_script": "not run by the panel" if flow.post_script else None,
        "script_timeout_seconds": timeout,
    }


def _show_transform(result: dict[str, Any], record: StepRecord) -> None:
    """A script or mapping record, as the panel shows it."""
    error = record.error
    if isinstance(record, ScriptRecord):
        result["script"].update(
            ran=True,
            result_data=record.output,
            attributes=record.attributes,
            logs=_logs(record.logs),
            transferred=record.transferred,
            error=record.attributes.get(ERROR_ATTRIBUTE) or error,
        )
    elif isinstance(record, MappingRecord):
        result["mapping"].update(ran=True, result=record.output, error=error)


def _show_response(
    result: dict[str, Any], pipeline: PlanPipeline, answer: ErpAnswer, extra: dict[str, str]
) -> dict[str, Any]:
    """Write Data to ERP with the answer given, then the Custom Response Script Step."""
    section = result["response"]
    section.update(ran=True, status_code=answer.status_code, response_data=answer.body())
    evaluated_input = dict(result["attributes"])
    if pipeline.erp.evaluator.script is not None:
        # The flow asks Omnitron for the order's rejected plans; the panel takes the number given.
        evaluated_input[REJECTED_COUNT_ATTRIBUTE] = extra.get(REJECTED_COUNT_ATTRIBUTE, "0")
    try:
        evaluation = pipeline.erp.evaluate(answer, result["request_body"], evaluated_input)
    except Exception as exc:  # the script raised, or set no (or an unknown) relation
        attributes = getattr(exc, "attributes", evaluated_input)
        section.update(
            relation=None,
            attributes=attributes,
            logs=_logs(getattr(exc, "logs", [])),
            error=attributes.get(ERROR_ATTRIBUTE) or str(exc),
        )
        return {**result, "failed_step": "response", "error": str(exc)}
    relation = evaluation.relation.value
    section.update(
        relation=relation,
        meaning=RELATION_MEANINGS[relation],
        attributes=evaluation.attributes,
        logs=_logs(evaluation.logs),
        error=None,
    )
    return result
