"""The plan ledger's parts on their own: where it is, its schema's migration, and the completed
watermark's pending plans."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from order_cancel.clients.connection import ConnectionFields
from order_cancel.ledger.attempts import Attempt
from order_cancel.ledger.location import LedgerSettingsError, from_connection, from_environment
from order_cancel.ledger.schema import SCHEMA_VERSION, LedgerVersionError, ledger_version, migrate
from order_cancel.ledger.store import Ledger, Search
from order_cancel.pipeline.watermark import Watermark

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
ENV = "AIRFLOW_CONN_ORDER_CANCEL_LEDGER"


def test_the_ledger_is_a_file_under_airflow_home_by_default():
    settings = from_environment({"AIRFLOW_HOME": "/srv/airflow"})
    assert settings.url.database == "/srv/airflow/order_cancel_ledger.db" and settings.retention_days == 90


def test_the_ledger_connection_as_a_uri_or_json():
    postgres = from_environment({ENV: "postgres://ledger:p%40ss@db.internal:5433/ledger?retention_days=30"})
    assert postgres.url.render_as_string(hide_password=False) == (
        "postgresql+psycopg2://ledger:p%40ss@db.internal:5433/ledger"
    )
    assert postgres.shown == "postgresql+psycopg2://ledger:***@db.internal:5433/ledger"
    assert postgres.retention_days == 30
    sqlite = from_environment({ENV: "sqlite://%2Fvar%2Fledger.db"})
    assert sqlite.url.database == "/var/ledger.db"
    as_json = from_environment(
        {ENV: json.dumps({"conn_type": "sqlite", "host": "/var/l.db", "extra": '{"retention_days": 7}'})}
    )
    assert (as_json.url.database, as_json.retention_days) == ("/var/l.db", 7)


def test_a_ledger_connection_that_names_no_database_says_so():
    with pytest.raises(LedgerSettingsError, match=r"conn_type must be sqlite .* got conn_type 'http'"):
        from_connection(ConnectionFields("order_cancel_ledger", conn_type="http", host="x"))


def test_the_schema_is_created_once_and_a_newer_ledger_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger.open(url)
    engine = sa.create_engine(url)
    assert migrate(engine) == SCHEMA_VERSION, "a second open migrates nothing"
    assert Ledger(engine).find(Search()) == []
    with engine.begin() as connection:
        connection.execute(ledger_version.update().values(version=SCHEMA_VERSION + 1))
    with pytest.raises(LedgerVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        migrate(engine)


def test_pending_plans_keep_the_time_they_were_first_left():
    first = Watermark("2026-03-01T12:00:00Z").after_run(taken=[1, 2, 3], left=[2, 3], now=NOW)
    assert first.pending == {2: "2026-03-02T12:00:00Z", 3: "2026-03-02T12:00:00Z"}
    later = NOW + dt.timedelta(hours=1)
    second = first.after_run(taken=[2, 3, 4], left=[3, 4], now=later)
    assert second.pending == {3: "2026-03-02T12:00:00Z", 4: "2026-03-02T13:00:00Z"}, "2 was decided"
    assert Watermark.loads(second.dumps()) == second
    assert second.expired(NOW + dt.timedelta(hours=25), dt.timedelta(days=1)) == [3]


def test_a_watermark_further_on_keeps_this_runs_pending_plans():
    mine = Watermark("2026-03-01T12:00:00Z", pending={7: "2026-03-02T12:00:00Z"})
    theirs = Watermark("2026-03-01T13:00:00Z", frozenset({9}))
    assert mine.later(theirs) == Watermark("2026-03-01T13:00:00Z", frozenset({9}), {7: "2026-03-02T12:00:00Z"})
    assert json.loads(Watermark("2026-03-01T12:00:00Z").dumps()) == {
        "modified_date": "2026-03-01T12:00:00Z",
        "plan_pks": [],
    }


def attempt(plan_pk: int) -> Attempt:
    return Attempt(
        flow_id="acme_cancel",
        run_id="manual__1",
        task_id="plan_batch",
        map_index=0,
        try_number=1,
        dag_version=None,
        plan_pk=plan_pk,
        order_number=f"4294521{plan_pk:02d}",
        transaction_pk=None,
        idempotency_key=None,
        steps="mapping,write_erp",
        step_reached="write_erp",
        relation="continue",
        accepted=True,
        erp_status_code=201,
        erp_sends=1,
        erp_request=None,
        erp_answer=None,
        erp_no_answer=None,
        omnitron_outcome=None,
        omnitron_call=None,
        outcome="accepted by the ERP",
        error=None,
        failed_step=None,
        started_at=NOW,
        ended_at=NOW,
    )


def test_the_attempts_of_several_plans_in_one_search(tmp_path):
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.write([attempt(pk) for pk in (1, 2, 3)])

    found = ledger.find(Search(plan_pks=[1, 3], limit=None))

    assert [a.plan_pk for a in found] == [1, 3]
    assert ledger.find(Search(plan_pks=[])) == []
