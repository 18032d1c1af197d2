"""The Celery settings that load the package once per worker (order_cancel.airflow.celery_config):
Airflow's own settings unchanged, and the package among the modules a Celery worker imports at its
start (the Celery stack of tests/stack runs with them)."""

from __future__ import annotations

import subprocess
import sys

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from order_cancel.airflow.celery_config import CELERY_CONFIG


def test_airflows_celery_settings_are_kept():
    assert {key: value for key, value in CELERY_CONFIG.items() if key != "imports"} == {
        key: value for key, value in DEFAULT_CELERY_CONFIG.items() if key != "imports"
    }


def test_a_worker_built_from_them_imports_the_flows_operators_at_its_start():
    probe = (
        "import sys\n"
        "from celery import Celery\n"
        "from order_cancel.airflow.celery_config import CELERY_CONFIG\n"
        "assert 'order_cancel.airflow.operators.plan' not in sys.modules\n"
        "Celery('probe', config_source=CELERY_CONFIG).loader.init_worker()\n"
        "print('order_cancel.airflow.operators.plan' in sys.modules, 'order_cancel.pipeline.steps' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].split() == ["True", "True"], done.stdout[-2000:]
