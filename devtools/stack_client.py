"""Driving a running stack from outside, as a person or a CI job would: Airflow's REST API (token
login, DAGs, runs, task instances) and the fakes' /_fake/ control API. Used by tests/stack and
bench/celery_throughput.py; plain `requests` without proxies (everything is on 127.0.0.1).
"""

from __future__ import annotations

import time
from typing import Any

import requests

from devtools.stack import ADMIN_PASSWORD, ADMIN_USER

FINISHED = ("success", "failed")
MAX_POLL_ERRORS = 20


class RestError(AssertionError):
    """An unexpected REST answer or a wait that ran out (an AssertionError: tests report it as such)."""


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy for 127.0.0.1
    return session


class AirflowRest:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.http = _session()

    def login(self) -> AirflowRest:
        response = self.http.post(
            f"{self.base}/auth/token", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD}, timeout=30
        )
        if not response.ok:
            raise RestError(f"login: {response.status_code} {response.text}")
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        return self

    def api(self, method: str, path: str, **kwargs) -> Any:
        response = self.http.request(method, f"{self.base}/api/v2{path}", timeout=30, **kwargs)
        if not response.ok:
            raise RestError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            response = self.http.get(f"{self.base}/api/v2/dags/{dag_id}", timeout=30)
            if response.status_code == 200:
                return response.json()
            if time.monotonic() > deadline:
                raise RestError(f"{dag_id} never showed up: {response.status_code} {response.text}")
            time.sleep(0.5)

    def unpause(self, dag_id: str) -> dict:
        return self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> dict:
        body: dict[str, Any] = {"logical_date": None}
        if conf:
            body["conf"] = conf
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120.0, poll: float = 0.5) -> dict:
        deadline = time.monotonic() + timeout
        errors_in_a_row, state = 0, "not seen"
        while True:
            response = self.http.get(f"{self.base}/api/v2/dags/{dag_id}/dagRuns/{run_id}", timeout=30)
            if response.status_code >= 500 and errors_in_a_row < MAX_POLL_ERRORS:
                # On a loaded machine the api-server once answered a poll 500 in the middle of a long
                # benchmark run; the run goes on regardless, so ask again.
                errors_in_a_row += 1
            else:
                if not response.ok:
                    raise RestError(f"GET run {run_id} of {dag_id}: {response.status_code} {response.text}")
                run = response.json()
                if run["state"] in FINISHED:
                    return run
                errors_in_a_row, state = 0, run["state"]
            if time.monotonic() > deadline:
                raise RestError(f"run {run_id} of {dag_id} still {state} after {timeout:.0f} s")
            time.sleep(poll)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of a run (the API pages at 100 rows)."""
        found: list[dict] = []
        while True:
            page = self.api(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(found), "order_by": "id"},
            )
            found += page["task_instances"]
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict:
        suffix = f"/{map_index}" if map_index >= 0 else ""
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}{suffix}")

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
        """Every try of a task instance (the current one included), oldest first."""
        suffix = f"/{map_index}" if map_index >= 0 else ""
        tries = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}{suffix}/tries")
        return sorted(tries["task_instances"], key=lambda ti: ti["try_number"])

    def event_logs(self, **params) -> list[dict]:
        return self.api("GET", "/eventLogs", params={"limit": 100, **params})["event_logs"]


class FakesClient:
    """The fake Omnitron's and the fake ERP's control API (/_fake/)."""

    def __init__(self, omnitron_port: int, erp_port: int):
        self.omnitron = f"http://127.0.0.1:{omnitron_port}"
        self.erp = f"http://127.0.0.1:{erp_port}"
        self.http = _session()

    def _call(self, method: str, url: str, body: Any = None) -> Any:
        response = self.http.request(method, url, json=body, timeout=30)
        if not response.ok:
            raise RestError(f"{method} {url}: {response.status_code} {response.text}")
        return response.json()

    def add_plans(self, plans: list[dict]) -> None:
        self._call("POST", f"{self.omnitron}/_fake/plans", plans)

    def plans(self) -> dict[int, dict]:
        return {plan["pk"]: plan for plan in self._call("GET", f"{self.omnitron}/_fake/plans")}

    def plan_statuses(self, pks) -> dict[int, str]:
        plans = self.plans()
        return {pk: plans[pk]["status"] for pk in pks}

    def erp_requests(self, path: str | None = None) -> list[dict]:
        calls = self._call("GET", f"{self.erp}/_fake/requests")
        return [call for call in calls if path is None or call["path"] == path]

    def erp_respond(self, **rule) -> None:
        self._call("POST", f"{self.erp}/_fake/responses", rule)

    def erp_bookings(self) -> dict[str, dict]:
        return self._call("GET", f"{self.erp}/_fake/bookings")

    def erp_booking_log(self) -> list[dict]:
        return self._call("GET", f"{self.erp}/_fake/booking_log")

    def omnitron_writes(self) -> list[dict]:
        return self._call("GET", f"{self.omnitron}/_fake/writes")

    def omnitron_fault(self, **fault) -> None:
        self._call("POST", f"{self.omnitron}/_fake/faults", fault)

    def erp_fault(self, **fault) -> None:
        """A fault on the ERP's side, the CRM webhook beside it included (any path)."""
        self._call("POST", f"{self.erp}/_fake/faults", fault)

    def erp_honours_idempotency(self, honour: bool) -> None:
        """Off: the ERP books every send again, as ERPs that ignore Idempotency-Key do."""
        self._call("POST", f"{self.erp}/_fake/idempotency", {"honour": honour})

    def erp_latency(self, latency_ms: float) -> None:
        """Every later ERP answer held this long, as a remote ERP's are."""
        self._call("POST", f"{self.erp}/_fake/latency", {"latency_ms": latency_ms})

    def expire_tokens(self, side: str) -> None:
        self._call("POST", f"{self.omnitron if side == 'omnitron' else self.erp}/_fake/expire_tokens")

    def clear_faults(self) -> None:
        """Every fault and scripted answer of both fakes."""
        for url in (self.omnitron, self.erp):
            self._call("DELETE", f"{url}/_fake/faults")
        self._call("DELETE", f"{self.erp}/_fake/responses")
