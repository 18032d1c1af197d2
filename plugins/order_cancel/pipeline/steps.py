"""The one pipeline of a plan: Script Step, Mapping Step, Write Data to ERP with the response
evaluation, Write Data to Omnitron, Post Script.

Every layout runs it: the per-step tasks one stage each (`run_stage`), the batch runner a whole
plan (`advance`), the test panels and the CLI the parts they show. A step never raises for a plan's
failure: it returns its record with the error, and says whether a retry may mend it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from order_cancel.clients.erp import IDEMPOTENCY_HEADER, ErpAnswer, ErpClient, ErpLoginRefused
from order_cancel.clients.http import masked
from order_cancel.clients.omnitron import REJECTED_STATUS, OmnitronClient, OmnitronLoginError, Written
from order_cancel.flows.models import CancelStatus, FlowConfig, NextState
from order_cancel.pipeline.evaluation import (
    REJECTED_COUNT_ATTRIBUTE,
    RELATION_ATTRIBUTE,
    EvaluationError,
    Relation,
    ResponseEvaluator,
    default_relation,
    default_response_script,
)
from order_cancel.pipeline.plan import (
    ErpRecord,
    MappingRecord,
    OmnitronRecord,
    PlanProgress,
    PlanRef,
    PostScriptRecord,
    ScriptRecord,
    Stage,
    Step,
    StepRecord,
    WorkItem,
    now,
)
from order_cancel.runtime.jolt import JoltMapping, MappingError, load_spec_file
from order_cancel.runtime.nifi_api import ERROR_ATTRIBUTE, LogLine
from order_cancel.runtime.scripts import Script, ScriptError

INTEGRATION_CODE_ATTRIBUTE = "integration_code"
# What a transaction's write leaves in Omnitron, as `found_in_omnitron` names it.
MAPPING_WRITTEN = "integration mapping"
DRY_RUN = "dry_run"


class PlanDataError(ValueError):
    """A plan (or what a script made of it) cannot be processed; retrying will not help. It keeps
    what the step had made, for the step's record: attributes, log lines and `fields`."""

    def __init__(self, message: str, attributes: dict[str, str], logs: list[LogLine], **fields: Any):
        super().__init__(message)
        self.attributes = attributes
        self.logs = logs
        self.fields = fields


# Failures that the same input meets again on a retry.
UNMENDABLE = (ScriptError, MappingError, EvaluationError, PlanDataError, OmnitronLoginError, ErpLoginRefused)


class PlanClients(Protocol):
    """Where a plan's steps get their clients (one per thread where a batch runs threads)."""

    def omnitron(self) -> OmnitronClient: ...

    def erp(self) -> ErpClient: ...


def flow_stages(flow: FlowConfig) -> list[Stage]:
    """The stages a flow's plans go through (the post script only where the flow has one)."""
    return [Stage.TRANSFORM, Stage.WRITE_ERP, Stage.WRITE_OMNITRON] + ([Stage.POST_SCRIPT] if flow.post_script else [])


def plan_attributes(flow: FlowConfig, item: WorkItem) -> dict[str, str]:
    """The attributes every script of the plan starts with (NiFi attributes are strings)."""
    ref, plan = item.ref, item.plan
    order = plan["order"] if isinstance(plan.get("order"), dict) else {}
    attributes = {
        "channel_type": flow.get_data.channel_type,
        "cancel_status": flow.get_data.cancel_status.value,
        "plan_pk": ref.plan_pk,
        "plan_type": plan.get("plan_type"),
        "plan_status": plan.get("status"),
        "order_pk": ref.order_pk,
        "order_number": ref.order_number,
        "channel_id": order.get("channel"),
        "transaction_pk": ref.transaction_pk,
    }
    return {**flow.attributes, **{key: str(value) for key, value in attributes.items() if value is not None}}


def error_text(exc: BaseException) -> str:
    """A failure in one line: a script's own `log.script.error` (type, message, file and line), or the exception."""
    return getattr(exc, "attributes", {}).get(ERROR_ATTRIBUTE) or f"{type(exc).__name__}: {exc}"


_RECORD_TYPES: dict[Step, type[StepRecord]] = {
    Step.SCRIPT: ScriptRecord,
    Step.MAPPING: MappingRecord,
    Step.WRITE_ERP: ErpRecord,
    Step.WRITE_OMNITRON: OmnitronRecord,
    Step.POST_SCRIPT: PostScriptRecord,
}


def _recorded(
    step: Step, ref: PlanRef, attributes: dict[str, str], action: Callable[[], dict[str, Any]], **fixed: Any
) -> Any:
    """Runs one step and records it: its fields from `action`, or its error with the attributes and
    log lines a script left. `fixed` are fields the record has either way."""
    started_at, clock = now()
    try:
        fields: dict[str, Any] = {"attributes": attributes, **action()}
    except Exception as exc:
        fields = {
            "attributes": getattr(exc, "attributes", attributes),
            "logs": getattr(exc, "logs", []),
            **getattr(exc, "fields", {}),
            "error": error_text(exc),
            "retryable": not isinstance(exc, UNMENDABLE),
        }
    seconds = round(time.monotonic() - clock, 6)
    return _RECORD_TYPES[step](ref=ref, started_at=started_at, seconds=seconds, **fixed, **fields)


@dataclass(frozen=True)
class Evaluation:
    """What the response evaluation made of one ERP answer."""

    relation: Relation
    attributes: dict[str, str]
    logs: list[LogLine]


@dataclass(frozen=True)
class PlanPipeline:
    """What the steps of one flow need, built once per task: compiled scripts and the Jolt chain."""

    flow: FlowConfig
    script: Script | None
    mapping: JoltMapping | None
    evaluator: ResponseEvaluator
    post_script: Script | None
    timeout: float
    """The time limit of each script run."""
    dry_run: bool = False
    check_evaluator: ResponseEvaluator | None = None
    """The query check's script (relation continue: the ERP has the plan), when it has one."""

    @classmethod
    def build(cls, flow: FlowConfig, *, dry_run: bool = False, script_timeout: float | None = None) -> PlanPipeline:
        """Compiles the flow's scripts and builds its mapping; raises ScriptError or MappingError.
        `script_timeout` can only shorten the flow's own limit (the test panels do)."""
        timeout = min(script_timeout or flow.script_timeout_seconds, flow.script_timeout_seconds)
        response_script = None
        if flow.write_erp.custom_response:
            path = flow.write_erp.response_script
            response_script = Script.from_file(path) if path else default_response_script()
        check = flow.write_erp.query_check
        return cls(
            flow=flow,
            script=Script.from_file(flow.script) if flow.script else None,
            mapping=_mapping(flow),
            evaluator=ResponseEvaluator(response_script, timeout),
            post_script=Script.from_file(flow.post_script) if flow.post_script else None,
            timeout=timeout,
            dry_run=dry_run,
            check_evaluator=ResponseEvaluator(Script.from_file(check.script), timeout)
            if check and check.script
            else None,
        )

    # -- Script Step and Mapping Step ---------------------------------------------------------
    def transform(self, item: WorkItem, extra_attributes: dict[str, str] | None = None) -> list[StepRecord]:
        """The script's and the mapping's records, up to the first that failed. `extra_attributes`
        come on top of the plan's own, as if an earlier step had set them (the test panels)."""
        records: list[StepRecord] = []
        attributes, data = {**plan_attributes(self.flow, item), **(extra_attributes or {})}, item.plan
        if item.problem is not None:
            problem = PlanDataError(item.problem, attributes, [])
            return [_recorded(Step.SCRIPT, item.ref, attributes, lambda: _raise(problem))]
        if self.script is not None:
            script: ScriptRecord = _recorded(
                Step.SCRIPT, item.ref, attributes, lambda: self._run_script(data, attributes)
            )
            records.append(script)
            if script.failed:
                return records
            attributes, data = script.attributes, script.output
        if self.mapping is not None:
            mapping = self.mapping
            records.append(_recorded(Step.MAPPING, item.ref, attributes, lambda: {"output": mapping.apply(data)}))
        return records

    def _run_script(self, data: Any, attributes: dict[str, str]) -> dict[str, Any]:
        assert self.script is not None
        run = self.script.run(json.dumps(data, ensure_ascii=False), attributes, timeout=self.timeout)
        if run.transferred == "failure":
            raise PlanDataError(
                "the script transferred the plan to REL_FAILURE", run.attributes, run.logs, transferred=run.transferred
            )
        try:
            output = json.loads(run.output_text)
        except ValueError as exc:
            message = f"the script's output is not JSON ({exc}): {run.output_text[:200]!r}"
            raise PlanDataError(message, run.attributes, run.logs, output=run.output_text) from None
        return {"output": output, "attributes": run.attributes, "logs": run.logs, "transferred": run.transferred}

    @staticmethod
    def body(progress: PlanProgress, item: WorkItem | None) -> Any:
        """The ERP request body: what the mapping (else the script) made of the plan, else the plan."""
        for step in (Step.MAPPING, Step.SCRIPT):
            record = progress.latest(step)
            if record is not None and not record.failed:
                return record.output
        return _needed(item, Stage.WRITE_ERP).plan

    # -- Write Data to ERP Step and Custom Response Script Step -------------------------------
    def evaluate(self, answer: ErpAnswer, body: Any, attributes: dict[str, str]) -> Evaluation:
        """The response evaluation of one answer: the default table, or the flow's response script."""
        relation, evaluated, logs = self.evaluator.evaluate(answer, body, attributes)
        return Evaluation(relation, evaluated, logs)

    def deliver(
        self,
        erp: ErpClient,
        ref: PlanRef,
        body: Any,
        attributes: dict[str, str],
        rejected_count: Callable[[], int],
        plan: dict[str, Any] | None = None,
    ) -> ErpRecord:
        """Send the body; on auth_fail log in again and resend, at most erp.max_auth_retries times.
        With a query check, the ERP is asked first whether it has the plan (`plan`: its fields)."""
        key = ref.idempotency_key(self.flow.flow_id)

        def send() -> dict[str, Any]:
            if self.dry_run:
                return self._dry_delivery(erp, body, key)
            if self.flow.write_erp.query_check is None:
                return self._delivery(erp, body, dict(attributes), key, rejected_count)
            asked, decided = self.query_check(erp, plan or {}, dict(attributes))
            if decided is not None:  # nothing is sent: the record keeps the request it would have been
                return {**decided, "request": self._request(erp, body, key), "query_check": asked}
            return {**self._delivery(erp, body, dict(attributes), key, rejected_count), "query_check": asked}

        return _recorded(Step.WRITE_ERP, ref, attributes, send, idempotency_key=key)

    def query_check(
        self, erp: ErpClient, plan: dict[str, Any], attributes: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """What the query check asked and learnt, and the record's fields when that decides the plan:
        accepted (the ERP has it; not sent again) or left for a later run (no answer, 5xx: never sent
        blind). None: send the plan."""
        settings = self.flow.write_erp.query_check
        assert settings is not None
        for attempt in range(self.flow.erp.max_auth_retries + 1):
            if attempt:
                erp.login()
            answer = erp.query(settings.method.value, _plan_url(settings.url, plan))
            if answer.status_code not in (401, 403):
                break
        asked = {"method": settings.method.value, "url": answer.request_url, "status_code": answer.status_code}
        fields = {"status_code": answer.status_code, "response_data": answer.body(), "no_answer": answer.error}
        if default_relation(answer.status_code) in (Relation.DO_NOTHING, Relation.AUTH_FAIL):
            why = answer.error or f"HTTP {answer.status_code}"
            logs = [("warning", f"the query check got no decision ({why}): the plan is left for a later run")]
            return {**asked, "found": None}, {**fields, "relation": Relation.DO_NOTHING.value, "logs": logs}
        found, evaluated, logs = self._found(answer, attributes)
        if not found:
            return {**asked, "found": False}, None
        logs = [
            *logs,
            ("info", f"the ERP already has this plan ({asked['url']}: {answer.status_code}): not sent again"),
        ]
        accepted = {"relation": Relation.CONTINUE.value, "attributes": {**evaluated, RELATION_ATTRIBUTE: "continue"}}
        return {**asked, "found": True}, {**fields, **accepted, "logs": logs}

    def _found(self, answer: ErpAnswer, attributes: dict[str, str]) -> tuple[bool, dict[str, str], list[LogLine]]:
        """The query check's answer read by its script (relation continue), else by its found_status."""
        settings = self.flow.write_erp.query_check
        assert settings is not None
        if self.check_evaluator is None:
            return answer.status_code in settings.found, attributes, []
        evaluation = self.check_evaluator.evaluate(answer, None, attributes)
        return evaluation[0] is Relation.CONTINUE, evaluation[1], evaluation[2]

    def _request(self, erp: ErpClient, body: Any, key: str) -> dict[str, Any]:
        settings = self.flow.write_erp
        request = erp.request_for(settings.method.value, settings.url, body, {IDEMPOTENCY_HEADER: key})
        # Kept (the record, XCom, the ledger, a dry run's log line), never sent: no credential in its URL.
        return {**request, "url": masked(request["url"]), "auth": erp.auth_description}

    def _delivery(
        self, erp: ErpClient, body: Any, attributes: dict[str, str], key: str, rejected_count: Callable[[], int]
    ) -> dict[str, Any]:
        settings = self.flow.write_erp
        if self.evaluator.script is not None:
            attributes[REJECTED_COUNT_ATTRIBUTE] = str(rejected_count())
        logs: list[LogLine] = []
        for attempt in range(self.flow.erp.max_auth_retries + 1):
            if attempt:
                erp.login()
            answer = erp.send(settings.method.value, settings.url, body, {IDEMPOTENCY_HEADER: key})
            evaluation = self.evaluate(answer, body, attributes)
            logs += evaluation.logs
            if evaluation.relation is not Relation.AUTH_FAIL:
                relation = evaluation.relation
                break
        else:
            logs.append(
                ("warning", f"the ERP refused authentication {attempt + 1} times; the plan is left for a later run")
            )
            relation = Relation.DO_NOTHING
            evaluation.attributes[RELATION_ATTRIBUTE] = relation.value
        return {
            "relation": relation.value,
            "request": self._request(erp, body, key),
            "status_code": answer.status_code,
            "response_data": answer.body(),
            "no_answer": answer.error,
            "sends": attempt + 1,
            "attributes": evaluation.attributes,
            "logs": logs,
        }

    def _dry_delivery(self, erp: ErpClient, body: Any, key: str) -> dict[str, Any]:
        request = self._request(erp, body, key)
        return {
            "relation": DRY_RUN,
            "request": request,
            "logs": [("info", f"dry run: would send {request['method']} {request['url']}")],
        }

    # -- Write Data to Omnitron Step ----------------------------------------------------------
    def write_outcome(self, omnitron: OmnitronClient, delivery: ErpRecord, *, check_first: bool) -> OmnitronRecord:
        """Report the relation to Omnitron; only an ERP-accepted plan (continue) moves forward.
        `check_first`: an earlier attempt may have written already (its answer lost with its
        worker), so Omnitron is read first and a plan it shows changed is not written again."""

        def write() -> dict[str, Any]:
            planned = omnitron_write(self.flow, delivery)
            if planned.call is None:
                return {"outcome": planned.outcome}
            found = found_in_omnitron(self.flow, omnitron, delivery.ref) if check_first else None
            if found == planned.leaves:
                return {"outcome": f"already written (found {found} in Omnitron)", "found": found}
            if found is not None:
                return {"outcome": f"changed in Omnitron to {found} meanwhile (not written)", "found": found}
            written = planned.call(omnitron)
            return {"outcome": planned.outcome, "call": written.as_dict()}

        return _recorded(Step.WRITE_OMNITRON, delivery.ref, delivery.attributes, write)

    # -- Post Script Step ----------------------------------------------------------------------
    def post(self, delivery: ErpRecord) -> PostScriptRecord:
        """Runs after a successful Omnitron write of an accepted plan; its output is not used."""
        post_script = self.post_script

        def run() -> dict[str, Any]:
            if post_script is None or delivery.relation != Relation.CONTINUE.value:
                return {"ran": False}
            variables = {"request_data": delivery.request_data, "response_data": delivery.response_data}
            run = post_script.run(
                json.dumps(variables, ensure_ascii=False),
                delivery.attributes,
                variables=variables,
                timeout=self.timeout,
            )
            return {"ran": True, "attributes": run.attributes, "logs": run.logs}

        return _recorded(Step.POST_SCRIPT, delivery.ref, delivery.attributes, run)

    # -- a plan's stages -----------------------------------------------------------------------
    @property
    def stages(self) -> list[Stage]:
        return flow_stages(self.flow)

    def run_stage(
        self,
        stage: Stage,
        progress: PlanProgress,
        clients: PlanClients,
        item: WorkItem | None = None,
        *,
        resumed: bool = False,
    ) -> PlanProgress:
        """One stage of one plan, its input taken from the progress so far. The plan itself (`item`)
        is needed by the transform, and by the ERP write of a flow with neither script nor mapping.
        `resumed`: an earlier attempt of this task may have been lost in this stage (a retry, a
        clear, a resumed batch), so what it may have written is checked first."""
        ref = progress.ref
        if stage is Stage.TRANSFORM:
            return progress.add(*self.transform(_needed(item, stage)))
        if stage is Stage.WRITE_ERP:

            def rejected_count() -> int:
                return clients.omnitron().rejected_count(ref.order_pk)

            # A flow with neither script nor mapping has no transform record: the plan's own attributes.
            attributes = progress.attributes if progress.records else plan_attributes(self.flow, _needed(item, stage))
            body = self.body(progress, item)
            plan = item.plan if item else None
            return progress.add(self.deliver(clients.erp(), ref, body, attributes, rejected_count, plan))
        delivery = progress.delivery
        if delivery is None:
            raise ValueError(f"{ref.label}: {stage.value} needs the ERP's decision first")
        if stage is Stage.WRITE_OMNITRON:
            check_first = resumed or progress.write_attempted
            return progress.add(self.write_outcome(clients.omnitron(), delivery, check_first=check_first))
        return progress.add(self.post(delivery))

    def next_stage(self, progress: PlanProgress) -> Stage | None:
        """Where a plan resumes. The ERP is never sent a plan it has decided on; a plan whose
        script or mapping failed runs again from the start, with the same input."""
        if progress.delivery is None:
            transformed = [record for record in progress.records if record.step.stage is Stage.TRANSFORM]
            return Stage.WRITE_ERP if transformed and not transformed[-1].failed else Stage.TRANSFORM
        if progress.written is None:
            return Stage.WRITE_OMNITRON
        if Stage.POST_SCRIPT in self.stages and progress.posted is None:
            return Stage.POST_SCRIPT
        return None

    def advance(
        self,
        item: WorkItem,
        progress: PlanProgress,
        clients: PlanClients,
        *,
        until: Stage | None = None,
        after_stage: Callable[[Stage, PlanProgress], None] | None = None,
        resumed: bool = False,
    ) -> PlanProgress:
        """Runs the plan's stages from where it stands, up to `until` (included), or until one fails;
        `after_stage` sees the progress after each stage (to keep it); `resumed` as in `run_stage`."""
        start = self.next_stage(progress)
        if start is None:
            return progress
        for stage in self.stages[self.stages.index(start) :]:
            done = len(progress.records)
            progress = self.run_stage(stage, progress, clients, item, resumed=resumed)
            if after_stage is not None:
                after_stage(stage, progress)
            if any(record.failed for record in progress.records[done:]) or stage is until:
                break
        return progress


def _plan_url(template: str, plan: dict[str, Any]) -> str:
    """A query check's URL: the plan's fields in str.format style ({pk}, {order[number]})."""
    try:
        return template.format_map(plan)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise PlanDataError(
            f"write_erp.query_check.url {template!r} names what the plan does not have: {exc!r}", {}, []
        ) from None


def _raise(exc: Exception) -> NoReturn:
    raise exc


def _needed(item: WorkItem | None, stage: Stage) -> WorkItem:
    if item is None:
        raise ValueError(f"the {stage.value} stage needs the plan itself")
    return item


@dataclass(frozen=True)
class OmnitronWrite:
    """What a relation means for Omnitron: the outcome in words (a short phrase, then its reason in
    parentheses where it needs one), the write to make (None: nothing is written), and what the
    write leaves in Omnitron (the status it sets, or "integration mapping"), to recognise it there."""

    outcome: str
    call: Callable[[OmnitronClient], Written] | None = None
    leaves: str | None = None


def omnitron_write(flow: FlowConfig, delivery: ErpRecord) -> OmnitronWrite:
    ref, status = delivery.ref, flow.get_data.cancel_status
    if delivery.relation == DRY_RUN:
        return OmnitronWrite("dry run (nothing written)")
    relation = Relation(str(delivery.relation))
    if relation is Relation.CONTINUE:
        if status is CancelStatus.ORDER_TRANSACTION:
            code = delivery.attributes.get(INTEGRATION_CODE_ATTRIBUTE) or str(ref.plan_pk)
            return OmnitronWrite(
                f"integration mapping {code!r} created",
                lambda omnitron: omnitron.create_mapping(_pk(ref.transaction_pk, ref), code),
                MAPPING_WRITTEN,
            )
        if status is CancelStatus.COMPLETED:
            return OmnitronWrite("delivered (completed flow: nothing written)")
        next_state = flow.write_omnitron.next_state
        if next_state is NextState.APPROVED:
            return OmnitronWrite(
                "approved",
                lambda omnitron: omnitron.approve(_pk(ref.order_pk, ref), _pk(ref.plan_pk, ref)),
                next_state.value,
            )
        return OmnitronWrite(
            f"status set to {next_state.value}",
            lambda omnitron: omnitron.update_status(_pk(ref.plan_pk, ref), next_state.value),
            next_state.value,
        )
    if relation is Relation.FAILURE and status.writes_status:
        return OmnitronWrite("rejected", lambda omnitron: omnitron.reject(_pk(ref.plan_pk, ref)), REJECTED_STATUS)
    if relation is Relation.FAILURE and status is CancelStatus.ORDER_TRANSACTION:
        return OmnitronWrite("refused by the ERP (the transaction stays unmapped and is retried by the next run)")
    if relation is Relation.FAILURE:
        return OmnitronWrite("refused by the ERP (completed flow: nothing written)")
    if status is CancelStatus.COMPLETED and not flow.get_data.retry_pending_for:
        return OmnitronWrite("untouched (completed flow: clear its write_erp task to send it again)")
    return OmnitronWrite("untouched (retried by a later run)")


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


def _mapping(flow: FlowConfig) -> JoltMapping | None:
    if flow.mapping is None:
        return None
    if isinstance(flow.mapping, Path):
        return JoltMapping(load_spec_file(flow.mapping), source=str(flow.mapping))
    return JoltMapping(flow.mapping, source=f"{flow.source}: mapping")
