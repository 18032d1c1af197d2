"""The ledger's tables, and the migration that brings a database to the package's schema version.

The schema is versioned in `ledger_version` (one row). `migrate` creates what is missing and applies
the steps of `MIGRATIONS` above the stored version, in order, each in its own transaction; a
database of a newer version than the package is refused rather than written wrongly.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

metadata = sa.MetaData()

plan_attempts = sa.Table(
    "plan_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=False),
    sa.Column("map_index", sa.Integer, nullable=False),
    sa.Column("try_number", sa.Integer, nullable=False),
    sa.Column("dag_version", sa.String(64)),
    sa.Column("plan_pk", sa.BigInteger),
    sa.Column("order_number", sa.String(128)),
    sa.Column("transaction_pk", sa.BigInteger),
    sa.Column("idempotency_key", sa.String(400)),
    sa.Column("steps", sa.String(200), nullable=False),
    sa.Column("step_reached", sa.String(32)),
    sa.Column("relation", sa.String(32)),
    sa.Column("accepted", sa.Boolean, nullable=False),
    sa.Column("erp_status_code", sa.Integer),
    sa.Column("erp_sends", sa.Integer, nullable=False),
    sa.Column("erp_request", sa.Text),
    sa.Column("erp_answer", sa.Text),
    sa.Column("erp_no_answer", sa.Text),
    sa.Column("omnitron_outcome", sa.Text),
    sa.Column("omnitron_call", sa.Text),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("failed_step", sa.String(32)),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_plan_attempts_order", "order_number"),
    sa.Index("ix_plan_attempts_plan", "flow_id", "plan_pk"),
    sa.Index("ix_plan_attempts_started", "flow_id", "started_at"),
)

ledger_version = sa.Table("ledger_version", metadata, sa.Column("version", sa.Integer, nullable=False))


class LedgerVersionError(Exception):
    """The database holds a ledger of a newer schema than this package knows."""


# Step n brings a database from version n - 1 to version n. Version 1 is `metadata` as created.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: lambda connection: metadata.create_all(connection)}
SCHEMA_VERSION = max(MIGRATIONS)


def migrate(engine: Engine) -> int:
    """Brings the database to SCHEMA_VERSION; answers the version it found."""
    with engine.begin() as connection:
        ledger_version.create(connection, checkfirst=True)
        found = connection.execute(sa.select(ledger_version.c.version)).scalar()
        if found is None:
            connection.execute(ledger_version.insert().values(version=0))
    start = found or 0
    if start > SCHEMA_VERSION:
        raise LedgerVersionError(f"the ledger is at schema version {start}; this package knows {SCHEMA_VERSION}")
    for version in range(start + 1, SCHEMA_VERSION + 1):
        with engine.begin() as connection:
            MIGRATIONS[version](connection)
            connection.execute(ledger_version.update().values(version=version))
    return start
