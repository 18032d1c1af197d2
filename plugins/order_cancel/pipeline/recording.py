"""How a step of the pipeline is recorded: a step never raises for a plan's failure, it returns its
record with the error, and says whether a retry may mend it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from order_cancel.clients.erp import ErpLoginRefused
from order_cancel.clients.omnitron import OmnitronLoginError
from order_cancel.pipeline.evaluation import EvaluationError
from order_cancel.pipeline.plan import StepRecord, now
from order_cancel.runtime.jolt import MappingError
from order_cancel.runtime.nifi_api import ERROR_ATTRIBUTE, LogLine
from order_cancel.runtime.scripts import ScriptError

R = TypeVar("R", bound=StepRecord)


class PlanDataError(ValueError):
    """A plan (or what a script made of it) cannot be processed; retrying will not help. It keeps
    the attributes and log lines the step had made, for the step's record."""

    def __init__(self, message: str, attributes: dict[str, str], logs: list[LogLine]):
        super().__init__(message)
        self.attributes = attributes
        self.logs = logs


# Failures that the same input meets again on a retry.
UNMENDABLE = (ScriptError, MappingError, EvaluationError, PlanDataError, OmnitronLoginError, ErpLoginRefused)


def error_text(exc: BaseException) -> str:
    """A failure in one line: a script's own `log.script.error` (type, message, file and line), or the exception."""
    return getattr(exc, "attributes", {}).get(ERROR_ATTRIBUTE) or f"{type(exc).__name__}: {exc}"


def failed(record: R, exc: Exception) -> R:
    """`record` (what the step had made) failed with `exc`, keeping the attributes and log lines a
    script left."""
    return record.failing(
        error_text(exc),
        retryable=not isinstance(exc, UNMENDABLE),
        attributes=getattr(exc, "attributes", record.attributes),
        logs=getattr(exc, "logs", []),
    )


def recorded(blank: R, action: Callable[[], R]) -> R:
    """Runs one step and stamps its record with the step's start and duration. `blank` is the
    record before the step (who, the attributes it starts with, the fields it has either way): the
    failed record if `action` raises."""
    started_at, clock = now()
    try:
        record = action()
    except Exception as exc:
        record = failed(blank, exc)
    return record.stamped(started_at, round(time.monotonic() - clock, 6))
