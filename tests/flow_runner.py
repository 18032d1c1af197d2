"""Drive flows from outside, as a user does: write a flow file, let Airflow parse the real DAG files,
run the DAG with `dag.test()`, then read what the run left in the metadata database."""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

BASE_FLOW: dict[str, Any] = {
    "flow_id": "acme_cancel",
    "schedule": "*/5 * * * *",
    "retries": 0,
    "omnitron": {"conn_id": "omnitron_test"},
    "get_data": {"channel_type": "web", "cancel_type": "all", "cancel_status": "waiting"},
    "erp": {
        "conn_id": "erp_token",
        "login": {"type": "token", "url": "/api/auth/login", "token_path": "access_token", "prefix": "Bearer"},
    },
    "write_erp": {"url": "/api/cancellations", "method": "POST"},
    "write_omnitron": {"next_state": "approved"},
}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge overrides into base; a None value removes the key."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


@dataclass
class TaskRecord:
    task_id: str
    map_index: int
    state: str | None
    label: str | None
    try_number: int = 0


class RunResult:
    def __init__(self, dag_run: Any, tasks: list[TaskRecord], xcoms: dict[tuple[str, int, str], Any]):
        self.dag_run = dag_run
        self.state = str(dag_run.state)
        self.run_id = dag_run.run_id
        self.tasks = tasks
        self._xcoms = xcoms

    def task(self, task_id: str, map_index: int = -1) -> TaskRecord:
        return next(t for t in self.tasks if t.task_id == task_id and t.map_index == map_index)

    def mapped(self, task_id: str) -> list[TaskRecord]:
        return sorted((t for t in self.tasks if t.task_id == task_id and t.map_index >= 0), key=lambda t: t.map_index)

    def xcom(self, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
        return self._xcoms.get((task_id, map_index, key))

    @property
    def summary(self) -> dict[int, dict[str, Any]]:
        """The summary task's rows by plan pk (published also when a failed plan fails the run)."""
        return {row["plan"]: row for row in self.xcom("summary", key="plans") or []}

    def progress(self, plan_pk: int) -> Any:
        """The plan's step records, from every plan task's XComs, in any layout."""
        from order_cancel.pipeline.plan import RECORDS, PlanProgress, PlanRef
        from order_cancel.pipeline.summary import progress_by_plan

        records = []
        for (task_id, _, key), value in self._xcoms.items():
            decoded = json.loads(value) if isinstance(value, str) else value
            if task_id == "plan_batch" and key == "return_value":
                records += [record for plan in decoded for record in PlanProgress.model_validate(plan).records]
            elif _plan_task(task_id) and key == "return_value":
                records += RECORDS.validate_json(decoded["records"])
            elif _plan_task(task_id) and key == "plan_error":
                records += RECORDS.validate_python(decoded)
        ref = PlanRef(plan_pk=plan_pk)
        return progress_by_plan([ref], [record for record in records if record.ref.plan_pk == plan_pk])[plan_pk]

    def final(self, plan_pk: int) -> dict[str, Any]:
        """What the plan ended with: the ERP's request and answer, its attributes, the Omnitron
        outcome and whether its post script ran."""
        progress = self.progress(plan_pk)
        delivery, written, posted = progress.delivery, progress.written, progress.posted
        return {
            "relation": delivery.relation if delivery else None,
            "status_code": delivery.status_code if delivery else None,
            "error": delivery.no_answer if delivery else None,
            "request": delivery.request if delivery else None,
            "request_data": delivery.request_data if delivery else None,
            "response_data": delivery.response_data if delivery else None,
            "attributes": progress.attributes,
            "omnitron": written.outcome if written else None,
            "post_script": None if posted is None else ("ran" if posted.ran else "skipped"),
        }


def _plan_task(task_id: str) -> bool:
    """A task that works on one plan: a per-step task (plan.<stage>), or the one-task-per-plan `plan`."""
    return task_id == "plan" or task_id.startswith("plan.")


class FlowRunner:
    def __init__(self, folder: Path, defaults: dict[str, Any] | None = None):
        self.folder = folder
        self.defaults = defaults or {}

    def write(self, flow: dict[str, Any] | None = None, name: str | None = None, **overrides: Any) -> Path:
        document = merged(merged(flow or BASE_FLOW, self.defaults), overrides)
        path = self.folder / f"{name or document.get('flow_id', 'flow')}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return path

    def write_file(self, relative: str, text: str) -> Path:
        path = self.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def ledger(self, **search: Any) -> list[Any]:
        """The plan ledger's attempts (see conftest: each test has a ledger of its own), oldest first."""
        from order_cancel.ledger.location import from_environment
        from order_cancel.ledger.store import Ledger, Search

        ledger = Ledger.open(from_environment().url.render_as_string(hide_password=False))
        return ledger.find(Search(limit=None, **search))

    def dagbag(self):
        from airflow.dag_processing.dagbag import DagBag

        return DagBag(dag_folder=str(ROOT / "dags"))

    def run(self, flow_id: str = "acme_cancel", conf: dict[str, Any] | None = None, **test_kwargs: Any) -> RunResult:
        bag = self.dagbag()
        dag = bag.get_dag(flow_id)
        assert dag is not None, f"DAG {flow_id} not loaded; import errors: {bag.import_errors}"
        dag_run = dag.test(run_conf=conf, **test_kwargs)
        return collect(dag_run)

    def clear(self, run: RunResult, task: str, map_index: int, flow_id: str = "acme_cancel") -> RunResult:
        """Clear one plan's failed task with its downstream tasks, as the UI's Clear button does
        (the same steps as the REST API's clearTaskInstances), then let the run finish."""
        from airflow import settings
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import clear_task_instances, find_relevant_relatives
        from airflow.serialization.serialized_objects import DagSerialization
        from airflow.utils.state import DagRunState

        dag = self.dagbag().get_dag(flow_id)
        scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
        session = settings.Session()
        relatives = find_relevant_relatives(
            [], [(task, map_index)], direction="downstream", dag=scheduler_dag, run_id=run.run_id, session=session
        )
        normal = {t for t in relatives if isinstance(t, str)}
        mapped = {(task, map_index)} | {t for t in relatives if isinstance(t, tuple)}
        markers = [*normal, *((t, m) for t, m in mapped if t not in normal)]
        tis = scheduler_dag.clear(dry_run=True, task_ids=markers, run_id=run.run_id, session=session)
        clear_task_instances(tis, session, DagRunState.QUEUED)
        session.commit()
        dag_run = session.query(DagRun).filter_by(dag_id=flow_id, run_id=run.run_id).one()
        dag_run.state = DagRunState.RUNNING
        session.commit()
        _drive(dag, scheduler_dag, dag_run, session)
        return collect(dag_run)

    def backfill(self, start: Any, end: Any, flow_id: str = "acme_cancel") -> list[RunResult]:
        """Create a backfill as `airflow backfill create` does, and run its runs one after the other."""
        from airflow import settings
        from airflow.models.backfill import Backfill, _create_backfill
        from airflow.models.dagrun import DagRun
        from airflow.serialization.serialized_objects import DagSerialization
        from airflow.utils.state import DagRunState
        from airflow.utils.types import DagRunType

        dag = self.dagbag().get_dag(flow_id)
        scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
        backfill = _create_backfill(
            dag_id=flow_id,
            from_date=start,
            to_date=end,
            max_active_runs=1,
            reverse=False,
            dag_run_conf=None,
            triggering_user_name="test",
        )
        session = settings.Session()
        run_ids = [
            run_id
            for (run_id,) in session.query(DagRun.run_id)
            .filter_by(dag_id=flow_id, backfill_id=backfill.id, run_type=DagRunType.BACKFILL_JOB)
            .order_by(DagRun.logical_date)
        ]
        results = []
        for run_id in run_ids:
            # Running a task closes the scoped session, so each run is loaded afresh.
            session = settings.Session()
            dag_run = session.query(DagRun).filter_by(dag_id=flow_id, run_id=run_id).one()
            dag_run.state = DagRunState.RUNNING
            session.commit()
            _drive(dag, scheduler_dag, dag_run, session)
            results.append(collect(dag_run))
        # As the scheduler does once every run of a backfill is done.
        session = settings.Session()
        session.query(Backfill).filter_by(id=backfill.id).update({"completed_at": dt.datetime.now(dt.UTC)})
        session.commit()
        return results


def _drive(dag: Any, scheduler_dag: Any, dag_run: Any, session: Any) -> None:
    """Run schedulable task instances until the run finishes: dag.test()'s loop, for an existing run."""
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.state import DagRunState, TaskInstanceState

    dag_run.dag = scheduler_dag
    while dag_run.state == DagRunState.RUNNING:
        session.expire_all()
        schedulable, _ = dag_run.update_state(session=session)
        for ti in schedulable:
            ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        for ti in [ti for ti in dag_run.get_task_instances(session=session) if ti.state == TaskInstanceState.SCHEDULED]:
            _run_task(ti=ti, task=dag.task_dict[ti.task_id])


def variable(key: str) -> str | None:
    """An Airflow Variable as stored in the metadata database (tests run outside any task)."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(Variable).filter_by(key=key).one_or_none()
        return row.val if row else None


def variable_keys() -> list[str]:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        return sorted(key for (key,) in session.query(Variable.key))


def delete_variables() -> None:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Variable).delete()


def collect(dag_run: Any) -> RunResult:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        tasks = [TaskRecord(ti.task_id, ti.map_index, ti.state, ti.rendered_map_index, ti.try_number) for ti in tis]
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        xcoms = {(row.task_id, row.map_index, row.key): XComModel.deserialize_value(row) for row in rows}
    return RunResult(dag_run, tasks, xcoms)
