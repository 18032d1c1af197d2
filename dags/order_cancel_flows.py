"""Airflow DAGs of the Order Cancel Flow: one DAG per flow file in include/flows/ (or $ORDER_CANCEL_FLOWS_DIR)."""

from order_cancel.airflow.factory import build_dags

globals().update(build_dags())
