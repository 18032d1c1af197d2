"""High-volume mode: the plans of one batch through the one pipeline, several at a time.

Two phases: every plan up to its ERP write, then the Omnitron writes and post scripts. Each plan
stays isolated: its records, relation and error are its own, and one plan's failure never stops
the others. A plan's progress is kept as soon as the ERP has decided on it and as soon as Omnitron
has answered (`GroupCommit`: several plans per write): the ERP's decision before the plan's thread
sends another plan, what comes after it with the next write, without holding the thread. A batch
whose worker was lost resumes every plan where it was kept: the ERP gets again only the plans that
were in flight (at most `concurrency`), and every plan not kept as written is read in Omnitron
before it is written (`resumed`).
"""

from __future__ import annotations

import threading
import time
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
# How long the thread that writes a group of plans waits for the other threads' plans: fewer writes
# for a moment of one thread's time (the others go on meanwhile).
GATHER_SECONDS = 0.01


def _key(item: WorkItem) -> str:
    return str(item.ref.plan_pk)


def batches(items: list[T], size: int) -> list[list[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


class BatchCheckpoint(BaseModel):
    """Each plan's progress by plan pk (a JSON object key, so a string); `finished` once the batch
    has run both phases (its failed plans then continue elsewhere)."""

    plans: dict[str, PlanProgress] = Field(default_factory=dict)
    finished: bool = False


class GroupCommit:
    """Keeps each plan's latest progress durably, several plans per write, one write at a time (the
    Task SDK's in-process calls under `dag.test()` are not thread-safe).

    `keep(progress)` returns once the plan's progress is written: the thread that writes waits a
    moment for the other threads' plans (up to `group` of them), and plans that come while it writes
    gather for the next write. `keep(progress, wait=False)` queues the plan for the next write and
    returns at once (the thread writes only when no other thread is writing); `flush` returns once
    everything queued is written."""

    def __init__(self, write: Callable[[dict[str, PlanProgress]], None], group: int = 1, gather_seconds: float = 0.0):
        self._write = write
        self._group, self._gather_seconds = group, gather_seconds
        self._changed = threading.Condition()
        self._pending: dict[str, PlanProgress] = {}
        self._queued = self._durable = 0
        self._writing = False
        self._error: BaseException | None = None

    def keep(self, progress: PlanProgress, *, wait: bool = True) -> None:
        with self._changed:
            self._pending[str(progress.ref.plan_pk)] = progress
            self._queued += 1
            self._changed.notify_all()  # a writer gathering a group may take this plan too
            if wait:
                self._until(self._queued, gather=True)
            elif not self._writing:
                self._write_pending(gather=False)

    def flush(self) -> None:
        with self._changed:
            self._until(self._queued, gather=False)

    def _until(self, queued: int, *, gather: bool) -> None:
        """Writes, or waits for the writes of others, until the first `queued` plans are written."""
        while self._durable < queued:
            if self._error is not None:
                raise RuntimeError(f"the batch's progress could not be kept: {self._error}") from self._error
            if self._writing:
                self._changed.wait()
            else:
                self._write_pending(gather=gather)

    def _write_pending(self, *, gather: bool) -> None:
        """Writes what is pending (called holding the lock; released while writing)."""
        self._writing = True
        if gather:
            self._gather()
        group, self._pending, upto = self._pending, {}, self._queued
        self._changed.release()
        try:
            self._write(group)
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._changed.acquire()
            self._writing = False
            if self._error is None:
                self._durable = upto
            self._changed.notify_all()

    def _gather(self) -> None:
        """Waits a moment for the plans of the other threads, to write them in the same group."""
        deadline = time.monotonic() + self._gather_seconds
        while len(self._pending) < self._group and (left := deadline - time.monotonic()) > 0:
            self._changed.wait(left)


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
        self,
        items: list[WorkItem],
        checkpoint: BatchCheckpoint,
        keep: Callable[[dict[str, PlanProgress]], None],
        *,
        resumed: bool = False,
    ) -> list[BatchPlan]:
        """Both phases for the plans the checkpoint has not finished. `keep` writes a group of plans'
        progress durably (from the batch's threads, one group at a time); every plan's progress has
        been kept when this returns. `resumed`: the checkpoint comes from a lost or cleared try."""
        before = {_key(item): checkpoint.plans.get(_key(item)) or PlanProgress(ref=item.ref) for item in items}
        plans = dict(before)
        commit = GroupCommit(keep, group=self.concurrency, gather_seconds=GATHER_SECONDS)

        def advance(item: WorkItem, until: Stage | None) -> PlanProgress:
            def kept(stage: Stage, progress: PlanProgress) -> None:
                # A transform is cheap to run again, with the same input. The ERP's decision is kept
                # before the thread sends another plan; what comes after it goes with the next
                # write (a plan whose Omnitron answer is lost with the worker is read first).
                if stage is Stage.WRITE_ERP:
                    commit.keep(progress)
                elif stage is not Stage.TRANSFORM:
                    commit.keep(progress, wait=False)

            progress = plans[_key(item)]
            return self.pipeline.advance(item, progress, self.clients, until=until, after_stage=kept, resumed=resumed)

        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            for until in (Stage.WRITE_ERP, None):
                todo = [item for item in items if self._due(plans[_key(item)], until)]
                advanced = pool.map(advance, todo, [until] * len(todo))
                plans.update({_key(item): progress for item, progress in zip(todo, advanced, strict=True)})
        finally:
            # Interrupted (Airflow's execution_timeout): the plans in flight end, no other starts.
            pool.shutdown(cancel_futures=True)
        commit.flush()
        # The plans that ended in their transform: kept too, so that the checkpoint names every plan.
        untouched = {key: progress for key, progress in plans.items() if progress.records and not _kept(progress)}
        if untouched:
            keep(untouched)
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


def _kept(progress: PlanProgress) -> bool:
    """Whether a stage that keeps the plan's progress has run (every stage after the transform)."""
    return any(record.step.stage is not Stage.TRANSFORM for record in progress.records)
