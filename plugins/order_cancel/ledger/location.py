"""Where the ledger is: the Airflow connection `order_cancel_ledger`, else a SQLite file under
AIRFLOW_HOME.

    conn_type sqlite:    host = the file's path
    conn_type postgres:  host, port, login, password, schema (the database)
    extra:               {"retention_days": 90}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from order_cancel.clients.connection import ConnectionFields

LEDGER_CONN_ID = "order_cancel_ledger"
LEDGER_FILE = "order_cancel_ledger.db"
DEFAULT_RETENTION_DAYS = 90
_POSTGRES = ("postgres", "postgresql")
# The PostgreSQL driver the package installs (SQLAlchemy 2.1 would take psycopg 3 for postgresql://).
POSTGRES_DRIVER = "postgresql+psycopg2"


class LedgerSettingsError(Exception):
    """The ledger connection cannot name a database."""


@dataclass(frozen=True)
class LedgerSettings:
    url: URL
    retention_days: int = DEFAULT_RETENTION_DAYS
    origin: str = field(default="default", compare=False)

    @property
    def shown(self) -> str:
        """The database, for logs and messages: never its password."""
        return self.url.render_as_string(hide_password=True)

    @property
    def connect_url(self) -> str:
        """The database to connect to, with its password: for the ledger's engine, never shown."""
        return self.url.render_as_string(hide_password=False)


def airflow_home(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("AIRFLOW_HOME", "~/airflow")


def default_settings(home: str | os.PathLike[str]) -> LedgerSettings:
    path = Path(home).expanduser() / LEDGER_FILE
    return LedgerSettings(URL.create("sqlite", database=str(path)), origin=f"the default, a file under {home}")


def from_connection(conn: Any) -> LedgerSettings:
    """The ledger an Airflow connection (or its fields) names."""
    kind = (conn.conn_type or "").lower()
    if kind == "sqlite" and conn.host:
        url = URL.create("sqlite", database=conn.host)
    elif kind in _POSTGRES and conn.host:
        url = URL.create(
            POSTGRES_DRIVER,
            username=conn.login,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            database=conn.schema or None,
        )
    else:
        raise LedgerSettingsError(
            f"connection {LEDGER_CONN_ID!r}: conn_type must be sqlite (host = the file) or postgres, with a host; "
            f"got conn_type {conn.conn_type!r}, host {conn.host!r}"
        )
    retention = int(conn.extra_dejson.get("retention_days", DEFAULT_RETENTION_DAYS))
    return LedgerSettings(url, retention, origin=f"connection {LEDGER_CONN_ID!r}")


def from_argument(text: str) -> LedgerSettings:
    """The ledger `--ledger` names: a SQLAlchemy URL, or a SQLite file's path."""
    try:
        url = make_url(text) if "://" in text else URL.create("sqlite", database=text)
    except ArgumentError:
        raise LedgerSettingsError(f"--ledger {text!r} is neither a SQLAlchemy URL nor a file's path") from None
    if url.drivername in _POSTGRES:
        url = url.set(drivername=POSTGRES_DRIVER)
    return LedgerSettings(url, origin="--ledger")


def located(conn: Any | None, environ: Mapping[str, str] = os.environ) -> LedgerSettings:
    """The ledger the connection `order_cancel_ledger` names (None: it is not defined), else the default."""
    return from_connection(conn) if conn is not None else default_settings(airflow_home(environ))


def from_environment(environ: Mapping[str, str] = os.environ) -> LedgerSettings:
    """The connection as Airflow reads it from AIRFLOW_CONN_ORDER_CANCEL_LEDGER, else the default."""
    return located(ConnectionFields.from_env(LEDGER_CONN_ID, environ), environ)
