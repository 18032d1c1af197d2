"""Akinon's Order Cancel Flow as Airflow 3 DAGs.

The layers, each a subpackage; only `airflow` and `panels.app` import Airflow:

* `flows`: the flow file contract (models, loading, schedules, deep checks);
* `clients`: Omnitron and the ERP over HTTP;
* `runtime`: the Integrator's scripts (NiFi API, time limits), Jolt mappings;
* `pipeline`: one plan's steps (with the response evaluation) and a run's (fetch, batches, watermark,
  summary, report);
* `airflow`: DAG factory, operators, hooks, the REST API, where run data is kept;
* `panels`: the test panels; `cli`: `python -m order_cancel`.
"""
