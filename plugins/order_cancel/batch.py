"""High-volume mode: one mapped task per batch of plans instead of one per plan.

A batch runs the same per-plan steps (`plan_steps`) for its plans concurrently, in two phases:
transform and ERP write, then the Omnitron write and post script. Each plan stays isolated: its
failure, relation and log lines are its own, and one plan's error never stops the others.

Airflow clears a task's XComs when it is retried, so what a batch has achieved is kept in a
checkpoint (an Airflow Variable per run and batch), written after the ERP phase and, when a plan
failed, after the Omnitron phase. A retried or cleared batch reads it back and neither re-sends a
plan the ERP already accepted nor writes Omnitron twice; only its failed plans run again, from their
failed step (a failed post script runs again alone). The checkpoint is removed once every plan of
the batch is done.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from order_cancel.erp import ErpClient
from order_cancel.omnitron import OmnitronClient
from order_cancel.plan_steps import FlowSteps
from order_cancel.scripting import logged_attributes


def checkpoint_key(flow_id: str, run_id: str, batch_index: int) -> str:
    return f"order_cancel.{flow_id}.batch_checkpoint.{run_id}.{batch_index}"


def batches(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


@dataclass
class Checkpoint:
    """Per plan pk: the ERP delivery (phase 1 done) and the Omnitron result (phase 2 done), and the
    plans whose post script failed after Omnitron was written (a retry runs only their post script)."""

    delivered: dict[str, dict[str, Any]] = field(default_factory=dict)
    written: dict[str, dict[str, Any]] = field(default_factory=dict)
    post_script_due: list[str] = field(default_factory=list)

    @classmethod
    def loads(cls, text: str | None) -> Checkpoint:
        return cls(**json.loads(text)) if text else cls()

    def dumps(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class PlanOutcome:
    """What became of one plan of a batch; `error` names the step that failed."""

    ref: dict[str, Any]
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)

    def log_lines(self) -> list[tuple[str, str]]:
        """What the batch's log shows of this plan: its script lines, its log.* attributes, its end."""
        if self.error:
            return self.logs + [("error", f"failed at {self.error['step']}: {self.error['error']}")]
        result = self.result or {}
        ending = ("info", f"{result.get('relation')}, Omnitron: {result.get('omnitron')}")
        return self.logs + _attribute_lines(result.get("attributes", {})) + [ending]


def _plan_key(item: dict[str, Any]) -> str:
    return str(item["ref"]["plan_pk"])  # a JSON object key, as the checkpoint stores it


def per_thread(factory: Callable[[], Any]) -> Callable[[], Any]:
    """One object per worker thread (an HTTP session is not meant to be shared between threads)."""
    local = threading.local()

    def get() -> Any:
        if not hasattr(local, "value"):
            local.value = factory()
        return local.value

    return get


def _attribute_lines(attributes: dict[str, str]) -> list[tuple[str, str]]:
    return [("info", f"{key} = {value}") for key, value in logged_attributes(attributes).items()]


def _run(ref: dict[str, Any], step: str, action: Callable[[], dict[str, Any]]) -> PlanOutcome:
    """One step of one plan; an exception becomes that plan's error, with its log.* attributes kept.

    The attributes travel from step to step, so a successful plan's log.* attributes are logged
    once, from its last result (`PlanOutcome.log_lines`), not after every step.
    """
    try:
        result = action()
    except Exception as exc:
        attributes = getattr(exc, "attributes", {})
        reason = attributes.get("log.script.error") or f"{type(exc).__name__}: {exc}"
        return PlanOutcome(ref, error={"ref": ref, "step": step, "error": reason}, logs=_attribute_lines(attributes))
    return PlanOutcome(ref, result=result, logs=result.pop("logs", []))


class BatchRunner:
    """Runs one batch; clients come from factories because each worker thread needs its own session."""

    def __init__(
        self,
        steps: FlowSteps,
        omnitron: Callable[[], OmnitronClient],
        erp: Callable[[], ErpClient],
        concurrency: int,
    ):
        self.steps = steps
        self.omnitron = omnitron
        self.erp = erp
        self.concurrency = concurrency

    def deliver(self, item: dict[str, Any]) -> PlanOutcome:
        ref = item["ref"]
        prepared = _run(ref, "transform", lambda: self.steps.transform(item))
        if prepared.error:
            return prepared
        omnitron = self.omnitron()
        delivered = _run(
            ref,
            "write_erp",
            lambda: self.steps.deliver(self.erp(), prepared.result, lambda: omnitron.rejected_count(ref["order_pk"])),
        )
        return PlanOutcome(ref, delivered.result, delivered.error, prepared.logs + delivered.logs)

    def write(self, delivery: dict[str, Any]) -> PlanOutcome:
        ref = delivery["ref"]
        written = _run(ref, "write_omnitron", lambda: self.steps.write_outcome(self.omnitron(), dict(delivery)))
        if written.error:
            return written
        posted = self.post(written.result)
        return PlanOutcome(ref, posted.result, posted.error, written.logs + posted.logs)

    def post(self, written: dict[str, Any]) -> PlanOutcome:
        """The post script; when it fails, the outcome keeps the Omnitron result it ran after."""
        posted = _run(written["ref"], "post_script", lambda: self.steps.run_post_script(dict(written)))
        return PlanOutcome(written["ref"], posted.result or written, posted.error, posted.logs)

    def run(self, items: list[dict[str, Any]], checkpoint: Checkpoint, save: Callable[[Checkpoint], None]) -> list[PlanOutcome]:
        """Both phases for the plans the checkpoint has not finished; `save` runs in the caller's thread.

        The checkpoint is saved after the ERP phase, and after the Omnitron phase only if a plan
        failed: a batch without errors is finished and its caller deletes the checkpoint.
        """
        key = _plan_key
        todo = [item for item in items if key(item) not in checkpoint.delivered]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            phase_one = {key(item): outcome for item, outcome in zip(todo, pool.map(self.deliver, todo))}
            for pk, outcome in phase_one.items():
                if outcome.result is not None:
                    checkpoint.delivered[pk] = outcome.result
            save(checkpoint)
            waiting = [pk for pk in checkpoint.delivered if pk not in checkpoint.written]
            phase_two = dict(zip(waiting, pool.map(self.write, [checkpoint.delivered[pk] for pk in waiting])))
            due = checkpoint.post_script_due
            phase_two.update(zip(due, pool.map(self.post, [checkpoint.written[pk] for pk in due])))
            # Omnitron was written even when only the post script failed: never write it twice.
            failed_posts = [pk for pk, outcome in phase_two.items() if (outcome.error or {}).get("step") == "post_script"]
            for pk, outcome in phase_two.items():
                if outcome.error is None or pk in failed_posts:
                    checkpoint.written[pk] = outcome.result
            checkpoint.post_script_due = failed_posts
        outcomes = []
        for item in items:
            pk = key(item)
            first, second = phase_one.get(pk), phase_two.get(pk)
            if pk in checkpoint.written and second is None:
                outcomes.append(PlanOutcome(item["ref"], checkpoint.written[pk], logs=[("info", "done in an earlier try")]))
            elif second is not None:
                outcomes.append(PlanOutcome(second.ref, second.result, second.error, (first.logs if first else []) + second.logs))
            else:
                outcomes.append(first)
        if any(outcome.error for outcome in outcomes):
            save(checkpoint)
        return outcomes
