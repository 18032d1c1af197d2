"""Broken Order Cancel flow files, reported as this file's Airflow DAG import error.

The good flows load from order_cancel_flows.py; a bad flow file breaks nothing but itself, and
its file name and field show up in Airflow's list of DAG import errors.
"""

from order_cancel.airflow.factory import report_broken_flows

report_broken_flows()
