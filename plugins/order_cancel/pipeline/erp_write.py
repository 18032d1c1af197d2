"""Write Data to ERP with the response evaluation: the query check, the request, the delivery (a dry
one in a dry run), and the re-login on a refused authentication that the check and the delivery share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from order_cancel.clients.erp import IDEMPOTENCY_HEADER, ErpAnswer, ErpClient
from order_cancel.clients.http import masked
from order_cancel.flows.models import FlowConfig
from order_cancel.pipeline.evaluation import (
    REJECTED_COUNT_ATTRIBUTE,
    RELATION_ATTRIBUTE,
    Relation,
    ResponseEvaluator,
    default_relation,
    default_response_script,
)
from order_cancel.pipeline.plan import ErpRecord, PlanRef
from order_cancel.pipeline.recording import PlanDataError, recorded
from order_cancel.runtime.nifi_api import LogLine
from order_cancel.runtime.scripts import Script

DRY_RUN = "dry_run"
T = TypeVar("T")


@dataclass(frozen=True)
class Evaluation:
    """What the response evaluation made of one ERP answer."""

    relation: Relation
    attributes: dict[str, str]
    logs: list[LogLine]


@dataclass(frozen=True)
class QueryCheck:
    """What the query check asked and learnt: `found` True (the ERP has the plan: not sent again),
    False (send it), None (no answer, a 5xx, a refused login: no decision, never sent blind). The
    attributes and log lines are the record's when the check decides."""

    method: str
    answer: ErpAnswer
    found: bool | None
    attributes: dict[str, str]
    logs: list[LogLine]

    @property
    def asked(self) -> dict[str, Any]:
        """The ERP record's `query_check`."""
        answer = self.answer
        return {
            "method": self.method,
            "url": answer.request_url,
            "status_code": answer.status_code,
            "found": self.found,
        }


@dataclass(frozen=True)
class ErpWrite:
    """The ERP side of one flow's pipeline, built once per task."""

    flow: FlowConfig
    evaluator: ResponseEvaluator
    check_evaluator: ResponseEvaluator | None = None
    """The query check's script (relation continue: the ERP has the plan), when it has one."""
    dry_run: bool = False

    @classmethod
    def build(cls, flow: FlowConfig, timeout: float, *, dry_run: bool = False) -> ErpWrite:
        """Compiles the response and query check scripts; raises ScriptError."""
        response_script = None
        if flow.write_erp.custom_response:
            path = flow.write_erp.response_script
            response_script = Script.from_file(path) if path else default_response_script()
        check = flow.write_erp.query_check
        check_script = Script.from_file(check.script) if check and check.script else None
        return cls(
            flow=flow,
            evaluator=ResponseEvaluator(response_script, timeout),
            check_evaluator=ResponseEvaluator(check_script, timeout) if check_script else None,
            dry_run=dry_run,
        )

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
        blank = ErpRecord(ref=ref, idempotency_key=ref.idempotency_key(self.flow.flow_id), attributes=attributes)

        def send() -> ErpRecord:
            if self.dry_run:
                return self._dry_delivery(blank, erp, body)
            if self.flow.write_erp.query_check is None:
                return self._delivery(blank, erp, body, rejected_count)
            check = self.query_check(erp, plan or {}, dict(attributes))
            if check.found is False:
                return self._delivery(blank, erp, body, rejected_count, check.asked)
            return self._decided(blank, check, self._request(erp, body, blank.idempotency_key))

        return recorded(blank, send)

    def query_check(self, erp: ErpClient, plan: dict[str, Any], attributes: dict[str, str]) -> QueryCheck:
        """Asks the ERP whether it has the plan, logging in again while it refuses us."""
        settings = self.flow.write_erp.query_check
        assert settings is not None
        url = _plan_url(settings.url, plan)
        answer, _ = self._relogged(
            erp, lambda: erp.query(settings.method.value, url), lambda answer: answer.status_code in (401, 403)
        )
        method = settings.method.value
        if default_relation(answer.status_code) in (Relation.DO_NOTHING, Relation.AUTH_FAIL):
            why = answer.error or f"HTTP {answer.status_code}"
            logs = [("warning", f"the query check got no decision ({why}): the plan is left for a later run")]
            return QueryCheck(method, answer, None, attributes, logs)
        found, evaluated, logs = self._found(answer, attributes)
        if not found:
            return QueryCheck(method, answer, False, attributes, [])
        logs = [
            *logs,
            ("info", f"the ERP already has this plan ({answer.request_url}: {answer.status_code}): not sent again"),
        ]
        return QueryCheck(method, answer, True, {**evaluated, RELATION_ATTRIBUTE: "continue"}, logs)

    def _found(self, answer: ErpAnswer, attributes: dict[str, str]) -> tuple[bool, dict[str, str], list[LogLine]]:
        """The query check's answer read by its script (relation continue), else by its found_status."""
        settings = self.flow.write_erp.query_check
        assert settings is not None
        if self.check_evaluator is None:
            return answer.status_code in settings.found, attributes, []
        relation, evaluated, logs = self.check_evaluator.evaluate(answer, None, attributes)
        return relation is Relation.CONTINUE, evaluated, logs

    def _relogged(self, erp: ErpClient, ask: Callable[[], T], refused: Callable[[T], bool]) -> tuple[T, int]:
        """Asks, and while the ERP refuses our credentials logs in again and asks again, at most
        erp.max_auth_retries times: the last answer, and how many times it was asked."""
        asks = self.flow.erp.max_auth_retries + 1
        for attempt in range(asks):
            if attempt:
                erp.login()
            answer = ask()
            if not refused(answer):
                return answer, attempt + 1
        return answer, asks

    def _request(self, erp: ErpClient, body: Any, key: str) -> dict[str, Any]:
        settings = self.flow.write_erp
        request = erp.request_for(settings.method.value, settings.url, body, {IDEMPOTENCY_HEADER: key})
        # Kept (the record, XCom, the ledger, a dry run's log line), never sent: no credential in its URL.
        return {**request, "url": masked(request["url"]), "auth": erp.auth_description}

    def _decided(self, blank: ErpRecord, check: QueryCheck, request: dict[str, Any]) -> ErpRecord:
        """The query check decided: nothing is sent, and the record keeps the request it would have been."""
        answer = check.answer
        return ErpRecord(
            ref=blank.ref,
            idempotency_key=blank.idempotency_key,
            relation=(Relation.CONTINUE if check.found else Relation.DO_NOTHING).value,
            request=request,
            status_code=answer.status_code,
            response_data=answer.body(),
            no_answer=answer.error,
            query_check=check.asked,
            attributes=check.attributes,
            logs=check.logs,
        )

    def _delivery(
        self,
        blank: ErpRecord,
        erp: ErpClient,
        body: Any,
        rejected_count: Callable[[], int],
        query_check: dict[str, Any] | None = None,
    ) -> ErpRecord:
        settings = self.flow.write_erp
        attributes = dict(blank.attributes)
        if self.evaluator.script is not None:
            attributes[REJECTED_COUNT_ATTRIBUTE] = str(rejected_count())
        logs: list[LogLine] = []

        def send() -> tuple[ErpAnswer, Evaluation]:
            answer = erp.send(settings.method.value, settings.url, body, {IDEMPOTENCY_HEADER: blank.idempotency_key})
            evaluation = self.evaluate(answer, body, attributes)
            logs.extend(evaluation.logs)
            return answer, evaluation

        (answer, evaluation), sends = self._relogged(erp, send, lambda sent: sent[1].relation is Relation.AUTH_FAIL)
        relation = evaluation.relation
        if relation is Relation.AUTH_FAIL:
            logs.append(("warning", f"the ERP refused authentication {sends} times; the plan is left for a later run"))
            relation = Relation.DO_NOTHING
            evaluation.attributes[RELATION_ATTRIBUTE] = relation.value
        return ErpRecord(
            ref=blank.ref,
            idempotency_key=blank.idempotency_key,
            relation=relation.value,
            request=self._request(erp, body, blank.idempotency_key),
            status_code=answer.status_code,
            response_data=answer.body(),
            no_answer=answer.error,
            sends=sends,
            query_check=query_check,
            attributes=evaluation.attributes,
            logs=logs,
        )

    def _dry_delivery(self, blank: ErpRecord, erp: ErpClient, body: Any) -> ErpRecord:
        request = self._request(erp, body, blank.idempotency_key)
        return ErpRecord(
            ref=blank.ref,
            idempotency_key=blank.idempotency_key,
            relation=DRY_RUN,
            request=request,
            attributes=blank.attributes,
            logs=[("info", f"dry run: would send {request['method']} {request['url']}")],
        )


def _plan_url(template: str, plan: dict[str, Any]) -> str:
    """A query check's URL: the plan's fields in str.format style ({pk}, {order[number]})."""
    try:
        return template.format_map(plan)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise PlanDataError(
            f"write_erp.query_check.url {template!r} names what the plan does not have: {exc!r}", {}, []
        ) from None
