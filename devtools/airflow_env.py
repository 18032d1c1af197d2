"""The environment of a local Airflow for this project: SQLite in a home folder of its own, the
project's dags/ and plugins/, no example DAGs. Tests, the demo and the local UI share it."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def airflow_env(home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
    }


def use_local_airflow(home: Path) -> None:
    """Point this process at a local Airflow home; call it before importing airflow."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(airflow_env(home))


def connection_json(url: str, login: str, password: str) -> str:
    """An Airflow connection as an AIRFLOW_CONN_<ID> value: the host is the full base URL."""
    import json

    return json.dumps({"conn_type": "http", "host": url, "login": login, "password": password})
