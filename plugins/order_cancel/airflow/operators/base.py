"""What every operator of a flow shares: its flow, the failures that skip retries, dry runs, the
hooks of the run, and writing a plan's lines to the task log."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from order_cancel.airflow.hooks import ErpHook, OmnitronHook
from order_cancel.clients.connection import ConnectionSettingsError
from order_cancel.clients.tokens import tokens_for
from order_cancel.flows.models import FlowConfig
from order_cancel.pipeline import recording
from order_cancel.pipeline.batch import ThreadClients
from order_cancel.pipeline.erp_write import DRY_RUN
from order_cancel.pipeline.plan import PlanProgress, StepRecord
from order_cancel.pipeline.steps import PlanPipeline
from order_cancel.runtime.nifi_api import logged_attributes

# Failures that a retry cannot mend: the task fails at once, without its retries. Scripts and specs
# (of any kind: syntax, exception, time limit, bad output), refused credentials, a connection that
# is not defined or has no host. Timeouts, 5xx and refused connections keep their retries.
UNMENDABLE = (*recording.UNMENDABLE, AirflowNotFoundException, ConnectionSettingsError)


@contextlib.contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Keeps Python's garbage collector off the objects that existed before the block.

    A task that holds hundreds of plans makes the collector walk its oldest generation, which in an
    Airflow task process holds every imported module, once or twice per few hundred plans, longer
    than the plans' HTTP work. Frozen, those objects are skipped (`gc.freeze`); the block's own
    garbage is still collected.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def is_dry_run(flow: FlowConfig, context: Any) -> bool:
    """A dry run is asked for by the flow file or by the run's conf: {"dry_run": true}."""
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    return flow.dry_run or bool(conf.get(DRY_RUN))


class FlowOperator(BaseOperator):
    """An operator that belongs to one flow file. Subclasses implement `run`; a failure that a
    retry cannot mend (`UNMENDABLE`) fails the task without its retries."""

    ui_color = "#e8f0fe"

    def __init__(self, *, flow: FlowConfig, **kwargs: Any):
        super().__init__(**kwargs)
        self.flow = flow

    def execute(self, context: Any) -> Any:
        try:
            return self.run(context)
        except UNMENDABLE as exc:
            raise AirflowFailException(f"{exc} (not retried: a retry cannot mend this)") from exc

    def run(self, context: Any) -> Any:
        raise NotImplementedError

    # -- what the tasks of a run share ---------------------------------------------------------
    def omnitron_hook(self, context: Any) -> OmnitronHook:
        settings = self.flow.omnitron
        return OmnitronHook(settings.conn_id, timeout=settings.timeout_seconds, tokens=tokens_for(context["run_id"]))

    def erp_hook(self, context: Any) -> ErpHook:
        settings = self.flow.erp
        return ErpHook(
            settings.conn_id,
            login=settings.login,
            timeout=settings.timeout_seconds,
            tokens=tokens_for(context["run_id"]),
        )

    def plan_clients(self, context: Any) -> ThreadClients:
        """The clients of a plan's steps (one per thread), reading each connection once."""
        return ThreadClients(self.omnitron_hook(context).client_factory(), self.erp_hook(context).client_factory())

    def pipeline(self, context: Any) -> PlanPipeline:
        return PlanPipeline.build(self.flow, dry_run=is_dry_run(self.flow, context))

    def log_plan(self, progress: PlanProgress, records: Sequence[StepRecord], *, prefix: str = "") -> None:
        """What a plan did in this try: its scripts' lines, its log.* attributes once, its end."""
        if not records:
            self.log.info("%sdone in an earlier try", prefix)
            return
        for record in records:
            for level, message in record.logs:
                self.log.log(_level(level), "%sscript: %s", prefix, message)
            if said := record.said():
                self.log.info("%s%s", prefix, said)
        for key, value in logged_attributes(progress.attributes).items():
            self.log.info("%s%s = %s", prefix, key, value)
        failure = progress.failure
        if failure is not None:
            self.log.error("%sfailed at %s: %s", prefix, failure.step.stage.value, failure.error)


def _level(name: str) -> int:
    return logging.getLevelNamesMapping().get(name.upper(), logging.INFO)
