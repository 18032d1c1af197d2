"""What the benchmark runs: the flow file template, the plans, the modes and the no-op twin DAG.

Nothing here imports Airflow: the driver (bench.run) uses it to prepare each subprocess's folders.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fakes import make_plan

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_FLOWS = ROOT / "include" / "flows"
FLOWS_DAG_FILE = ROOT / "dags" / "order_cancel_flows.py"

OMNITRON_CONN, ERP_CONN = "omnitron_bench", "erp_bench"
OMNITRON_LOGIN, ERP_LOGIN = ("omnitron", "omnitron-pass"), ("erp", "erp-pass")
ERP_WRITE_PATH = "/api/cancellations"
PAGE_SIZE = 100

# A production-like flow file: the example flow's script and Jolt mapping, an ERP token login and
# the default response table (no custom response script, no post script).
FLOW_TEMPLATE: dict[str, Any] = {
    "flow_id": "bench_flow",
    "description": "Benchmark flow: web cancellations and refunds to the ERP, approved in Omnitron",
    "schedule": "*/5 * * * *",
    "timezone": "Europe/Istanbul",
    "tags": ["bench"],
    "omnitron": {"conn_id": OMNITRON_CONN},
    "get_data": {
        "channel_type": "web",
        "cancel_type": "all",
        "cancel_status": "waiting",
        "channel_ids": "1,2",
        "page_size": PAGE_SIZE,
    },
    "script": "scripts/enrich_plan.py",
    "mapping": "mappings/erp_cancel.json",
    "erp": {
        "conn_id": ERP_CONN,
        "login": {"type": "token", "url": "/api/auth/login", "token_path": "access_token", "prefix": "Bearer"},
    },
    "write_erp": {"url": ERP_WRITE_PATH, "method": "POST"},
    "write_omnitron": {"next_state": "approved"},
}


@dataclass(frozen=True)
class Mode:
    """A way to run the same flow: extra flow file settings, and when the mode can run at all."""

    name: str
    flow_overrides: dict[str, Any] = field(default_factory=dict)
    # A FlowConfig field the mode needs; while the project lacks it the mode's rows are skipped.
    needs_field: str | None = None
    min_plans: int = 0

    @property
    def batched(self) -> bool:
        return "batch" in self.flow_overrides


MODES = (
    Mode("per-step"),
    Mode("single", {"plan_tasks": "single"}, needs_field="plan_tasks"),
    # The flow file's defaults (size 250, concurrency 8), then other batch sizes for the largest run.
    Mode("batch", {"batch": {}}, needs_field="batch", min_plans=100),
    *(
        Mode(f"batch of {size}", {"batch": {"size": size}}, needs_field="batch", min_plans=500)
        for size in (50, 100, 500)
    ),
)


def flow_document(flow_id: str, **overrides: Any) -> dict[str, Any]:
    """The template with top-level settings replaced; a mapping is merged into the template's one."""
    document = copy.deepcopy(FLOW_TEMPLATE)
    document["flow_id"] = flow_id
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    return document


def run_flow_document(plans: int, mode: Mode | None = None) -> dict[str, Any]:
    """The flow of a timed run: every plan in one run, and no retries (a failure must show at once)."""
    return flow_document(
        "bench_run",
        retries=0,
        get_data={"max_plans_per_run": plans},
        **(mode.flow_overrides if mode else {}),
    )


def write_flows(folder: Path, documents: list[dict[str, Any]]) -> None:
    """A flow folder as users have it: the flow files next to the scripts and mappings they name."""
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("scripts", "mappings"):
        shutil.copytree(EXAMPLE_FLOWS / part, folder / part, dirs_exist_ok=True)
    for document in documents:
        path = folder / f"{document['flow_id']}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")


def bench_plans(count: int) -> list[dict[str, Any]]:
    """Waiting web plans of 1-3 items, cancellations and refunds, on channels 1 and 2."""
    return [
        make_plan(pk, plan_type="refund" if pk % 4 == 0 else "cancel", channel=1 + pk % 2, items=1 + pk % 3)
        for pk in range(1, count + 1)
    ]


NOOP_DAG = '''"""No-op twin of a benchmarked flow run: the same task instances doing nothing (Airflow's own cost)."""
import pendulum
from airflow.sdk import DAG, task, task_group

DAG_ID = {dag_id!r}
GROUP = {group!r}
STEPS = {steps!r}
ITEMS = {items!r}


@task
def noop(value=None):
    return value


@task
def fetch(dag_run=None):
    # A run's conf may set the count (the Celery benchmark's floors, one DAG for every plan count).
    items = (dag_run.conf or {{}}).get("items", ITEMS)
    return [{{"ref": {{"plan_pk": index}}}} for index in range(items)]


@task_group(group_id=GROUP)
def per_item(item):
    value = item
    for step in STEPS:
        value = noop.override(task_id=step)(value)


with DAG(dag_id=DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    login = noop.override(task_id="login")()
    items = fetch.override(task_id="fetch_plans")()
    login >> items
    if GROUP:
        mapped = per_item.expand(item=items)
    else:  # mapped tasks outside a group, each mapped over the one before
        mapped = items
        for step in STEPS:
            mapped = noop.override(task_id=step).expand(value=mapped)
    mapped >> noop.override(task_id="summary", trigger_rule="all_done")()
'''


def write_noop_dag(folder: Path, dag_id: str, shape: dict[str, Any]) -> Path:
    """A DAG file with the measured run's shape: login, a fetch of `items` (or of the run conf's
    `items`), the mapped steps (in a group when the flow has one), a summary."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dag_id}.py"
    path.write_text(NOOP_DAG.format(dag_id=dag_id, **shape), encoding="utf-8")
    return path
