"""Response evaluation: what the ERP's answer means for a plan (its relation).

Either the default table of the Integrator, or the flow's response script, which must set the
`relation` attribute. Both are pure: they see the answer and the attributes, and call nothing.
"""

from __future__ import annotations

from enum import StrEnum
from importlib import resources
from typing import Any

from order_cancel.clients.erp import ErpAnswer
from order_cancel.pipeline.invokehttp import invokehttp_attributes
from order_cancel.runtime.scripts import Script

RELATION_ATTRIBUTE = "relation"
# How many rejected plans the order has: the flow asks Omnitron, for response scripts only.
REJECTED_COUNT_ATTRIBUTE = "rejected_count"
# The Integrator's default response script template: a user's script like any other, so it is
# package data of the script runtime, not of this module.
DEFAULT_RESPONSE_TEMPLATE = "default_response.py"
TEMPLATES_PACKAGE = "order_cancel.runtime"


class Relation(StrEnum):
    CONTINUE = "continue"
    FAILURE = "failure"
    DO_NOTHING = "do_nothing"
    AUTH_FAIL = "auth_fail"


class EvaluationError(ValueError):
    """The response script gave no relation, or one the flow does not know. `attributes` and
    `logs` are what the script left."""

    def __init__(self, message: str, attributes: dict[str, str], logs: list[tuple[str, str]]):
        super().__init__(message)
        self.attributes = attributes
        self.logs = logs


def default_response_script() -> Script:
    """The template a flow with custom_response and no response_script runs."""
    source = (
        resources.files(TEMPLATES_PACKAGE)
        .joinpath("templates")
        .joinpath(DEFAULT_RESPONSE_TEMPLATE)
        .read_text(encoding="utf-8")
    )
    return Script(source, DEFAULT_RESPONSE_TEMPLATE)


def default_relation(status_code: int | None) -> Relation:
    """The default table: 2xx continue; 401/403 auth_fail; 408/429/5xx/no answer do_nothing; other 4xx failure."""
    if status_code is None or status_code in (408, 429) or status_code >= 500:
        return Relation.DO_NOTHING
    if 200 <= status_code < 300:
        return Relation.CONTINUE
    if status_code in (401, 403):
        return Relation.AUTH_FAIL
    if 400 <= status_code < 500:
        return Relation.FAILURE
    # 1xx and 3xx are not an acceptance: leave the plan for a later run.
    return Relation.DO_NOTHING


def parse_relation(attributes: dict[str, str], logs: list[tuple[str, str]]) -> Relation:
    value = attributes.get(RELATION_ATTRIBUTE)
    try:
        return Relation(str(value))
    except ValueError:
        known = ", ".join(relation.value for relation in Relation)
        message = f"the response script set relation={value!r}; it must set one of: {known}"
        raise EvaluationError(message, attributes, logs) from None


class ResponseEvaluator:
    """Decides relations for the plans of one task; the response script is compiled once."""

    def __init__(self, script: Script | None, timeout: float):
        self.script = script
        self.timeout = timeout

    def evaluate(
        self, answer: ErpAnswer, request_data: Any, attributes: dict[str, str]
    ) -> tuple[Relation, dict[str, str], list[tuple[str, str]]]:
        """The relation, the attributes after evaluation, and what the script logged."""
        attributes = {**attributes, **invokehttp_attributes(answer)}
        # As with NiFi's InvokeHTTP, a request that got no answer never reaches the response
        # script: it is left for a later run.
        if self.script is None or answer.status_code is None:
            relation = default_relation(answer.status_code)
            attributes[RELATION_ATTRIBUTE] = relation.value
            return relation, attributes, []
        run = self.script.run(
            answer.text,
            attributes,
            variables={"request_data": request_data, "response_data": answer.body()},
            timeout=self.timeout,
        )
        return parse_relation(run.attributes, run.logs), run.attributes, run.logs
