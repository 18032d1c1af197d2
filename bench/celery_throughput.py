"""Celery throughput on the production-like stack of devtools/celery_stack.py (PostgreSQL, the
CeleryExecutor with Redis, the fakes): one flow run of N plans (default 200) per layout (per step,
one task per plan, batches of 50), each beside its no-op floor, with 1 Celery worker and then with 2;
then, with 2 workers, batch runs of 500 and 5,000 plans (batches of 250, the default) against their
floors; then a run per layout (and batches of 250 with 32 threads) against an ERP that answers after
150 ms, against the latency floor.

    PYTHONPATH=. .venv/bin/python -m bench.celery_throughput [--plans 200] [--concurrency 4]
        [--big 5000] [--latency-ms 150] [--latency-plans 1000] [--per-step-latency-plans 100]
        [--out bench/celery_results.json]

PostgreSQL and Redis must run (devtools/ensure_services.sh). The stack gets a metadata database of
its own (`airflow_order_cancel_bench_<pid>`, dropped at the end), Redis database 9, free ports and a
temporary Airflow home and DAG folder; nothing of `bin/airflow-celery` is touched.

The flows (one per layout): waiting web cancellations of channels 1 and 2, the example Jolt mapping,
ERP token login, default response table, approved in Omnitron; retries 0 (a failure shows at once).
Each measured run gets fresh plans (new pks); a short warm-up run of each flow and each no-op DAG
comes first and is not reported; batch runs of N plans last seconds, so they are measured three
times and the median kept.

No-op floors (Airflow's own cost on this stack): beside the project's DAG files the stack reads a
no-op twin of each layout (bench.scenarios.write_noop_dag: login, fetch, the layout's mapped tasks
doing nothing, summary), run right after the flow with as many mapped task instances; a layout's
plans/s is reported as a ratio to its twin's (vs floor: 1.0 would be no cost beyond Airflow's own).

The ERP with latency: the fake ERP holds every answer `--latency-ms` (its login's too); each layout
runs `--latency-plans` plans (per step: `--per-step-latency-plans`, its three task instances per plan
make it the slowest) with 2 workers. Latency floor: plans x latency / the ERP calls the layout has in
flight (batches: batch.concurrency x the batches that run at once, at most the worker slots; the
other layouts: the worker slots). The batch layouts also run the same plans without latency: the
difference (latency added) is the wait the layout did not hide, reported against the latency floor
too, since a run's fixed cost (login, fetch, scheduling) can exceed the floor itself.

Wall time: from the trigger (POST dagRuns) until the REST API reports the run finished (polled every
0.5 s). A run only counts if it succeeded, every plan is approved in the fake Omnitron and the fake
ERP received each plan once. Peak memory: every task process (titled `airflow worker -- <ti id>`) is
sampled every 0.1 s while the run lasts; each task's largest resident set is reported. Where the time
goes: each task's mean duration and wait from queued to start (REST API), and the CPU seconds each
component used during the run (its process tree, reaped task processes included; PostgreSQL is the
machine's whole server); the machine's load average at each run's end.

The goals (issues: one task per plan, 25): the single layout with 2 workers at least 2.5 plans/s and
at least 0.8x its no-op floor's plans/s; a batch run of 5,000 plans within 2 x the HTTP floor (the
same calls in a plain loop, bench.child) + one batch's fixed overhead (a one-plan run of the same
flow), and no task's peak memory above 1.5 x its figure in the 500-plan run; with the ERP's latency,
each batch layout's latency added within 1.3x its latency floor.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.scenarios import write_noop_dag
from devtools.airflow_env import ROOT
from devtools.celery_stack import CeleryStack, CeleryStackConfig, check_services, drop_database, throwaway_config
from devtools.stack_client import AirflowRest, FakesClient
from fakes.data import make_plan
from order_cancel.flows.loading import load_flow

LAYOUTS: dict[str, dict[str, Any]] = {
    "per-step": {},
    "single": {"plan_tasks": "single"},
    "batch": {"batch": {"size": 50, "concurrency": 8}},
}
BIG = "batch-default"  # batches of 250: the 500-plan, 5,000-plan and one-plan runs
# Batches of 250 with more threads: what raising batch.concurrency does against an ERP with latency.
WIDE = "batch-concurrency-32"
FLOWS = {**LAYOUTS, BIG: {"batch": {}}, WIDE: {"batch": {"concurrency": 32}}}
# Each layout's no-op twin: its mapped tasks, named as the flow's (checked against every measured
# run, see `twin_items`); the number of items comes with each run's conf.
NOOP_SHAPES: dict[str, dict[str, Any]] = {
    "per-step": {"group": "plan", "steps": ["transform", "write_erp", "write_omnitron"]},
    "single": {"group": None, "steps": ["plan"]},
    "batch": {"group": None, "steps": ["plan_batch"]},
}
# Short runs vary with scheduling latency: measured three times (fresh plans each time), the median kept.
REPEATS = {"per-step": 1, "single": 1, "batch": 3, BIG: 3, WIDE: 3}
WORKER_COUNTS = (1, 2)
WARMUP_PLANS = 4
RUN_TIMEOUT_S = 30 * 60
ERP_PATH = "/api/cancellations"
SINGLE_GOAL_PLANS_PER_S, SINGLE_VS_FLOOR_GOAL = 2.5, 0.8
BIG_RUN_FACTOR, MEMORY_FACTOR, LATENCY_FACTOR = 2.0, 1.5, 1.3
TASK_TITLE = "airflow worker -- "


SECTIONS = ("layouts", "big", "latency")


class RunFailed(Exception):
    """A run that cannot be measured: it failed, or the fakes saw a plan not delivered once."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.celery_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=int, default=200, help="plans per layout run (default %(default)s)")
    parser.add_argument("--big", type=int, default=5000, help="plans of the big batch run (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="task slots per worker (default %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=150, help="the ERP's latency (default %(default)s)")
    parser.add_argument(
        "--latency-plans", type=int, default=1000, help="plans per run with latency (default %(default)s)"
    )
    parser.add_argument(
        "--per-step-latency-plans", type=int, default=100, help="the per-step run's (default %(default)s)"
    )
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to measure (default: all)"
    )
    parser.add_argument(
        "--latency-layouts", nargs="+", choices=list(FLOWS), default=list(FLOWS), help="the latency rows' layouts"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "celery_results.json")
    parser.add_argument("--keep-home", action="store_true", help="keep the Airflow home (logs) and print where")
    return parser.parse_args(argv)


def flow_id_of(layout: str) -> str:
    return "celery_bench_" + layout.replace("-", "_")


def noop_id_of(layout: str) -> str:
    return "celery_noop_" + layout.replace("-", "_")


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


def latency_plans(args: argparse.Namespace, layout: str) -> int:
    return args.per_step_latency_plans if layout == "per-step" else args.latency_plans


def most_plans(args: argparse.Namespace, layout: str) -> int:
    """The most plans a run of the layout's flow gets (its max_plans_per_run)."""
    return max(args.big if layout == BIG else args.plans, latency_plans(args, layout))


def write_flows(folder: Path, args: argparse.Namespace) -> None:
    shutil.copytree(ROOT / "include" / "flows" / "mappings", folder / "mappings")
    for layout in FLOWS:
        document = flow_document(layout, most_plans(args, layout))
        (folder / f"{flow_id_of(layout)}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def write_dags(folder: Path) -> None:
    """The project's DAG files and each layout's no-op twin."""
    shutil.copytree(ROOT / "dags", folder, ignore=shutil.ignore_patterns("__pycache__"))
    for layout, shape in NOOP_SHAPES.items():
        write_noop_dag(folder, noop_id_of(layout), {**shape, "items": WARMUP_PLANS})


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


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds a process and its descendants used so far; the children it reaped (task processes,
    PostgreSQL's backends of closed connections) count in its own figures."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in tree:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def postgres_pid() -> int | None:
    """The PostgreSQL server's main process (the parent of its backends)."""
    for process in psutil.process_iter(["name", "ppid"]):
        if process.info["name"] == "postgres":
            with contextlib.suppress(psutil.Error):
                if psutil.Process(process.info["ppid"]).name() != "postgres":
                    return process.pid
    return None


class Bench:
    def __init__(self, stack: CeleryStack, rest: AirflowRest, fakes: FakesClient, slots_per_worker: int):
        self.stack, self.rest, self.fakes = stack, rest, fakes
        self.slots_per_worker = slots_per_worker
        self.next_pk = 1
        self.postgres = postgres_pid()

    @property
    def slots(self) -> int:
        return len(self.stack.workers) * self.slots_per_worker

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

    def cpu_seconds(self) -> dict[str, float]:
        """Each component's CPU seconds so far; the workers together."""
        used: dict[str, float] = {}
        for name, process in self.stack.stack.processes:
            component = "workers" if name.startswith("worker-") else name
            used[component] = used.get(component, 0.0) + tree_cpu_seconds(process.pid)
        if self.postgres:
            used["postgres"] = tree_cpu_seconds(self.postgres)
        return used

    def timed_run(self, dag_id: str, conf: dict | None = None) -> tuple[dict[str, Any], list[dict]]:
        """One run of a DAG, from its trigger until the REST API reports it finished."""
        cpu_before = self.cpu_seconds()
        with TaskMemory() as memory:
            started = time.monotonic()
            run_id = self.rest.trigger(dag_id, conf)["dag_run_id"]
            run = self.rest.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT_S)
            wall = time.monotonic() - started
        cpu_after = self.cpu_seconds()
        instances = self.rest.task_instances(dag_id, run_id)
        if run["state"] != "success":
            failed = [(ti["task_id"], ti["map_index"]) for ti in instances if ti["state"] not in ("success", "skipped")]
            raise RunFailed(f"{dag_id} run {run_id} ended {run['state']}; not successful: {failed[:10]}")
        return {
            "wall_s": round(wall, 2),
            "run_duration_s": round(run["duration"], 2),
            # The machine's 1-minute load at the run's end: the benchmark shares it with other jobs.
            "load_average": round(os.getloadavg()[0], 1),
            "task_instances": len(instances),
            "tasks": task_times(instances),
            "cpu_s": {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2) for name in cpu_after},
            "peak_rss_mb": peaks_by_task(instances, memory.peaks),
            "task_instances_by_worker": self.by_worker(run_id),
        }, instances

    def run(self, layout: str, plans: int) -> tuple[dict[str, Any], list[dict]]:
        """One flow run of `plans` fresh plans, checked at the fakes."""
        pks = self.fresh_plans(plans)
        erp_calls_before = len(self.fakes.erp_requests())
        measured, instances = self.timed_run(flow_id_of(layout))
        erp_calls = self.fakes.erp_requests()[erp_calls_before:]
        self.check(layout, erp_calls, pks)
        measured["erp_calls"] = dict(Counter(call["path"] for call in erp_calls))
        return {"layout": layout, "plans": plans, "plans_per_s": round(plans / measured["wall_s"], 2), **measured}, (
            instances
        )

    def floor(self, layout: str, instances: list[dict], plans: int) -> dict[str, Any]:
        """The layout's no-op twin with as many mapped task instances as the flow's run had."""
        measured, _ = self.timed_run(noop_id_of(layout), {"items": twin_items(layout, instances)})
        return {"plans_per_s": round(plans / measured["wall_s"], 2), **measured}

    def check(self, layout: str, erp_calls: list[dict], pks: list[int]) -> None:
        """Every plan approved in Omnitron and written to the ERP once, by the run's ERP calls."""
        statuses = self.fakes.plan_statuses(pks)
        if set(statuses.values()) != {"approved"}:
            raise RunFailed(f"{layout}: not approved: {[pk for pk, s in statuses.items() if s != 'approved'][:10]}")
        sent = [call["body"]["cancellationId"] for call in erp_calls if call["path"] == ERP_PATH]
        if sorted(sent) != pks:
            raise RunFailed(f"{layout}: the ERP received {len(sent)} writes for {len(pks)} plans")

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
            raise RunFailed(f"HTTP floor: {floor['plans']} plans listed, {plans} expected")
        return round(floor["http_s"], 2)


def twin_items(layout: str, instances: list[dict]) -> int:
    """The items the layout's no-op twin maps over: as many as each of the run's mapped tasks had,
    which must be the twin's tasks."""
    shape = NOOP_SHAPES[layout]
    expected = {f"{shape['group']}.{step}" if shape["group"] else step for step in shape["steps"]}
    counts = Counter(ti["task_id"] for ti in instances if ti["map_index"] >= 0)
    if set(counts) != expected or len(set(counts.values())) != 1:
        raise RunFailed(f"{layout}: mapped task instances {dict(counts)}; its no-op twin maps {sorted(expected)}")
    return next(iter(counts.values()))


def task_times(instances: list[dict]) -> dict[str, dict[str, float]]:
    """Per task: its instances' mean duration and mean wait from queued to start, seconds."""
    durations: dict[str, list[float]] = {}
    waits: dict[str, list[float]] = {}
    for ti in instances:
        if ti["duration"] is None:
            continue  # skipped
        durations.setdefault(ti["task_id"], []).append(ti["duration"])
        if ti["queued_when"] and ti["start_date"]:
            wait = dt.datetime.fromisoformat(ti["start_date"]) - dt.datetime.fromisoformat(ti["queued_when"])
            waits.setdefault(ti["task_id"], []).append(wait.total_seconds())
    return {
        task_id: {
            "mean_s": round(statistics.mean(values), 3),
            "queued_s": round(statistics.mean(waits.get(task_id) or [0.0]), 3),
        }
        for task_id, values in durations.items()
    }


def peaks_by_task(instances: list[dict], peaks: dict[str, float]) -> dict[str, float]:
    """The largest resident set of each task's instances, MB."""
    by_task: dict[str, float] = {}
    for ti in instances:
        if ti["id"] in peaks:
            by_task[ti["task_id"]] = round(max(by_task.get(ti["task_id"], 0.0), peaks[ti["id"]]), 1)
    return by_task


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time, with every run's wall time when there were several."""
    ordered = sorted(runs, key=lambda run: run["wall_s"])
    median = ordered[len(ordered) // 2]
    return {**median, "runs_wall_s": [run["wall_s"] for run in ordered]} if len(runs) > 1 else median


def layout_rows(bench: Bench, stack: CeleryStack, plans: int, rows: list[dict[str, Any]]) -> None:
    """Each layout with 1 and 2 workers, each run followed by its no-op twin's, into `rows`."""
    for workers in WORKER_COUNTS:
        while len(stack.workers) < workers:
            stack.add_worker()
        for layout in LAYOUTS:
            print(f"celery-bench: {workers} worker(s), {layout}, {plans} plans and its no-op floor ...", flush=True)
            runs, floors = [], []
            for _ in range(REPEATS[layout]):
                run, instances = bench.run(layout, plans)
                runs.append(run)
                floors.append(bench.floor(layout, instances, plans))
            row = {"workers": workers, **median_of(runs), "floor": median_of(floors)}
            row["vs_floor"] = round(row["plans_per_s"] / row["floor"]["plans_per_s"], 2)
            print(
                f"celery-bench:   {row['wall_s']} s wall, {row['plans_per_s']} plans/s; no-op floor "
                f"{row['floor']['wall_s']} s, {row['floor']['plans_per_s']} plans/s: {row['vs_floor']}x",
                flush=True,
            )
            rows.append(row)


def big_batch(bench: Bench, big: int, folder: Path) -> dict[str, Any]:
    """With 2 workers: the fixed overhead (one plan), 500 plans, `big` plans, and the HTTP floor of `big`."""
    print(f"celery-bench: batches of 250: 1, 500 and {big} plans, and the HTTP floor of {big} ...", flush=True)
    fixed, medium, large = (bench.run(BIG, plans)[0] for plans in (1, 500, big))
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


def erp_calls_in_flight(bench: Bench, flows: Path, layout: str, plans: int) -> int:
    """The ERP calls a layout has in flight at most: a batch's threads times the batches that run at
    once (no more than the worker slots), else one per worker slot."""
    flow = load_flow(flows / f"{flow_id_of(layout)}.yaml")
    if flow.batch is None:
        return bench.slots
    return flow.batch.concurrency * min(math.ceil(plans / flow.batch.size), bench.slots)


def latency_rows(bench: Bench, args: argparse.Namespace, flows: Path, rows: list[dict[str, Any]]) -> None:
    """Each layout against an ERP with latency, with the workers there are, into `rows`; batches also
    without it."""
    for layout in args.latency_layouts:
        plans = latency_plans(args, layout)
        in_flight = erp_calls_in_flight(bench, flows, layout, plans)
        floor_s = plans * args.latency_ms / 1000 / in_flight
        print(f"celery-bench: {layout}, {plans} plans, ERP latency {args.latency_ms:g} ms ...", flush=True)
        row = {"workers": len(bench.stack.workers), "latency_ms": args.latency_ms, "erp_calls_in_flight": in_flight}
        if "batch" in FLOWS[layout]:
            bench.fakes.erp_latency(0)
            row["without_latency"] = median_of([bench.run(layout, plans)[0] for _ in range(REPEATS[layout])])
        bench.fakes.erp_latency(args.latency_ms)
        row.update(median_of([bench.run(layout, plans)[0] for _ in range(REPEATS[layout])]))
        row["latency_floor_s"] = round(floor_s, 2)
        row["vs_latency_floor"] = round(row["wall_s"] / floor_s, 2)
        if "without_latency" in row:
            row["latency_added_s"] = round(row["wall_s"] - row["without_latency"]["wall_s"], 2)
            row["added_vs_latency_floor"] = round(row["latency_added_s"] / floor_s, 2)
        print(
            f"celery-bench:   {row['wall_s']} s wall, latency floor {row['latency_floor_s']} s: "
            f"{row['vs_latency_floor']}x",
            flush=True,
        )
        rows.append(row)
    bench.fakes.erp_latency(0)


def layout_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | layout | plans | task instances | wall s | plans/s | no-op floor s | floor plans/s "
        "| vs floor | mean TI s (flow / no-op) | by worker |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        floor = row["floor"]
        mapped = NOOP_SHAPES[row["layout"]]
        task = f"{mapped['group']}.{mapped['steps'][0]}" if mapped["group"] else mapped["steps"][0]
        by_worker = ", ".join(f"{name} {count}" for name, count in row["task_instances_by_worker"].items())
        lines.append(
            f"| {row['workers']} | {row['layout']} | {row['plans']} | {row['task_instances']} | {wall(row)} "
            f"| {row['plans_per_s']} | {wall(floor)} | {floor['plans_per_s']} | {row['vs_floor']}x "
            f"| {row['tasks'][task]['mean_s']} / {floor['tasks'][task]['mean_s']} | {by_worker} |"
        )
    return "\n".join(lines)


def latency_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| layout | plans | ERP calls in flight | latency floor s | wall s | vs latency floor "
        "| wall s without latency | latency added s | added vs latency floor | plans/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        without = row.get("without_latency")
        added_ratio = f"{row['added_vs_latency_floor']}x" if without else ""
        lines.append(
            f"| {row['layout']} | {row['plans']} | {row['erp_calls_in_flight']} | {row['latency_floor_s']} "
            f"| {wall(row)} | {row['vs_latency_floor']}x | {wall(without) if without else ''} "
            f"| {row.get('latency_added_s', '')} | {added_ratio} | {row['plans_per_s']} |"
        )
    return "\n".join(lines)


def wall(run: dict[str, Any]) -> str:
    spread = run.get("runs_wall_s")
    return f"{run['wall_s']}" + (f" ({min(spread)} to {max(spread)})" if spread else "")


def stack_config(base: Path, concurrency: int) -> CeleryStackConfig:
    return throwaway_config(
        base,
        flows_dir=base / "flows",
        # Its own name: a second benchmark started meanwhile drops only its own database.
        database=f"airflow_order_cancel_bench_{os.getpid()}",
        redis_db=9,
        manual_only=True,
        workers=1,
        concurrency=concurrency,
        # A busy 2-core machine must not time out healthy tasks: keep a roomy heartbeat timeout here.
        heartbeat_timeout=60,
        extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(base / "dags")},
    )


def measure(args: argparse.Namespace, base: Path, config: CeleryStackConfig) -> dict[str, Any]:
    stack = CeleryStack(config)
    measured: dict[str, Any] = {}
    try:
        print(f"celery-bench: stack ready in {stack.start():.1f} s (home {config.home})", flush=True)
        rest = AirflowRest(config.port).login()
        bench = Bench(stack, rest, FakesClient(config.omnitron_port, config.erp_port), args.concurrency)
        for dag_id in [*map(flow_id_of, FLOWS), *map(noop_id_of, NOOP_SHAPES)]:
            rest.wait_for_dag(dag_id)
            rest.unpause(dag_id)
        for layout in FLOWS:
            print(f"celery-bench: warm-up {layout}: {bench.run(layout, WARMUP_PLANS)[0]['wall_s']} s", flush=True)
        for layout in NOOP_SHAPES:
            warm_up = bench.timed_run(noop_id_of(layout))[0]["wall_s"]
            print(f"celery-bench: warm-up {noop_id_of(layout)}: {warm_up} s", flush=True)
        if "layouts" in args.sections:
            layout_rows(bench, stack, args.plans, measured.setdefault("results", []))
        while len(stack.workers) < max(WORKER_COUNTS):  # the other sections run with 2 workers
            stack.add_worker()
        if "big" in args.sections:
            measured["big_batch"] = big_batch(bench, args.big, base)
        if "latency" in args.sections:
            latency_rows(bench, args, base / "flows", measured.setdefault("latency", []))
    except RunFailed as failure:
        # What was measured so far is kept, and the stack's logs for finding out why.
        print(f"celery-bench: {failure}", flush=True)
        measured["error"] = str(failure)
        args.keep_home = True
    finally:
        stack.stop()
        drop_database(config)
    return measured


def goals(measured: dict[str, Any]) -> dict[str, Any]:
    """Each goal of the sections measured: the figure and whether it is met."""
    found: dict[str, Any] = {}
    singles = [row for row in measured.get("results", []) if row["layout"] == "single" and row["workers"] == 2]
    if singles:
        single = singles[0]
        found["single_2_workers_plans_per_s"] = single["plans_per_s"]
        found["single_goal_met"] = single["plans_per_s"] >= SINGLE_GOAL_PLANS_PER_S
        found["single_2_workers_vs_floor"] = single["vs_floor"]
        found["single_vs_floor_goal_met"] = single["vs_floor"] >= SINGLE_VS_FLOOR_GOAL
    if big := measured.get("big_batch"):
        found["big_batch_wall_s"] = big["runs"][-1]["wall_s"]
        found["big_batch_goal_s"] = big["goal_s"]
        found["big_batch_goal_met"] = big["goal_met"]
        found["memory_goal_met"] = big["memory_goal_met"]
    batches = [row for row in measured.get("latency", []) if "without_latency" in row]
    if batches:
        whole = {row["layout"]: row["vs_latency_floor"] for row in batches}
        added = {row["layout"]: row["added_vs_latency_floor"] for row in batches}
        found["batches_vs_latency_floor"] = whole
        found["batches_latency_goal_met"] = all(value <= LATENCY_FACTOR for value in whole.values())
        found["batches_latency_added_vs_floor"] = added
        found["batches_latency_added_goal_met"] = all(value <= LATENCY_FACTOR for value in added.values())
    return found


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Celery throughput ({report['started_at']})",
        "",
        f"{report['machine']['cpus']} CPUs, {report['stack']['concurrency_per_worker']} slots per worker; "
        f"{report['wall_time']}.",
        "",
    ]
    if report.get("error"):
        lines += [f"**Stopped early**: {report['error']}", ""]
    if report.get("results"):
        lines += ["## Layouts and their no-op floors", "", layout_table(report["results"]), ""]
    if big := report.get("big_batch"):
        lines += [
            "## Batches of 250 (2 workers)",
            "",
            f"1, 500 and {big['runs'][-1]['plans']} plans: {', '.join(wall(run) for run in big['runs'])} s; "
            f"HTTP floor of the largest {big['http_floor_s']} s; goal {big['goal_s']} s "
            f"(met: {big['goal_met']}); memory goal met: {big['memory_goal_met']}.",
            "",
        ]
    if report.get("latency"):
        heading = f"## An ERP that answers after {report['latency'][0]['latency_ms']:g} ms (2 workers)"
        lines += [heading, "", latency_table(report["latency"]), ""]
    return "\n".join([*lines, "## Goals", "", "```json", json.dumps(report["goals"], indent=2), "```", ""])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="celery-bench-"))
    write_flows(base / "flows", args)
    write_dags(base / "dags")
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
            "flow": flow_document("per-step", most_plans(args, "per-step")),
            "layouts": FLOWS,
            "noop_shapes": NOOP_SHAPES,
        },
        "sections": args.sections,
        "wall_time": "trigger (POST dagRuns) until the REST API reports the run finished, polled every 0.5 s; "
        "batch rows: the median of 3 runs (runs_wall_s)",
        **measured,
        "goals": goals(measured),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    print(f"celery-bench: wrote {args.out} and {args.out.with_suffix('.md').name}")
    return 1 if measured.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
