"""One measurement, run in a fresh process: `python -m bench.child KIND PARAMS_JSON RESULT_PATH`.

The driver (bench.run) starts the fakes and prepares the folders; this process only measures and
writes its result as JSON (stdout belongs to Airflow's logs). A measurement that uses Airflow gets
an Airflow home of its own, set before Airflow is first imported (Airflow reads its settings then).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

from devtools.airflow_env import connection_json, use_local_airflow

FLOWS_FILE = "order_cancel_flows.py"
ERRORS_FILE = "order_cancel_flow_errors.py"
# PlanPipeline.build takes well under a millisecond: average several builds for a stable number.
BUILD_REPEATS = 20


def use_airflow(
    home: str,
    flows_dir: str | None = None,
    dags_folder: str | None = None,
    connections: dict[str, list[str]] | None = None,
) -> None:
    use_local_airflow(Path(home))
    if flows_dir:
        os.environ["ORDER_CANCEL_FLOWS_DIR"] = flows_dir
    if dags_folder:
        os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = dags_folder
    for conn_id, (url, login, password) in (connections or {}).items():
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = connection_json(url, login, password)


# -- a) parse time -----------------------------------------------------------------------------


def parse(home: str, flows_dir: str, dags_folder: str) -> dict[str, Any]:
    """Airflow's own per-file parse timing (DagBag.dagbag_stats).

    DagBag parses the folder's files in name order, so the errors file, parsed first, would pay the
    imports both files share (order_cancel, pydantic, pyjolt). A DAG processor parses each file in a
    fresh process, so the flows file is first parsed alone (cold, imports included), then the folder.
    """
    use_airflow(home, flows_dir)
    from airflow.dag_processing.dagbag import DagBag

    cold = DagBag(dag_folder=str(Path(dags_folder) / FLOWS_FILE))
    bag = DagBag(dag_folder=dags_folder)
    stats = {Path(stat.file).name: stat for stat in bag.dagbag_stats}
    return {
        "cold_parse_s": cold.dagbag_stats[0].duration.total_seconds(),
        "parse_s": stats[FLOWS_FILE].duration.total_seconds(),
        "errors_file_s": stats[ERRORS_FILE].duration.total_seconds(),
        "dags": stats[FLOWS_FILE].dag_num,
        "import_errors": {str(path): str(error)[:500] for path, error in bag.import_errors.items()},
    }


# -- b) and c-i) one run with dag.test() -------------------------------------------------------


def dag_test(
    home: str,
    dag_file: str,
    dag_id: str,
    flows_dir: str | None = None,
    dags_folder: str | None = None,
    connections: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """One dag.test() run, timed; then what the run left in the metadata DB."""
    use_airflow(home, flows_dir, dags_folder, connections)
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.initdb()
    bag = DagBag(dag_folder=dag_file)
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise SystemExit(f"DAG {dag_id} not loaded from {dag_file}: {bag.import_errors}")
    start = perf_counter()
    dag_run = dag.test()
    run_s = perf_counter() - start
    return {"run_s": run_s, "state": str(dag_run.state), **_task_instances(dag_run)}


def _task_instances(dag_run: Any) -> dict[str, Any]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import func

    with create_session() as session:
        rows = (
            session.query(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state, TaskInstance.duration)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id)
            .all()
        )
        # JSON size of each task's return value: Airflow resolves every mapped TI's argument by
        # loading the whole upstream list, so the size of the list mapped over drives that cost.
        return_bytes = dict(
            session.query(XComModel.task_id, func.sum(func.length(XComModel.value)))
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, key="return_value")
            .group_by(XComModel.task_id)
            .all()
        )
    mapped = Counter(task_id for task_id, map_index, _, _ in rows if map_index >= 0)
    # The DAG lists tasks in creation order, which is chain order. Task ids of a mapped group are
    # "<group>.<step>"; a mapped task outside a group (batch mode) has no prefix.
    steps = [task_id for task_id in dag_run.dag.task_ids if task_id in mapped]
    group = steps[0].split(".")[0] if steps and "." in steps[0] else None
    durations: dict[str, list[float]] = {task_id: [] for task_id in dag_run.dag.task_ids}  # in DAG order
    for task_id, _, _, duration in rows:
        durations.setdefault(task_id, []).append(duration or 0.0)
    return {
        "task_instances": len(rows),
        "states": dict(Counter(str(state) for _, _, state, _ in rows)),
        # Time inside the tasks (each TI's start to end); the rest of run_s is dag.test()'s own work around them.
        "in_tasks_s": sum(sum(values) for values in durations.values()),
        "mean_ti_ms": {task_id: 1000 * sum(values) / len(values) for task_id, values in durations.items()},
        "return_value_mb": {task_id: size / 1e6 for task_id, size in return_bytes.items()},
        "shape": {
            "group": group,
            "steps": [step.split(".", 1)[-1] for step in steps],
            "items": max(mapped.values(), default=0),
        },
    }


# -- c-ii) the HTTP floor ----------------------------------------------------------------------


def http_floor(
    flow_file: str, omnitron_url: str, erp_url: str, omnitron_login: list[str], erp_login: list[str]
) -> dict[str, Any]:
    """The flow's HTTP calls in a plain loop on two kept-alive sessions: nothing but the wire and the fakes.
    The URLs and the list query come from the flow file, so the loop makes the calls the flow makes."""
    import requests

    from order_cancel.flows.loading import load_flow
    from order_cancel.flows.models import TokenLogin
    from order_cancel.pipeline.fetch import plan_query

    flow = load_flow(Path(flow_file))
    omnitron, erp = requests.Session(), requests.Session()
    start = perf_counter()
    answer = omnitron.post(f"{omnitron_url}/api/v1/auth/login/", json=_credentials(omnitron_login))
    omnitron.headers["Authorization"] = f"Token {_ok(answer)['key']}"
    assert isinstance(flow.erp.login, TokenLogin), "the benchmark's flows log in to the ERP with a token"
    answer = erp.post(f"{erp_url}{flow.erp.login.url}", json=_credentials(erp_login))
    erp.headers["Authorization"] = f"Bearer {_ok(answer)['access_token']}"

    plans: list[dict[str, Any]] = []
    url: str | None = f"{omnitron_url}/api/v1/cancellation_plans/"
    params: dict[str, str] | None = {**plan_query(flow).params(), "limit": str(flow.get_data.page_size), "page": "1"}
    while url:
        page = _ok(omnitron.get(url, params=params))
        plans += page["results"]
        url, params = page["next"], None  # the next link carries the query
    for plan in plans:
        # The plan as it came stands in for the mapped body: producing that is measured on its own (transform).
        _ok(erp.post(f"{erp_url}{flow.write_erp.url}", json=plan))
        approve = f"{omnitron_url}/api/v1/orders/{plan['order']['pk']}/cancellation_approved_order/"
        _ok(omnitron.post(approve, json={"cancellation_plan": plan["pk"]}))
    return {"http_s": perf_counter() - start, "plans": len(plans)}


def _credentials(login: list[str]) -> dict[str, str]:
    return {"username": login[0], "password": login[1]}


def _ok(response: Any) -> Any:
    response.raise_for_status()
    return response.json()


# -- d) script and mapping cost ----------------------------------------------------------------


def transform(flow_file: str, plans: int) -> dict[str, Any]:
    """Script.run and JoltMapping.apply per plan, as the transform task calls them (JSON in and out
    included, and the script's trip to its process), without Airflow."""
    from bench.scenarios import bench_plans
    from order_cancel.flows.loading import load_flow
    from order_cancel.pipeline.plan import WorkItem
    from order_cancel.pipeline.steps import PlanPipeline, plan_attributes

    flow = load_flow(Path(flow_file))
    steps = PlanPipeline.build(flow)  # the first build also pays lazy imports; time the ones after it
    start = perf_counter()
    for _ in range(BUILD_REPEATS):
        PlanPipeline.build(flow)
    build_s = (perf_counter() - start) / BUILD_REPEATS
    assert steps.script is not None and steps.mapping is not None, "the benchmark's flow has both"
    first = bench_plans(1)[0]
    start = perf_counter()
    # A thread's first script run starts the process its scripts run in (runtime.containment).
    steps.script.run(json.dumps(first), plan_attributes(flow, WorkItem.of(first)), timeout=flow.script_timeout_seconds)
    script_process_s = perf_counter() - start
    script_s = mapping_s = 0.0
    for plan in bench_plans(plans):
        attributes = plan_attributes(flow, WorkItem.of(plan))
        start = perf_counter()
        run = steps.script.run(json.dumps(plan, ensure_ascii=False), attributes, timeout=flow.script_timeout_seconds)
        middle = perf_counter()
        steps.mapping.apply(json.loads(run.output_text))
        script_s, mapping_s = script_s + middle - start, mapping_s + perf_counter() - middle
    return {
        "script_ms_per_plan": 1000 * script_s / plans,
        "mapping_ms_per_plan": 1000 * mapping_s / plans,
        "ms_per_plan": 1000 * (script_s + mapping_s) / plans,
        # Every per-plan task builds its PlanPipeline (compiles the scripts, builds the Jolt chain) again.
        "build_ms": 1000 * build_s,
        "script_process_ms": 1000 * script_process_s,
    }


KINDS: dict[str, Callable[..., dict[str, Any]]] = {
    "parse": parse,
    "dag_test": dag_test,
    "http_floor": http_floor,
    "transform": transform,
}


def main(argv: list[str]) -> None:
    kind, params, result_path = argv[1], json.loads(argv[2]), Path(argv[3])
    result = KINDS[kind](**params)
    result_path.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv)
