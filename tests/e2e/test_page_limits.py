"""The pages' rules and limits (issue 22), as a user of the Airflow UI or a REST client meets them:
each DAG checked with its team (Airflow's multi-team mode), numbers out of range refused, the
ledger's location only for those who may read its connection, and the test panels' body cap, tries
at once and the deployment setting that turns their script runs off."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import anyio
import pytest
import yaml

from devtools.airflow_env import ROOT
from order_cancel.ledger.attempts import Attempt
from order_cancel.ledger.store import Ledger
from tests.conftest import LEDGER_ENV
from tests.flow_runner import BASE_FLOW, merged
from tests.pages import PANELS, PLANS, bearer, pages_client

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")

EXAMPLE_FLOWS = ROOT / "include" / "flows"
WAITING = "acme_waiting_cancellations"
# Beyond a 64-bit integer column.
HUGE = "99999999999999999999"
TEAM_FLOWS = {"team_a": "acme_team_a", "team_b": "acme_team_b"}


def attempt(flow_id: str, plan_pk: int) -> Attempt:
    now = dt.datetime(2026, 12, 2, 3, 31, tzinfo=dt.UTC)
    return Attempt(
        flow_id=flow_id,
        run_id="manual__1",
        task_id="plan",
        map_index=0,
        try_number=1,
        plan_pk=plan_pk,
        order_number=f"4294530{plan_pk:02d}",
        transaction_pk=None,
        idempotency_key=None,
        steps="script,mapping,write_erp",
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
        outcome="approved",
        error=None,
        failed_step=None,
        started_at=now,
        ended_at=now,
    )


def with_ledger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, attempts: list[Attempt]) -> None:
    path = tmp_path / "ledger.db"
    Ledger.open(f"sqlite:///{path}").write(attempts)
    monkeypatch.setenv(LEDGER_ENV, json.dumps({"conn_type": "sqlite", "host": str(path)}))


@pytest.fixture
def pages(airflow_db, tmp_path, monkeypatch):
    """The example flows, a plan of one of them in the ledger, an admin and a viewer."""
    with_ledger(monkeypatch, tmp_path, [attempt(WAITING, 4)])
    return pages_client(monkeypatch, tmp_path, ["admin:admin", "viewer:viewer"], EXAMPLE_FLOWS)


# -- teams ------------------------------------------------------------------------------------------


@pytest.fixture
def teams(airflow_db):
    """Two teams, each owning a DAG bundle with one flow's DAG in it, as Airflow records them."""
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.team import Team, dag_bundle_team_association_table
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    bundles = {team: f"{team}_bundle" for team in TEAM_FLOWS}
    with create_session() as session:
        for team, bundle_name in bundles.items():
            bundle = DagBundleModel(name=bundle_name)
            bundle.teams.append(Team(name=team))
            session.add(bundle)
        session.flush()  # the DAGs' foreign key names the bundles
        for team, dag_id in TEAM_FLOWS.items():
            dag = DagModel(dag_id=dag_id, bundle_name=bundles[team])
            dag.max_consecutive_failed_dag_runs, dag.has_task_concurrency_limits = 0, False
            session.add(dag)
    yield TEAM_FLOWS
    with create_session() as session:
        session.execute(delete(DagModel).where(DagModel.dag_id.in_(TEAM_FLOWS.values())))
        association = dag_bundle_team_association_table
        session.execute(delete(association).where(association.c.dag_bundle_name.in_(bundles.values())))
        session.execute(delete(DagBundleModel).where(DagBundleModel.name.in_(bundles.values())))
        session.execute(delete(Team).where(Team.name.in_(TEAM_FLOWS)))


@pytest.fixture
def team_pages(teams, tmp_path, monkeypatch):
    """Multi-team mode: a flow (and a plan in the ledger) per team; an admin, and a user of each team
    who may trigger DAGs (ana of team_a, bora of team_b)."""
    flows_dir = tmp_path / "flows"
    flows_dir.mkdir()
    for dag_id in teams.values():
        (flows_dir / f"{dag_id}.yaml").write_text(yaml.safe_dump(merged(BASE_FLOW, {"flow_id": dag_id})))
    with_ledger(monkeypatch, tmp_path, [attempt(dag_id, pk) for pk, dag_id in enumerate(teams.values(), start=1)])
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    return pages_client(monkeypatch, tmp_path, ["admin:admin", "ana:user:team_a", "bora:user:team_b"], flows_dir)


def test_a_team_user_lists_and_tries_only_their_teams_flows_in_the_panels(team_pages):
    as_bora = bearer(team_pages, "bora")
    listing = team_pages.get(f"{PANELS}/api/flows", headers=as_bora).json()
    assert [flow["flow_id"] for flow in listing["flows"]] == ["acme_team_b"]
    assert listing["can_try"] == {"acme_team_b": True}
    admin = team_pages.get(f"{PANELS}/api/flows", headers=bearer(team_pages, "admin")).json()
    assert [flow["flow_id"] for flow in admin["flows"]] == ["acme_team_a", "acme_team_b"]

    body = {"plan": {"pk": 1, "status": "waiting"}}
    assert team_pages.post(f"{PANELS}/api/flows/acme_team_a/try", json=body, headers=as_bora).status_code == 403
    assert team_pages.post(f"{PANELS}/api/flows/acme_team_b/try", json=body, headers=as_bora).status_code == 200


def test_a_team_user_finds_only_their_teams_plans(team_pages):
    as_ana, as_bora = bearer(team_pages, "ana"), bearer(team_pages, "bora")

    def plans(query: str, headers: dict[str, str]) -> list[tuple[str, int]]:
        found = team_pages.get(f"{PLANS}/api/plans?{query}", headers=headers).json()["plans"]
        return [(plan["flow_id"], plan["plan_pk"]) for plan in found]

    assert team_pages.get(f"{PLANS}/api/flows", headers=as_bora).json()["flows"] == ["acme_team_b"]
    assert plans("", as_bora) == [("acme_team_b", 2)]
    assert plans("", as_ana) == [("acme_team_a", 1)]
    assert plans("flow=acme_team_a&plan=1", as_bora) == []
    assert team_pages.get(f"{PLANS}/api/plans/acme_team_a/1", headers=as_bora).status_code == 404
    assert team_pages.get(f"{PLANS}/api/plans/acme_team_b/2", headers=as_bora).status_code == 200
    tab = "api/task-instance?dag_id=acme_team_a&run_id=manual__1&task_id=plan&map_index=0"
    assert team_pages.get(f"{PLANS}/{tab}", headers=as_bora).json() == {"plans": []}
    assert len(team_pages.get(f"{PLANS}/{tab}", headers=as_ana).json()["plans"]) == 1


# -- the plans page ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [f"/api/plans?plan={HUGE}", f"/api/plans/{WAITING}/{HUGE}"],
    ids=["search", "timeline"],
)
def test_a_number_beyond_the_ledgers_columns_is_refused(pages, path):
    response = pages.get(f"{PLANS}{path}", headers=bearer(pages, "viewer"))
    assert response.status_code == 422 and "less than or equal" in response.text


def test_the_ledgers_location_is_shown_only_to_who_may_read_its_connection(pages, tmp_path):
    assert pages.get(f"{PLANS}/api/flows", headers=bearer(pages, "viewer")).json() == {
        "flows": [WAITING],
        "ledger": None,
        "user": "viewer",
    }
    admin = pages.get(f"{PLANS}/api/flows", headers=bearer(pages, "admin")).json()
    assert admin["ledger"] == f"sqlite:///{tmp_path / 'ledger.db'}"


# -- the test panels' limits ------------------------------------------------------------------------

TRY = f"{PANELS}/api/flows/{WAITING}/try"


def test_a_chunked_body_over_the_cap_is_refused_while_it_is_read(pages):
    """50 MB without a Content-Length (a chunked upload): 413 after little more than the cap is read."""
    from order_cancel.panels.app import MAX_REQUEST_BYTES

    chunk, chunks = b" " * 65536, 800
    pulled, answer = 0, []

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < chunks}

    async def send(message):
        answer.append(message)

    headers = [(key.lower().encode(), value.encode()) for key, value in bearer(pages, "admin").items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": TRY,
        "raw_path": TRY.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [*headers, (b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    anyio.run(pages.app, scope, receive, send)

    assert answer[0]["status"] == 413
    assert json.loads(answer[1]["body"]) == {"detail": f"at most {MAX_REQUEST_BYTES} bytes"}
    assert pulled * len(chunk) <= MAX_REQUEST_BYTES + len(chunk)


def test_tries_beyond_the_few_at_once_are_answered_429_with_retry_after(pages, monkeypatch):
    from order_cancel.panels import service
    from order_cancel.panels.app import MAX_TRIES_AT_ONCE, RETRY_AFTER_SECONDS

    running, finish = threading.Semaphore(0), threading.Event()

    def slow_try(*args, **kwargs):
        running.release()
        finish.wait(timeout=30)
        return {"ok": True}

    monkeypatch.setattr(service, "try_contained", slow_try)
    admin, body = bearer(pages, "admin"), {"plan": {"pk": 4}}
    answers: list[int] = []
    tries = [
        threading.Thread(target=lambda: answers.append(pages.post(TRY, json=body, headers=admin).status_code))
        for _ in range(MAX_TRIES_AT_ONCE)
    ]
    for thread in tries:
        thread.start()
    for _ in tries:
        assert running.acquire(timeout=30), "the tries did not start"

    refused = pages.post(TRY, json=body, headers=admin)

    finish.set()
    for thread in tries:
        thread.join(timeout=30)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert f"at most {MAX_TRIES_AT_ONCE} tries at once" in refused.json()["detail"]
    assert answers == [200] * MAX_TRIES_AT_ONCE
    assert pages.post(TRY, json=body, headers=admin).status_code == 200, "the slots are free again"


def test_a_deployment_can_turn_the_panels_script_runs_off(pages, monkeypatch):
    monkeypatch.setenv("AIRFLOW__ORDER_CANCEL__PANELS_RUN_SCRIPTS", "False")
    admin = bearer(pages, "admin")

    listing = pages.get(f"{PANELS}/api/flows", headers=admin).json()
    response = pages.post(TRY, json={"plan": {"pk": 4}}, headers=admin)

    assert len(listing["flows"]) == 2 and "panels_run_scripts = False" in listing["scripts_off"]
    assert response.status_code == 403 and response.json()["detail"] == listing["scripts_off"]
    monkeypatch.setenv("AIRFLOW__ORDER_CANCEL__PANELS_RUN_SCRIPTS", "True")
    assert pages.get(f"{PANELS}/api/flows", headers=admin).json()["scripts_off"] is None
    assert pages.post(TRY, json={"plan": {"pk": 4}}, headers=admin).status_code == 200


# -- the panels run flow code in a child process ------------------------------------------------------

PROBE = """\
import json, os
outputStream.write(json.dumps({"pid": os.getpid(), "environment": dict(os.environ)}))
"""


@pytest.fixture
def probe_pages(airflow_db, tmp_path, monkeypatch):
    """A flow whose script reports its process and environment; one whose script will not stop."""
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "fernet-key-of-the-api-server")
    monkeypatch.setenv("AIRFLOW_CONN_ERP_PROBE", "http://erp:erp-password-of-the-api-server@127.0.0.1:1")
    folder = tmp_path / "flows"
    (folder / "scripts").mkdir(parents=True)
    (folder / "scripts" / "probe.py").write_text(PROBE)
    (folder / "scripts" / "stubborn.py").write_text(
        "import time\nwhile True:\n    try:\n        time.sleep(1)\n    except:\n        pass\n"
    )
    for flow_id, script in (("acme_probe", "probe.py"), ("acme_stubborn", "stubborn.py")):
        flow = merged(BASE_FLOW, {"flow_id": flow_id, "script": f"scripts/{script}", "script_timeout_seconds": 1})
        (folder / f"{flow_id}.yaml").write_text(yaml.safe_dump(flow))
    return pages_client(monkeypatch, tmp_path, ["admin:admin"], folder)


def test_a_script_tried_in_the_panels_runs_outside_the_api_server_and_finds_no_secret(probe_pages):
    import os

    answer = probe_pages.post(
        f"{PANELS}/api/flows/acme_probe/try", json={"plan": {"pk": 4}}, headers=bearer(probe_pages, "admin")
    )

    assert answer.status_code == 200, answer.text
    probe = answer.json()["script"]["result_data"]
    assert probe["pid"] != os.getpid()
    leaked = [name for name, value in probe["environment"].items() if "AIRFLOW" in name or "api-server" in value]
    assert leaked == []


def test_a_script_that_will_not_stop_is_killed_at_the_panels_limit(probe_pages):
    import time

    started = time.monotonic()
    answer = probe_pages.post(
        f"{PANELS}/api/flows/acme_stubborn/try", json={"plan": {"pk": 4}}, headers=bearer(probe_pages, "admin")
    )

    assert time.monotonic() - started < 1 + 1 + 8  # the limit, the grace, a child started under load
    result = answer.json()
    assert answer.status_code == 200 and result["ok"] is False and result["failed_step"] == "script"
    assert result["error"] == "ScriptTimeout: a script did not stop at its limit (1 s): the try's process was killed"
