"""Test set-up: a private Airflow home (SQLite), the fake Omnitron and ERP, and a runner that writes
flow files and runs their DAGs through the real DAG files with `dag.test()`.

Airflow reads its settings when first imported, so the environment is set before any test module
imports it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from devtools.airflow_env import connection_json, use_local_airflow

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="order-cancel-airflow-"))
use_local_airflow(AIRFLOW_HOME)
# A flows folder that exists but stays empty: each test writes flow files into a folder of its own.
os.environ["ORDER_CANCEL_FLOWS_DIR"] = str(AIRFLOW_HOME / "no-flows")
(AIRFLOW_HOME / "no-flows").mkdir()

from fakes import FakeErp, FakeOmnitron  # noqa: E402
from tests.flow_runner import FlowRunner, delete_variables  # noqa: E402

LEDGER_ENV = "AIRFLOW_CONN_ORDER_CANCEL_LEDGER"
OMNITRON_USER, OMNITRON_PASSWORD = "omnitron", "omnitron-pass"
ERP_USER, ERP_PASSWORD, ERP_STATIC_TOKEN = "erp", "erp-pass", "static-secret"


@pytest.fixture(scope="session")
def airflow_db():
    from airflow.utils import db

    db.initdb()
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def _omnitron_server():
    with FakeOmnitron(users={OMNITRON_USER: OMNITRON_PASSWORD}) as server:
        yield server


@pytest.fixture(scope="session")
def _erp_servers():
    """One fake ERP per login style; a flow picks its own through its connection."""
    servers = {
        auth: FakeErp(auth=auth, username=ERP_USER, password=ERP_PASSWORD, static_token=ERP_STATIC_TOKEN).start()
        for auth in ("none", "token", "basic", "header")
    }
    yield servers
    for server in servers.values():
        server.stop()


def _reset(server):
    server.clear_requests()
    server.clear_faults()
    if hasattr(server, "clear_responses"):
        server.clear_responses()
        server.clear_bookings()
        server.set_idempotency(True)  # as started: a test that turned it off must not leak into the next


@pytest.fixture
def omnitron(_omnitron_server):
    _omnitron_server.reset_data()
    _reset(_omnitron_server)
    return _omnitron_server


@pytest.fixture
def erp_servers(_erp_servers):
    for server in _erp_servers.values():
        _reset(server)
    return _erp_servers


# The task layouts of a flow's plans, and what a flow file says to get each.
LAYOUTS: dict[str, dict | None] = {
    "per_step": None,
    "single": {"plan_tasks": "single"},
    # Small batches, so that a handful of plans spreads over several batch tasks.
    "batch": {"batch": {"size": 2, "concurrency": 4}},
}


@pytest.fixture
def flow_mode(request) -> str:
    """The per-step layout by default; tests marked `every_layout` run in each layout."""
    return getattr(request, "param", "per_step")


every_layout = pytest.mark.parametrize("flow_mode", list(LAYOUTS), indirect=True)


@pytest.fixture
def flows(airflow_db, omnitron, erp_servers, tmp_path, monkeypatch, flow_mode) -> FlowRunner:
    """Writes flow files into a fresh folder and runs their DAGs; connections point at the fakes."""
    monkeypatch.setenv("AIRFLOW_CONN_OMNITRON_TEST", connection_json(omnitron.url, OMNITRON_USER, OMNITRON_PASSWORD))
    for auth, server in erp_servers.items():
        # A permanent-token ERP ("header" login) reads its token from the connection's password.
        password = ERP_STATIC_TOKEN if auth == "header" else ERP_PASSWORD
        monkeypatch.setenv(f"AIRFLOW_CONN_ERP_{auth.upper()}", connection_json(server.url, ERP_USER, password))
    # The plan ledger of this test alone (SQLite).
    monkeypatch.setenv(LEDGER_ENV, json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "ledger.db")}))
    folder = tmp_path / "flows"
    folder.mkdir()
    monkeypatch.setenv("ORDER_CANCEL_FLOWS_DIR", str(folder))
    delete_variables()
    return FlowRunner(folder, defaults=LAYOUTS[flow_mode])
