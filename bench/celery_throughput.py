"""Celery throughput on the production-like stack of devtools/celery_stack.py (PostgreSQL, the
CeleryExecutor with Redis, the fakes): one flow run of N plans (default 200) per layout (per step,
one task per plan, batches of 50), with 1 Celery worker and then with 2; then, with 2 workers, batch
runs of 500 and 5,000 plans (batches of 250, the default) against their floors.

    PYTHONPATH=. .venv/bin/python -m bench.celery_throughput [--plans 200] [--concurrency 4]
        [--big 5000] [--out bench/celery_results.json]

PostgreSQL and Redis must run (devtools/ensure_services.sh). The stack gets a metadata database of
its own (`airflow_order_cancel_bench`, dropped at the end), Redis database 9, free ports and a
temporary Airflow home; nothing of `bin/airflow-celery` is touched.

The flows (one per layout): waiting web cancellations of channels 1 and 2, the example Jolt mapping,
ERP token login, default response table, approved in Omnitron; retries 0 (a failure shows at once).
Each measured run gets fresh plans (new pks); a short warm-up run of each flow comes first and is not
reported; batch runs of N plans last seconds, so they are measured three times and the median kept.

Wall time: from the trigger (POST dagRuns) until the REST API reports the run finished (polled every
0.5 s). A run only counts if it succeeded, every plan is approved in the fake Omnitron and the fake
ERP received each plan once. Peak memory: every task process (titled `airflow worker -- <ti id>`) is
sampled every 0.1 s while the run lasts; each task's largest resident set is reported.

The goals (issue: one task per plan): the single layout with 2 workers at least 2.5 plans/s; a batch
run of 5,000 plans within 2 x the HTTP floor (the same calls in a plain loop, bench.child) + one
batch's fixed overhead (a one-plan run of the same flow), and no task's peak memory above 1.5 x its
figure in the 500-plan run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from devtools.airflow_env import ROOT
from devtools.celery_stack import CeleryStack, CeleryStackConfig, check_services, drop_database, throwaway_config
from devtools.stack_client import AirflowRest, FakesClient
from fakes.data import make_plan

LAYOUTS: dict[str, dict[str, Any]] = {
    "per-step": {},
    "single": {"plan_tasks": "single"},
    "batch": {"batch": {"size": 50, "concurrency": 8}},
}
BIG = "batch-default"  # batches of 250: the 500-plan, 5,000-plan and one-plan runs
FLOWS = {**LAYOUTS, BIG: {"batch": {}}}
# Short runs vary with scheduling latency: measured three times (fresh plans each time), the median kept.
REPEATS = {"per-step": 1, "single": 1, "batch": 3}
WORKER_COUNTS = (1, 2)
WARMUP_PLANS = 4
RUN_TIMEOUT_S = 30 * 60
ERP_PATH = "/api/cancellations"
SINGLE_GOAL_PLANS_PER_S, BIG_RUN_FACTOR, MEMORY_FACTOR = 2.5, 2.0, 1.5
TASK_TITLE = "airflow worker -- "


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.celery_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=int, default=200, help="plans per layout run (default %(default)s)")
    parser.add_argument("--big", type=int, default=5000, help="plans of the big batch run (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="task slots per worker (default %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "celery_results.json")
    parser.add_argument("--keep-home", action="store_true", help="keep the Airflow home (logs) and print where")
    return parser.parse_args(argv)


def flow_id_of(layout: str) -> str:
    return "celery_bench_" + layout.replace("-", "_")


def flow_document(layout: str, max_plans: int) -> dict[str, Any]:
    return {
        "flow_id": flow_id_of(layout),
        "description": f"Celery throughput benchmark ({layout})",
        "schedule": None,
        "retries": 0,
        "omnitron": {"conn_id": "omnitron_demo"},
        "get_data": {
            "channel_type": "web",
            "cancel_type": "all",
            "cancel_status": "waiting",
            "channel_ids": [1, 2],
            "page_size": 100,
            "max_plans_per_run": max_plans,
        },
        "mapping": "mappings/erp_cancel.json",
        "erp": {"conn_id": "erp_demo", "login": {"type": "token", "url": "/api/auth/login", "prefix": "Bearer"}},
        "write_erp": {"url": ERP_PATH, "method": "POST"},
        "write_omnitron": {"next_state": "approved"},
        **FLOWS[layout],
    }


def write_flows(folder: Path, big: int) -> None:
    shutil.copytree(ROOT / "include" / "flows" / "mappings", folder / "mappings")
    for layout in FLOWS:
        document = flow_document(layout, big if layout == BIG else 500)
        (folder / f"{flow_id_of(layout)}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


class TaskMemory:
    """Samples the task processes' resident memory while a run lasts: the peak per task instance id."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TaskMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            for process in psutil.process_iter(["cmdline", "memory_info"]):
                title = " ".join(process.info["cmdline"] or [])
                if title.startswith(TASK_TITLE) and process.info["memory_info"]:
                    ti_id = title[len(TASK_TITLE) :].strip()
                    self.peaks[ti_id] = max(self.peaks.get(ti_id, 0.0), process.info["memory_info"].rss / 2**20)


class Bench:
    def __init__(self, stack: CeleryStack, rest: AirflowRest, fakes: FakesClient):
        self.stack, self.rest, self.fakes = stack, rest, fakes
        self.next_pk = 1

    def fresh_plans(self, count: int) -> list[int]:
        pks = list(range(self.next_pk, self.next_pk + count))
        self.next_pk += count
        for start in range(0, count, 1000):  # the control API takes the plans in parts
            self.fakes.add_plans(
                [
                    make_plan(pk, plan_type="refund" if pk % 4 == 0 else "cancel", channel=1 + pk % 2, items=1 + pk % 3)
                    for pk in pks[start : start + 1000]
                ]
            )
        return pks

    def run(self, layout: str, plans: int) -> dict[str, Any]:
        dag_id = flow_id_of(layout)
        pks = self.fresh_plans(plans)
        with TaskMemory() as memory:
            started = time.monotonic()
            run_id = self.rest.trigger(dag_id)["dag_run_id"]
            run = self.rest.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT_S)
            wall = time.monotonic() - started
        instances = self.rest.task_instances(dag_id, run_id)
        self.check(dag_id, run, instances, pks)
        return {
            "layout": layout,
            "plans": plans,
            "wall_s": round(wall, 2),
            "run_duration_s": round(run["duration"], 2),
            "plans_per_s": round(plans / wall, 2),
            "task_instances": len(instances),
            "peak_rss_mb": peaks_by_task(instances, memory.peaks),
            "task_instances_by_worker": self.by_worker(run_id),
        }

    def check(self, dag_id: str, run: dict, instances: list[dict], pks: list[int]) -> None:
        if run["state"] != "success":
            failed = [(ti["task_id"], ti["map_index"]) for ti in instances if ti["state"] not in ("success", "skipped")]
            raise SystemExit(f"{dag_id} run {run['dag_run_id']} ended {run['state']}; not successful: {failed[:10]}")
        statuses = self.fakes.plan_statuses(pks)
        if set(statuses.values()) != {"approved"}:
            raise SystemExit(f"{dag_id}: not approved: {[pk for pk, s in statuses.items() if s != 'approved'][:10]}")
        wanted = set(pks)
        sent = [
            c["body"]["cancellationId"]
            for c in self.fakes.erp_requests(ERP_PATH)
            if c["body"]["cancellationId"] in wanted
        ]
        if sorted(sent) != pks:
            raise SystemExit(f"{dag_id}: the ERP received {len(sent)} writes for {len(pks)} plans")

    def by_worker(self, run_id: str) -> dict[str, int]:
        counts = {
            path.stem: sum(
                1
                for line in path.read_text(errors="replace").splitlines()
                if "Executing workload in Celery" in line and f"run_id='{run_id}'" in line
            )
            for path in sorted(self.stack.stack.log_dir.glob("worker-*.log"))
        }
        return {name: count for name, count in counts.items() if count}

    def http_floor(self, plans: int, folder: Path) -> float:
        """The flow's HTTP calls for `plans` fresh plans in a plain loop (bench.child), on this stack's fakes."""
        self.fresh_plans(plans)
        result = folder / "http-floor.json"
        params = {
            "flow_file": str(folder / "flows" / f"{flow_id_of(BIG)}.yaml"),
            "omnitron_url": self.fakes.omnitron,
            "erp_url": self.fakes.erp,
            "omnitron_login": ["omnitron", "omnitron-pass"],
            "erp_login": ["erp", "erp-pass"],
        }
        command = [sys.executable, "-m", "bench.child", "http_floor", json.dumps(params), str(result)]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        floor = json.loads(result.read_text())
        if floor["plans"] != plans:
            raise SystemExit(f"HTTP floor: {floor['plans']} plans listed, {plans} expected")
        return round(floor["http_s"], 2)


def peaks_by_task(instances: list[dict], peaks: dict[str, float]) -> dict[str, float]:
    """The largest resident set of each task's instances, MB."""
    by_task: dict[str, float] = {}
    for ti in instances:
        if ti["id"] in peaks:
            by_task[ti["task_id"]] = round(max(by_task.get(ti["task_id"], 0.0), peaks[ti["id"]]), 1)
    return by_task


def layout_rows(bench: Bench, stack: CeleryStack, plans: int) -> list[dict[str, Any]]:
    rows = []
    for workers in WORKER_COUNTS:
        while len(stack.workers) < workers:
            stack.add_worker()
        for layout in LAYOUTS:
            print(f"celery-bench: {workers} worker(s), {layout}, {plans} plans ...", flush=True)
            runs = sorted((bench.run(layout, plans) for _ in range(REPEATS[layout])), key=lambda run: run["wall_s"])
            row = {"workers": workers, **runs[len(runs) // 2]}
            if len(runs) > 1:
                row["runs_wall_s"] = [run["wall_s"] for run in runs]
            print(f"celery-bench:   {row['wall_s']} s wall, {row['plans_per_s']} plans/s", flush=True)
            rows.append(row)
    return rows


def big_batch(bench: Bench, big: int, folder: Path) -> dict[str, Any]:
    """With 2 workers: the fixed overhead (one plan), 500 plans, `big` plans, and the HTTP floor of `big`."""
    print(f"celery-bench: batches of 250: 1, 500 and {big} plans, and the HTTP floor of {big} ...", flush=True)
    fixed, medium, large = (bench.run(BIG, plans) for plans in (1, 500, big))
    http_s = bench.http_floor(big, folder)
    goal_s = BIG_RUN_FACTOR * http_s + fixed["wall_s"]
    memory = {
        task: {"at_500": medium["peak_rss_mb"].get(task), f"at_{big}": peak}
        for task, peak in large["peak_rss_mb"].items()
    }
    # A task that did not run at 500 plans (a batch's failed plan, continued in its own `plan` task)
    # has no figure to compare with; it handles one plan whatever the run's size.
    compared = {task: value for task, value in memory.items() if value["at_500"]}
    memory_ok = all(value[f"at_{big}"] <= MEMORY_FACTOR * value["at_500"] for value in compared.values())
    return {
        "runs": [fixed, medium, large],
        "http_floor_s": http_s,
        "goal_s": round(goal_s, 2),
        "goal_met": large["wall_s"] <= goal_s,
        "peak_rss_mb": memory,
        "memory_goal_met": memory_ok,
        "memory_not_compared": sorted(set(memory) - set(compared)),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | layout | plans | task instances | wall (s) | plans/s | by worker |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        by_worker = ", ".join(f"{name} {count}" for name, count in row["task_instances_by_worker"].items())
        wall = f"{row['wall_s']}" + (
            f" (runs {', '.join(map(str, row['runs_wall_s']))})" if "runs_wall_s" in row else ""
        )
        lines.append(
            f"| {row['workers']} | {row['layout']} | {row['plans']} | {row['task_instances']} | {wall} "
            f"| {row['plans_per_s']} | {by_worker} |"
        )
    return "\n".join(lines)


def stack_config(base: Path, concurrency: int) -> CeleryStackConfig:
    return throwaway_config(
        base,
        flows_dir=base / "flows",
        database="airflow_order_cancel_bench",
        redis_db=9,
        manual_only=True,
        workers=1,
        concurrency=concurrency,
        # A busy 2-core machine must not time out healthy tasks: keep a roomy heartbeat timeout here.
        heartbeat_timeout=60,
    )


def measure(args: argparse.Namespace, base: Path, config: CeleryStackConfig) -> dict[str, Any]:
    stack = CeleryStack(config)
    try:
        print(f"celery-bench: stack ready in {stack.start():.1f} s (home {config.home})", flush=True)
        rest = AirflowRest(config.port).login()
        bench = Bench(stack, rest, FakesClient(config.omnitron_port, config.erp_port))
        for layout in FLOWS:
            rest.wait_for_dag(flow_id_of(layout))
            rest.unpause(flow_id_of(layout))
            print(f"celery-bench: warm-up {layout}: {bench.run(layout, WARMUP_PLANS)['wall_s']} s", flush=True)
        rows = layout_rows(bench, stack, args.plans)
        return {"results": rows, "big_batch": big_batch(bench, args.big, base)}
    finally:
        stack.stop()
        drop_database(config)


def goals(measured: dict[str, Any]) -> dict[str, Any]:
    single = next(row for row in measured["results"] if row["layout"] == "single" and row["workers"] == 2)
    big = measured["big_batch"]
    return {
        "single_2_workers_plans_per_s": single["plans_per_s"],
        "single_goal_met": single["plans_per_s"] >= SINGLE_GOAL_PLANS_PER_S,
        "big_batch_wall_s": big["runs"][-1]["wall_s"],
        "big_batch_goal_s": big["goal_s"],
        "big_batch_goal_met": big["goal_met"],
        "memory_goal_met": big["memory_goal_met"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="celery-bench-"))
    write_flows(base / "flows", args.big)
    config = stack_config(base, args.concurrency)
    check_services(config)
    started_at = dt.datetime.now(dt.UTC)
    try:
        measured = measure(args, base, config)
    finally:
        if args.keep_home:
            print(f"celery-bench: Airflow home kept in {config.home}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    versions = ("apache-airflow", "apache-airflow-providers-celery", "celery", "kombu", "redis", "psycopg2-binary")
    report = {
        "benchmark": "celery_throughput",
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "versions": {name: importlib.metadata.version(name) for name in versions},
        "stack": {
            "executor": "CeleryExecutor",
            "broker": "redis",
            "metadata_db": "postgresql",
            "concurrency_per_worker": args.concurrency,
            "parallelism": config.parallelism,
            "flow": flow_document("per-step", 500),
            "layouts": LAYOUTS,
        },
        "wall_time": "trigger (POST dagRuns) until the REST API reports the run finished, polled every 0.5 s; "
        "batch rows: the median of 3 runs (runs_wall_s)",
        **measured,
        "goals": goals(measured),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(measured["results"]))
    print(json.dumps(report["goals"], indent=2))
    print(f"celery-bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
