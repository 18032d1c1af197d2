"""The plan ledger from the tasks: the database named by the `order_cancel_ledger` connection (by
default a SQLite file under AIRFLOW_HOME), and one row per plan for each task try.

A ledger that cannot be written is logged loudly, as an error naming the database, and changes
nothing else: the plans were sent and written before their attempts are recorded.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from order_cancel.ledger.attempts import TaskTry, attempts_of
from order_cancel.ledger.location import LEDGER_CONN_ID, LedgerSettings, located
from order_cancel.ledger.store import Ledger
from order_cancel.pipeline.plan import PlanProgress, StepRecord

log = logging.getLogger(__name__)


def ledger_settings() -> LedgerSettings:
    try:
        conn = BaseHook.get_connection(LEDGER_CONN_ID)
    except AirflowNotFoundException:
        conn = None
    return located(conn)


@functools.cache
def open_ledger(settings: LedgerSettings) -> Ledger:
    """One ledger (and its connection pool) per process and database."""
    return Ledger.open(settings.connect_url)


def task_try(context: Any) -> TaskTry:
    ti = context["ti"]
    version = getattr(ti, "dag_version_id", None)
    return TaskTry(
        flow_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        map_index=ti.map_index,
        try_number=ti.try_number,
        dag_version=str(version) if version else None,
    )


def record_attempts(context: Any, plans: Sequence[tuple[PlanProgress, Sequence[StepRecord]]]) -> None:
    """This try's attempts at `plans` (each plan's progress and the records this try added), in one
    statement."""
    where = "the ledger"
    try:
        attempts = attempts_of(task_try(context), plans)
        if not attempts:
            return
        settings = ledger_settings()
        where = settings.shown
        open_ledger(settings).write(attempts)
    except Exception as exc:  # whatever the ledger's trouble, the plans' work is done and stays done
        log.error(
            "PLAN LEDGER NOT WRITTEN: %d plan(s) of this try are missing from %s: %s: %s",
            len(plans),
            where,
            type(exc).__name__,
            exc,
        )


def forget_old_attempts() -> None:
    """Applies the ledger's retention (the connection's extra `retention_days`)."""
    try:
        settings = ledger_settings()
        before = dt.datetime.now(dt.UTC) - dt.timedelta(days=settings.retention_days)
        removed = open_ledger(settings).forget_before(before)
    except Exception as exc:
        log.error("PLAN LEDGER: the retention could not be applied: %s: %s", type(exc).__name__, exc)
        return
    if removed:
        log.info("Plan ledger: %d attempt(s) older than %d days removed", removed, settings.retention_days)
