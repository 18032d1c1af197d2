"""Airflow's public REST API, for what a task cannot do through the Execution API: set its DAG
run's note. It needs the connection `airflow_api` (host = the api-server's base URL; login and
password of an Airflow user, or no login and a bearer token such as an Astro API token as the
password). Without that connection the note is skipped.
"""

from __future__ import annotations

from urllib.parse import quote

import requests

from order_cancel.clients.connection import base_url

AIRFLOW_API_CONN_ID = "airflow_api"


class AirflowApi:
    def __init__(self, conn, timeout: float = 10):
        self.base_url = base_url(conn)
        self._login = conn.login
        self._password = conn.password or ""
        self.timeout = timeout

    def _token(self) -> str:
        if not self._login:
            return self._password
        answer = requests.post(
            f"{self.base_url}auth/token",
            json={"username": self._login, "password": self._password},
            timeout=self.timeout,
        )
        answer.raise_for_status()
        return answer.json()["access_token"]

    def set_note(self, dag_id: str, run_id: str, note: str) -> None:
        answer = requests.patch(
            f"{self.base_url}api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}",
            params={"update_mask": "note"},
            json={"note": note},
            headers={"Authorization": f"Bearer {self._token()}"},
            timeout=self.timeout,
        )
        answer.raise_for_status()
