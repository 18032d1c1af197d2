"""The plan contract: who a plan is, what a run hands to its plan tasks, and what each step of the
pipeline did with it.

A step record says what one step added (its output, the plan's attributes after it, its log lines,
its error, its timing), never a copy of the steps before it. Records are JSON-ready (pydantic) and
hold no secret: the Airflow adapters keep them in XCom and the task state store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from order_cancel.pipeline.evaluation import Relation
from order_cancel.runtime.nifi_api import LogLine


class Stage(StrEnum):
    """The plan's work in task-sized pieces: in the per-step layout each is a task of its own."""

    TRANSFORM = "transform"
    WRITE_ERP = "write_erp"
    WRITE_OMNITRON = "write_omnitron"
    POST_SCRIPT = "post_script"


class Step(StrEnum):
    """The seed's per-plan steps, in order; each belongs to one stage."""

    SCRIPT = "script"
    MAPPING = "mapping"
    WRITE_ERP = "write_erp"
    WRITE_OMNITRON = "write_omnitron"
    POST_SCRIPT = "post_script"

    @property
    def stage(self) -> Stage:
        return Stage.TRANSFORM if self in (Step.SCRIPT, Step.MAPPING) else Stage(self.value)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# The fields of a plan the flow reads (PlanRef, the scripts' attributes, the watermark), dotted.
PLAN_FIELDS = ("pk", "status", "plan_type", "modified_date", "order.pk", "order.number", "order.channel")


def plan_label(plan_pk: Any, order_number: Any) -> str:
    """Who a plan is, in the grid, the logs, the run note, the ledger and the CLI: `plan 4 · order 429453004`."""
    return f"plan {plan_pk} · order {order_number}"


class PlanRef(_Record):
    """A plan's identity, small enough for every label, log line and mapped-over list."""

    plan_pk: int | None
    order_pk: int | None = None
    order_number: str | None = None
    transaction_pk: int | None = None
    # The plan's version: a changed plan is a new delivery with a new idempotency key.
    modified_date: str | None = None

    @classmethod
    def of(cls, plan: dict[str, Any], order_transaction: dict[str, Any] | None = None) -> PlanRef:
        order = plan.get("order")
        order = order if isinstance(order, dict) else {"pk": order}
        number = order.get("number")
        return cls(
            plan_pk=plan.get("pk"),
            order_pk=order.get("pk"),
            order_number=None if number is None else str(number),
            transaction_pk=order_transaction.get("pk") if order_transaction else None,
            modified_date=None if plan.get("modified_date") is None else str(plan.get("modified_date")),
        )

    @property
    def label(self) -> str:
        if self.plan_pk is None and self.transaction_pk is not None:
            return f"order transaction {self.transaction_pk}"
        return plan_label(self.plan_pk, self.order_number)

    def idempotency_key(self, flow_id: str) -> str:
        """Stable for one version of a plan: a retried or repeated send carries the same key."""
        version = hashlib.sha256(str(self.modified_date).encode()).hexdigest()[:16]
        return f"{flow_id}-{self.plan_pk}-{version}"


class WorkItem(_Record):
    """One plan of a run, as fetched: what its tasks work on."""

    ref: PlanRef
    plan: dict[str, Any]
    order_transaction: dict[str, Any] | None = None
    problem: str | None = None
    """Why there is no plan to process (an order transaction that does not lead to its order): the
    item fails with this, before its script runs."""

    @classmethod
    def of(cls, plan: dict[str, Any], order_transaction: dict[str, Any] | None = None) -> WorkItem:
        return cls(ref=PlanRef.of(plan, order_transaction), plan=plan, order_transaction=order_transaction)

    @classmethod
    def unusable(cls, order_transaction: dict[str, Any], problem: str) -> WorkItem:
        return cls(ref=PlanRef.of({}, order_transaction), plan={}, order_transaction=order_transaction, problem=problem)


class StepRecord(_Record):
    """What one step did with one plan."""

    step: Step
    ref: PlanRef
    started_at: str = ""
    seconds: float = 0.0
    """When the step started and how long it took: `pipeline.recording.recorded` sets both."""
    attributes: dict[str, str] = Field(default_factory=dict)
    """The plan's attributes after the step (NiFi attributes flow from step to step)."""
    logs: list[LogLine] = Field(default_factory=list)
    error: str | None = None
    """Why the step failed: "KeyError: 'x' (scripts/t.py:4)", "OmnitronError: ...". None = it did its work."""
    retryable: bool = False
    """Whether a retry may mend the error (a 5xx, a timeout); never for a script or spec error."""

    @property
    def failed(self) -> bool:
        return self.error is not None

    def stamped(self, started_at: str, seconds: float) -> Self:
        return self.model_copy(update={"started_at": started_at, "seconds": seconds})

    def failing(self, error: str, *, retryable: bool, attributes: dict[str, str], logs: list[LogLine]) -> Self:
        """The record of a step that failed: its error, and the attributes and log lines it left."""
        return self.model_copy(update={"error": error, "retryable": retryable, "attributes": attributes, "logs": logs})

    def said(self) -> str | None:
        """What the step did, in a few words for the task log (None: nothing worth a line)."""
        return None


class ScriptRecord(StepRecord):
    step: Literal[Step.SCRIPT] = Step.SCRIPT
    output: Any = None
    """The plan as the script left it (its output, parsed)."""
    transferred: str | None = None


class MappingRecord(StepRecord):
    step: Literal[Step.MAPPING] = Step.MAPPING
    output: Any = None
    """The ERP request body."""


class ErpRecord(StepRecord):
    step: Literal[Step.WRITE_ERP] = Step.WRITE_ERP
    idempotency_key: str
    relation: str | None = None
    """continue, failure or do_nothing (an auth_fail is resolved by re-logins); dry_run in a dry run."""
    request: dict[str, Any] | None = None
    """method, url, headers (no credential), json or params, and how it was authenticated."""
    status_code: int | None = None
    response_data: Any = None
    """The ERP's answer, JSON where it is JSON, else text, at most the client's answer limit."""
    no_answer: str | None = None
    """Why no answer came: timeout, ConnectionError, ..."""
    sends: int = 0
    query_check: dict[str, Any] | None = None
    """The query check made before sending: {"method", "url", "status_code", "found"} (found None: no decision)."""

    def said(self) -> str | None:
        answer = self.status_code if self.status_code is not None else self.no_answer
        return None if self.failed else f"ERP answered {answer}: relation {self.relation}"

    @property
    def request_data(self) -> Any:
        """The body sent: what the response and post scripts see as `request_data`."""
        request = self.request or {}
        return request.get("json", request.get("params"))


class OmnitronRecord(StepRecord):
    step: Literal[Step.WRITE_OMNITRON] = Step.WRITE_OMNITRON
    phrase: str = ""
    """What became of the plan in Omnitron, in a few words: "approved", "untouched", "dry run", ..."""
    reason: str | None = None
    """Why, where the phrase needs it: "retried by a later run", "nothing written", ..."""
    call: dict[str, Any] | None = None
    """The Omnitron call made, {"method", "path", "body", "answer"}; None when nothing was written."""
    found: str | None = None
    """What Omnitron showed when read before a write that may already have happened (a resumed
    plan): the plan's status, or "integration mapping"; None when not read or still as fetched."""

    @property
    def outcome(self) -> str:
        """The phrase, then its reason in parentheses: "untouched (retried by a later run)"."""
        return f"{self.phrase} ({self.reason})" if self.reason else self.phrase

    def said(self) -> str | None:
        return None if self.failed else f"Omnitron: {self.outcome}"


class PostScriptRecord(StepRecord):
    step: Literal[Step.POST_SCRIPT] = Step.POST_SCRIPT
    ran: bool = False

    def said(self) -> str | None:
        return None if self.failed else ("post script ran" if self.ran else "post script skipped (not accepted)")


AnyRecord = Annotated[
    ScriptRecord | MappingRecord | ErpRecord | OmnitronRecord | PostScriptRecord, Field(discriminator="step")
]
RECORDS = TypeAdapter(list[AnyRecord])


class PlanProgress(_Record):
    """A plan's records so far, oldest first: enough to resume it at the step that has not been done."""

    ref: PlanRef
    records: list[AnyRecord] = Field(default_factory=list)

    def add(self, *records: StepRecord) -> PlanProgress:
        return self.model_copy(update={"records": [*self.records, *records]})

    def latest(self, step: Step) -> Any:
        return next((record for record in reversed(self.records) if record.step is step), None)

    @property
    def failure(self) -> StepRecord | None:
        """The last record, when it failed: the plan stopped there."""
        return self.records[-1] if self.records and self.records[-1].failed else None

    @property
    def delivery(self) -> ErpRecord | None:
        """The ERP's decision on the plan, once a write (or a dry run) got one."""
        record = self.latest(Step.WRITE_ERP)
        return None if record is None or record.failed else record

    def _after_delivery(self) -> list[Any]:
        """The records after the current delivery (none without one)."""
        if self.delivery is None:
            return []
        last_delivery = max(index for index, record in enumerate(self.records) if record.step is Step.WRITE_ERP)
        return self.records[last_delivery + 1 :]

    def _done_after_delivery(self, step: Step) -> Any:
        """The latest successful record of `step` that came after the current delivery."""
        later = self._after_delivery()
        return next((record for record in reversed(later) if record.step is step and not record.failed), None)

    @property
    def written(self) -> OmnitronRecord | None:
        """Omnitron's write for the current delivery, once done."""
        return self._done_after_delivery(Step.WRITE_OMNITRON)

    @property
    def write_attempted(self) -> bool:
        """Whether an Omnitron write for the current delivery was tried and failed: it may have
        taken effect without its answer (a timeout, a 5xx after the commit)."""
        return any(record.step is Step.WRITE_OMNITRON for record in self._after_delivery())

    @property
    def posted(self) -> PostScriptRecord | None:
        return self._done_after_delivery(Step.POST_SCRIPT)

    @property
    def undecided(self) -> bool:
        """The ERP has not decided on the plan and trying again may change that: it answered
        do_nothing, or the plan stopped before an answer for a reason a retry may mend (a killed
        task leaves no record at all). A script or spec error is not: it fails the same way again."""
        delivery, failure = self.delivery, self.failure
        if delivery is not None:
            return delivery.relation == Relation.DO_NOTHING
        return failure is None or failure.retryable

    @property
    def attributes(self) -> dict[str, str]:
        return self.records[-1].attributes if self.records else {}


def now() -> tuple[str, float]:
    """A step's start: the wall-clock time for its record, and a monotonic clock for its duration."""
    return dt.datetime.now(dt.UTC).isoformat(), time.monotonic()
