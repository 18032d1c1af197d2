"""`bin/airflow-local` end to end: the real stack (fakes, api-server, scheduler, dag-processor) on
free ports, one run triggered through the REST API, then a clean stop with no process left.

Two choices keep this deterministic on any CI machine:

* The fakes run on free ports, so the flow triggered is `acme_confirmed_refunds`. The other example,
  `acme_waiting_cancellations`, names its CRM as http://127.0.0.1:18082 (`crm_url` attribute): with
  the ERP elsewhere its post script fails and so does the run. (The demo ports are not used even when
  free: a developer's own `bin/airflow-local` or `bin/demo` may take them at any moment.)
* The stack runs with `--manual-only` ([scheduler] use_job_schedule=False). Otherwise unpausing the
  DAG makes the scheduler create a run for the latest interval too; that run sorts first (earlier
  run_after, max_active_runs=1), takes the demo plans, and the triggered run finds none.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from devtools.airflow_env import ROOT
from devtools.stack import ADMIN_PASSWORD, ADMIN_USER, free_ports, marked_processes, port_listening

# The tests share one stack (a module fixture): on one xdist worker, in this order.
pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("local_airflow")]

DAG_ID = "acme_confirmed_refunds"
LABEL = re.compile(r"^plan \d+ · order \d+ · .+$")
START_TIMEOUT, RUN_TIMEOUT, STOP_TIMEOUT = 90.0, 90.0, 40.0


class LocalStack:
    """`python -m devtools.local_airflow` in a session of its own, on free ports and a fresh home."""

    def __init__(self, home: Path, flows_dir: Path | None = None):
        self.home = home
        self.flows_dir = flows_dir
        self.port, self.omnitron_port, self.erp_port = free_ports(3)
        self.base = f"http://127.0.0.1:{self.port}"
        self.output = home.parent / "airflow-local.out"
        self.process: subprocess.Popen | None = None
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy for 127.0.0.1

    def start(self) -> None:
        # The launcher builds the Airflow environment itself; drop what tests/conftest.py set here.
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "ORDER_CANCEL"))}
        env["PYTHONPATH"] = str(ROOT)
        command = [
            sys.executable,
            "-m",
            "devtools.local_airflow",
            "--home",
            str(self.home),
            "--manual-only",
            "--port",
            str(self.port),
            "--omnitron-port",
            str(self.omnitron_port),
            "--erp-port",
            str(self.erp_port),
        ] + (["--flows-dir", str(self.flows_dir)] if self.flows_dir else [])
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def wait_ready(self) -> float:
        started = time.monotonic()
        while "Local Airflow is ready" not in self.log():
            assert self.process.poll() is None, f"bin/airflow-local exited early:\n{self.log()}"
            assert time.monotonic() - started < START_TIMEOUT, f"not ready after {START_TIMEOUT} s:\n{self.log()}"
            time.sleep(0.5)
        return time.monotonic() - started

    def stop(self) -> int | None:
        """SIGTERM, as Ctrl-C would; idempotent. Returns the launcher's exit code (None: killed)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None

    def force_cleanup(self) -> None:
        """The safety net after a failed test: nothing of this stack may outlive the test."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        for pid in marked_processes(str(self.home)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # --- REST API, as a browser test or a person would use it ---------------------------------

    def login(self) -> None:
        response = self.http.post(f"{self.base}/auth/token", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
        response.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def api(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, f"{self.base}/api/v2{path}", timeout=30, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def wait_for_dag(self, dag_id: str) -> dict:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            response = self.http.get(f"{self.base}/api/v2/dags/{dag_id}", timeout=30)
            if response.status_code == 200:
                return response.json()
            assert time.monotonic() < deadline, f"{dag_id} never showed up: {response.status_code} {response.text}"
            time.sleep(1)

    def wait_for_run(self, dag_id: str, run_id: str) -> dict:
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            assert time.monotonic() < deadline, f"run {run_id} still {run['state']} after {RUN_TIMEOUT} s"
            time.sleep(1)


SINGLE_DAG_ID = "acme_waiting_single"


def stack_flows(folder: Path) -> Path:
    """The refunds example, and the waiting example laid out one task per plan, without retries (a
    failure shows at once) and without the post script (its CRM is on the demo port)."""
    examples = ROOT / "include" / "flows"
    for part in ("scripts", "mappings"):
        shutil.copytree(examples / part, folder / part)
    shutil.copy(examples / f"{DAG_ID}.yaml", folder)
    waiting = yaml.safe_load((examples / "acme_waiting_cancellations.yaml").read_text(encoding="utf-8"))
    waiting.pop("post_script")
    waiting.update(flow_id=SINGLE_DAG_ID, plan_tasks="single", retries=0)
    (folder / f"{SINGLE_DAG_ID}.yaml").write_text(yaml.safe_dump(waiting), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local-airflow")
    stack = LocalStack(folder / "airflow-home", flows_dir=stack_flows(folder / "flows"))
    try:
        stack.start()
        stack.ready_after = stack.wait_ready()
        stack.login()
        yield stack
    finally:
        stack.stop()
        stack.force_cleanup()


def fakes_call(port: int, method: str, path: str, body=None):
    response = requests.request(method, f"http://127.0.0.1:{port}{path}", json=body, timeout=10, proxies={"http": None})
    response.raise_for_status()
    return response.json()


def test_local_airflow_runs_a_flow(local_stack):
    started = time.monotonic()
    log = local_stack.log()
    assert f"http://127.0.0.1:{local_stack.port}/" in log and f"login {ADMIN_USER} / {ADMIN_PASSWORD}" in log
    assert f"http://127.0.0.1:{local_stack.omnitron_port}" in log and f"http://127.0.0.1:{local_stack.erp_port}" in log

    dag = local_stack.wait_for_dag(DAG_ID)
    assert dag["is_paused"] is True  # new DAGs start paused
    assert local_stack.api("GET", "/importErrors")["total_entries"] == 0
    assert local_stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})["is_paused"] is False
    triggered = local_stack.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
    assert triggered["run_type"] == "manual"

    run = local_stack.wait_for_run(DAG_ID, triggered["dag_run_id"])
    run_seconds = time.monotonic() - started
    instances = local_stack.api(
        "GET", f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances", params={"limit": 100}
    )["task_instances"]
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
    assert run["state"] == "success", states
    mapped = [ti for ti in instances if ti["map_index"] >= 0]
    # The demo data has one confirmed web refund: plan 7 of order 429453007, three steps.
    assert {ti["task_id"] for ti in mapped} == {"plan.transform", "plan.write_erp", "plan.write_omnitron"}
    assert all(LABEL.match(ti["rendered_map_index"] or "") for ti in mapped), [
        ti["rendered_map_index"] for ti in mapped
    ]
    assert {ti["rendered_map_index"] for ti in mapped} == {
        "plan 7 · order 429453007 · transformed",
        "plan 7 · order 429453007 · accepted by the ERP",
        "plan 7 · order 429453007 · status set to completed",
    }
    assert all(ti["state"] == "success" for ti in instances), states
    # The summary leaves the run's report as the run's note, through the airflow_api connection.
    note = local_stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}")["note"]
    assert note.startswith("**1 plan(s)** in ") and note.endswith(": continue 1"), note
    # The run really went to the fakes of this stack.
    erp_calls = requests.get(
        f"http://127.0.0.1:{local_stack.erp_port}/_fake/requests", timeout=10, proxies={"http": None}
    ).json()
    assert [(call["method"], call["path"]) for call in erp_calls if call["path"] == "/api/refunds"] == [
        ("PUT", "/api/refunds")
    ]

    print(f"ready after {local_stack.ready_after:.1f} s, run (from trigger to finished) {run_seconds:.1f} s")


def test_a_failed_plan_is_cleared_through_the_rest_api_and_resumes_at_its_omnitron_write(local_stack):
    """One task per plan on a real scheduler: the plan the ERP accepted but Omnitron refused fails
    alone; cleared through the REST API as the UI's Clear button does, it is approved, and the ERP
    got it once."""
    plans = fakes_call(local_stack.omnitron_port, "GET", "/_fake/plans")
    waiting = sorted(plan["pk"] for plan in plans if plan["status"] == "waiting" and plan["order"]["channel"] in (1, 2))
    failing = next(plan for plan in plans if plan["pk"] == waiting[0])
    approve = f"/orders/{failing['order']['pk']}/cancellation_approved_order/"
    fault = {"method": "POST", "path_regex": approve, "status": 500, "body": {"detail": "down"}, "times": None}
    fakes_call(local_stack.omnitron_port, "POST", "/_fake/faults", fault)
    local_stack.wait_for_dag(SINGLE_DAG_ID)
    local_stack.api("PATCH", f"/dags/{SINGLE_DAG_ID}", json={"is_paused": False})
    run_id = local_stack.api("POST", f"/dags/{SINGLE_DAG_ID}/dagRuns", json={"logical_date": None})["dag_run_id"]

    assert local_stack.wait_for_run(SINGLE_DAG_ID, run_id)["state"] == "failed"
    instances = local_stack.api("GET", f"/dags/{SINGLE_DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    [failed] = [ti for ti in instances["task_instances"] if ti["task_id"] == "plan" and ti["state"] == "failed"]
    label = f"plan {failing['pk']} · order {failing['order']['number']}"
    assert failed["rendered_map_index"] == f"{label} · failed at Omnitron write"

    fakes_call(local_stack.omnitron_port, "DELETE", "/_fake/faults")
    cleared = local_stack.api(
        "POST",
        f"/dags/{SINGLE_DAG_ID}/clearTaskInstances",
        json={
            "dag_run_id": run_id,
            "task_ids": [["plan", failed["map_index"]]],
            "include_downstream": True,
            "dry_run": False,
        },
    )
    assert {(ti["task_id"], ti["map_index"]) for ti in cleared["task_instances"]} == {
        ("plan", failed["map_index"]),
        ("summary", -1),
    }

    assert local_stack.wait_for_run(SINGLE_DAG_ID, run_id)["state"] == "success"
    after = local_stack.api("GET", f"/dags/{SINGLE_DAG_ID}/dagRuns/{run_id}/taskInstances/plan/{failed['map_index']}")
    assert after["rendered_map_index"] == f"{label} · approved" and after["try_number"] == 2
    sends = [
        call
        for call in fakes_call(local_stack.erp_port, "GET", "/_fake/requests")
        if call["path"] == "/api/cancellations"
    ]
    assert [call["body"]["cancellationId"] for call in sends].count(failing["pk"]) == 1, "sent once, cleared or not"
    statuses = {plan["pk"]: plan["status"] for plan in fakes_call(local_stack.omnitron_port, "GET", "/_fake/plans")}
    assert statuses[failing["pk"]] == "approved"


def test_local_airflow_stops_cleanly(local_stack):
    stopping = time.monotonic()
    assert local_stack.stop() == 0, local_stack.log()
    print(f"stop {time.monotonic() - stopping:.1f} s")
    assert "no process left" in local_stack.log()
    assert marked_processes(str(local_stack.home)) == []
    for port in (local_stack.port, local_stack.omnitron_port, local_stack.erp_port):
        assert not port_listening(port), f"port {port} still listening"
    assert time.monotonic() - stopping < STOP_TIMEOUT
