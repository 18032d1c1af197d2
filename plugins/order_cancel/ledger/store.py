"""The ledger database: write attempts in bulk, find them, forget the old ones.

Any SQLAlchemy URL works; the package is tested on SQLite (the default, a file) and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from order_cancel.ledger.attempts import Attempt
from order_cancel.ledger.schema import migrate, plan_attempts

# How long a writer waits for SQLite's lock while another process writes.
SQLITE_BUSY_SECONDS = 30
DEFAULT_LIMIT = 500


@dataclass(frozen=True)
class Search:
    """What to look for; every given field must match."""

    order_number: str | None = None
    plan_pk: int | None = None
    plan_pks: Sequence[int] | None = None
    """Any of these plans (a batch's, in one query)."""
    flow_ids: Sequence[str] | None = None
    """Only these flows (None: every flow); the page passes the flows the user may read."""
    run_id: str | None = None
    relation: str | None = None
    failed: bool = False
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int | None = DEFAULT_LIMIT
    """The newest this many attempts (None: all)."""


class Ledger:
    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> Ledger:
        """The ledger at `url`, its schema created or migrated."""
        is_sqlite = url.startswith("sqlite")
        connect_args = {"timeout": SQLITE_BUSY_SECONDS} if is_sqlite else {}
        engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=not is_sqlite)
        if is_sqlite:
            sa.event.listen(engine, "connect", _sqlite_for_many_writers)
        try:
            migrate(engine)
        except SQLAlchemyError:
            # Two processes creating a new ledger at once: the one that lost finds it made.
            time.sleep(0.5)
            migrate(engine)
        return cls(engine)

    def write(self, attempts: Sequence[Attempt]) -> None:
        """Every attempt in one statement (one transaction)."""
        if not attempts:
            return
        with self.engine.begin() as connection:
            connection.execute(plan_attempts.insert(), [attempt.model_dump() for attempt in attempts])

    def find(self, search: Search) -> list[Attempt]:
        """Matching attempts, oldest first (the newest `limit` of them)."""
        query = sa.select(plan_attempts).where(*_conditions(search))
        query = query.order_by(plan_attempts.c.started_at.desc(), plan_attempts.c.id.desc())
        if search.limit is not None:
            query = query.limit(search.limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [_attempt(dict(row)) for row in reversed(rows)]

    def flows(self) -> list[str]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.select(plan_attempts.c.flow_id).distinct()).scalars())

    def forget_before(self, moment: dt.datetime) -> int:
        """Removes the attempts that ended before `moment` (the retention); answers how many."""
        with self.engine.begin() as connection:
            return connection.execute(plan_attempts.delete().where(plan_attempts.c.ended_at < moment)).rowcount


def _sqlite_for_many_writers(connection: Any, _record: Any) -> None:
    """WAL: readers never wait for the writer, and a commit costs no full sync of the file (the
    ledger is a record, not the source of truth: losing the last commits to a power cut is fine)."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _conditions(search: Search) -> list[sa.ColumnElement[bool]]:
    table, conditions = plan_attempts.c, []
    if search.order_number is not None:
        conditions.append(table.order_number == search.order_number)
    if search.plan_pk is not None:
        conditions.append(table.plan_pk == search.plan_pk)
    if search.plan_pks is not None:
        conditions.append(table.plan_pk.in_(list(search.plan_pks)))
    if search.flow_ids is not None:
        conditions.append(table.flow_id.in_(list(search.flow_ids)))
    if search.run_id is not None:
        conditions.append(table.run_id == search.run_id)
    if search.relation is not None:
        conditions.append(table.relation == search.relation)
    if search.failed:
        conditions.append(table.error.is_not(None))
    if search.since is not None:
        conditions.append(table.started_at >= _utc(search.since))
    if search.until is not None:
        conditions.append(table.started_at < _utc(search.until))
    return conditions


def _utc(moment: dt.datetime) -> dt.datetime:
    """Times are stored in UTC (SQLite keeps the wall clock only); a time without a zone is UTC."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _attempt(row: dict) -> Attempt:
    row.pop("id")
    for column in ("started_at", "ended_at"):  # SQLite gives back naive times; they were written in UTC
        if row[column].tzinfo is None:
            row[column] = row[column].replace(tzinfo=dt.UTC)
    return Attempt.model_validate(row)
