"""DAG integrity, as Astronomer projects have it (their tests/dags/): the real DAG files, with the example
flows of include/flows, import without errors, and every DAG they make follows the house rules.

It runs on Airflow 3.3 with the environment of tests/conftest.py (a private Airflow home, SQLite);
only the flows folder is switched from the suite's empty one to include/flows. Note for Airflow 3.3:
`DagBag` comes from airflow.dag_processing.dagbag and takes no `include_examples` any more (the
conftest environment sets AIRFLOW__CORE__LOAD_EXAMPLES=False), and `dag.tags` is a set.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DAGS_FOLDER = ROOT / "dags"
FLOWS_DIR = ROOT / "include" / "flows"
FLOW_FILES = sorted([*FLOWS_DIR.glob("*.yaml"), *FLOWS_DIR.glob("*.yml")])


def flow_id_of(path: Path) -> str:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["flow_id"]


EXPECTED = {flow_id_of(path): path for path in FLOW_FILES}


@pytest.fixture(scope="module")
def dag_bag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ORDER_CANCEL_FLOWS_DIR", str(FLOWS_DIR))
        return DagBag(dag_folder=str(DAGS_FOLDER))


def test_the_example_flows_are_there():
    assert EXPECTED, f"no flow files in {FLOWS_DIR}"


def test_no_import_errors(dag_bag):
    errors = {str(Path(path).relative_to(ROOT)): error for path, error in dag_bag.import_errors.items()}
    assert errors == {}


def test_one_dag_per_flow_file_named_by_its_flow_id(dag_bag):
    assert set(dag_bag.dag_ids) == set(EXPECTED)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_follows_the_house_rules(dag_bag, dag_id):
    dag = dag_bag.dags[dag_id]
    assert dag.tags, f"{dag_id} has no tags"
    assert dag.default_args.get("retries", 0) >= 1, f"{dag_id}: default_args retries {dag.default_args.get('retries')}"
    assert dag.max_active_runs == 1, f"{dag_id}: max_active_runs {dag.max_active_runs}"
    assert Path(dag.fileloc) == DAGS_FOLDER / "order_cancel_flows.py"
    assert str(EXPECTED[dag_id]) in (dag.doc_md or ""), f"{dag_id} does not name its flow file"
