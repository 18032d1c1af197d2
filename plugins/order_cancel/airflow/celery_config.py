"""Airflow's Celery settings plus this package, imported once by each Celery worker at its start:

    [celery] celery_config_options = order_cancel.airflow.celery_config.CELERY_CONFIG

(or AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS). The CeleryExecutor runs every task instance in a
process forked from its worker; what the worker imported is already in that process, so a task no
longer spends part of its time importing the flows' operators, clients and models.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

# The DAG factory imports the operators, and through them everything a flow's task runs.
PRELOADED = ("order_cancel.airflow.factory",)

CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CELERY_CONFIG,
    "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), *PRELOADED),
}
