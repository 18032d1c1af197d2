"""High-volume mode: the plans of one batch through the one pipeline, several at a time.

Two phases: every plan up to its ERP write, then the Omnitron writes and post scripts. Each plan
stays isolated: its records, relation and error are its own, and one plan's failure never stops
the others. What the batch achieved is a checkpoint (each plan's progress), saved after the ERP
phase and, when a plan failed, after the Omnitron phase: a retried or cleared batch resumes every
plan where it stands, so a plan the ERP decided on is never sent again and Omnitron is never
written twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from order_cancel.clients.erp import ErpClient
from order_cancel.clients.omnitron import OmnitronClient
from order_cancel.pipeline.plan import PlanProgress, Stage, StepRecord, WorkItem
from order_cancel.pipeline.steps import PlanClients, PlanPipeline

T = TypeVar("T")


def _key(item: WorkItem) -> str:
    return str(item.ref.plan_pk)


def batches(items: list[T], size: int) -> list[list[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


class BatchCheckpoint(BaseModel):
    """Each plan's progress by plan pk (a JSON object key, so a string); `finished` once the batch
    has run both phases (its failed plans then continue elsewhere)."""

    plans: dict[str, PlanProgress] = Field(default_factory=dict)
    finished: bool = False


class ThreadClients:
    """Clients per worker thread (an HTTP session is not meant to be shared between threads)."""

    def __init__(self, omnitron: Callable[[], OmnitronClient], erp: Callable[[], ErpClient]):
        self._factories = {"omnitron": omnitron, "erp": erp}
        self._local = threading.local()

    def _get(self, name: str) -> Any:
        client = getattr(self._local, name, None)
        if client is None:
            client = self._factories[name]()
            setattr(self._local, name, client)
        return client

    def omnitron(self) -> OmnitronClient:
        return self._get("omnitron")

    def erp(self) -> ErpClient:
        return self._get("erp")


@dataclass(frozen=True)
class BatchPlan:
    """One plan after this try: its whole progress, and the records this try added."""

    progress: PlanProgress
    fresh: Sequence[StepRecord]


class BatchRunner:
    def __init__(self, pipeline: PlanPipeline, clients: PlanClients, concurrency: int):
        """`clients` are shared by the batch's threads (`ThreadClients` gives each thread its own)."""
        self.pipeline = pipeline
        self.clients = clients
        self.concurrency = concurrency

    def run(
        self, items: list[WorkItem], checkpoint: BatchCheckpoint, save: Callable[[BatchCheckpoint], None]
    ) -> list[BatchPlan]:
        """Both phases for the plans the checkpoint has not finished; `save` runs in the caller's thread."""
        before = {_key(item): checkpoint.plans.get(_key(item)) or PlanProgress(ref=item.ref) for item in items}
        plans = dict(before)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            for until in (Stage.WRITE_ERP, None):
                todo = [item for item in items if self._due(plans[_key(item)], until)]
                advanced = pool.map(self._advance, todo, [plans[_key(item)] for item in todo], [until] * len(todo))
                plans.update({_key(item): progress for item, progress in zip(todo, advanced, strict=True)})
                # A plan the ERP has decided on is kept before Omnitron is written; a batch without
                # errors is finished after the Omnitron phase and its caller drops the checkpoint.
                failed = any(progress.failure for progress in plans.values())
                if until is Stage.WRITE_ERP or failed:
                    save(BatchCheckpoint(plans=plans))
        return [
            BatchPlan(plans[_key(item)], plans[_key(item)].records[len(before[_key(item)].records) :]) for item in items
        ]

    def _due(self, progress: PlanProgress, until: Stage | None) -> bool:
        """Whether a phase has work for the plan: phase one only up to the ERP write, and a plan
        that failed in phase one waits for the next try."""
        stage = self.pipeline.next_stage(progress)
        if stage is None:
            return False
        if until is Stage.WRITE_ERP:
            return stage in (Stage.TRANSFORM, Stage.WRITE_ERP)
        return progress.failure is None or stage not in (Stage.TRANSFORM, Stage.WRITE_ERP)

    def _advance(self, item: WorkItem, progress: PlanProgress, until: Stage | None) -> PlanProgress:
        return self.pipeline.advance(item, progress, self.clients, until=until)
