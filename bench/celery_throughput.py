"""Celery throughput: one flow run of N plans (default 200) on the production-like stack of
devtools/celery_stack.py (PostgreSQL, CeleryExecutor with Redis, the fakes), with 1 Celery worker and
then with 2, in per-plan mode and in batch mode; wall time and plans/s of each.

    PYTHONPATH=. .venv/bin/python -m bench.celery_throughput [--plans 200] [--concurrency 4]
        [--out bench/celery_results.json]

PostgreSQL and Redis must run (devtools/ensure_services.sh). The stack gets a metadata database of
its own (`airflow_order_cancel_bench`, dropped at the end), Redis database 9, free ports and a
temporary Airflow home; nothing of `bin/airflow-celery` is touched.

The flows (one per mode, in a flows folder of their own): waiting web cancellations of channels 1
and 2, the example Jolt mapping (include/flows/mappings/erp_cancel.json), ERP token login, default
response table, approved in Omnitron; retries 0 (a failure shows at once), max_plans_per_run 500.
Batch mode adds `batch: {size: 50, concurrency: 8}`. Each measured run gets N fresh plans (new pks);
a short warm-up run of each flow comes first and is not reported. Batch runs last seconds, so they
are measured three times and the median is reported.

Wall time: from the trigger (POST dagRuns) until the REST API reports the run finished (polled every
0.5 s). A run only counts if it succeeded, every plan is approved in the fake Omnitron and the fake
ERP received each plan once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from devtools.airflow_env import ROOT
from devtools.celery_stack import CeleryStack, CeleryStackConfig, check_services, drop_database
from devtools.stack import free_ports
from devtools.stack_client import AirflowRest, FakesClient
from fakes.data import make_plan

MODES = {"per-plan": None, "batch": {"size": 50, "concurrency": 8}}
# A batch run of 200 plans takes a few seconds, so scheduling latency moves it by a second or two:
# it is measured three times (fresh plans each time) and the median reported. A per-plan run takes
# minutes and is measured once.
REPEATS = {"per-plan": 1, "batch": 3}
WORKER_COUNTS = (1, 2)
WARMUP_PLANS = 4
RUN_TIMEOUT_S = 30 * 60
ERP_PATH = "/api/cancellations"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.celery_throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=200, help="plans per measured run (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="task slots per worker (default %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "celery_results.json")
    parser.add_argument("--keep-home", action="store_true", help="keep the Airflow home (logs) and print where")
    return parser.parse_args(argv)


def flow_document(flow_id: str, batch: dict | None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "flow_id": flow_id,
        "description": f"Celery throughput benchmark ({'batch' if batch else 'per-plan'} mode)",
        "schedule": None,
        "retries": 0,
        "omnitron": {"conn_id": "omnitron_demo"},
        "get_data": {
            "channel_type": "web",
            "cancel_type": "all",
            "cancel_status": "waiting",
            "channel_ids": [1, 2],
            "page_size": 100,
            "max_plans_per_run": 500,
        },
        "mapping": "mappings/erp_cancel.json",
        "erp": {"conn_id": "erp_demo", "login": {"type": "token", "url": "/api/auth/login", "prefix": "Bearer"}},
        "write_erp": {"url": ERP_PATH, "method": "POST"},
        "write_omnitron": {"next_state": "approved"},
    }
    if batch:
        document["batch"] = batch
    return document


def flow_id_of(mode: str) -> str:
    return "celery_bench_" + mode.replace("-", "_")


def write_flows(folder: Path) -> None:
    shutil.copytree(ROOT / "include" / "flows" / "mappings", folder / "mappings")
    for mode, batch in MODES.items():
        path = folder / f"{flow_id_of(mode)}.yaml"
        path.write_text(yaml.safe_dump(flow_document(flow_id_of(mode), batch), sort_keys=False))


class Bench:
    def __init__(self, stack: CeleryStack, rest: AirflowRest, fakes: FakesClient):
        self.stack, self.rest, self.fakes = stack, rest, fakes
        self.next_pk = 1

    def fresh_plans(self, count: int) -> list[int]:
        pks = list(range(self.next_pk, self.next_pk + count))
        self.next_pk += count
        self.fakes.add_plans(
            [
                make_plan(pk, plan_type="refund" if pk % 4 == 0 else "cancel", channel=1 + pk % 2, items=1 + pk % 3)
                for pk in pks
            ]
        )
        return pks

    def run(self, mode: str, plans: int) -> dict[str, Any]:
        dag_id = flow_id_of(mode)
        pks = self.fresh_plans(plans)
        started = time.monotonic()
        run_id = self.rest.trigger(dag_id)["dag_run_id"]
        run = self.rest.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT_S)
        wall = time.monotonic() - started
        instances = self.rest.task_instances(dag_id, run_id)
        if run["state"] != "success":
            failed = [(ti["task_id"], ti["map_index"]) for ti in instances if ti["state"] != "success"]
            raise SystemExit(f"{dag_id} run {run_id} ended {run['state']}; not successful: {failed[:10]}")
        statuses = self.fakes.plan_statuses(pks)
        if set(statuses.values()) != {"approved"}:
            raise SystemExit(
                f"{dag_id}: plans not approved: {[pk for pk, s in statuses.items() if s != 'approved'][:10]}"
            )
        wanted = set(pks)
        sent = [
            c["body"]["cancellationId"]
            for c in self.fakes.erp_requests(ERP_PATH)
            if c["body"]["cancellationId"] in wanted
        ]
        if sorted(sent) != pks:
            raise SystemExit(f"{dag_id}: the ERP received {len(sent)} writes for {plans} plans")
        return {
            "mode": mode,
            "plans": plans,
            "wall_s": round(wall, 2),
            "run_duration_s": round(run["duration"], 2),
            "plans_per_s": round(plans / wall, 2),
            "task_instances": len(instances),
            "task_instances_by_worker": self.by_worker(run_id),
        }

    def by_worker(self, run_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for path in sorted(self.stack.stack.log_dir.glob("worker-*.log")):
            counts[path.stem] = sum(
                1
                for line in path.read_text(errors="replace").splitlines()
                if "Executing workload in Celery" in line and f"run_id='{run_id}'" in line
            )
        return {name: count for name, count in counts.items() if count}


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | mode | plans | task instances | wall (s) | run duration (s) | plans/s | by worker |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        by_worker = ", ".join(f"{name} {count}" for name, count in row["task_instances_by_worker"].items())
        wall = f"{row['wall_s']}" + (
            f" (runs {', '.join(map(str, row['runs_wall_s']))})" if "runs_wall_s" in row else ""
        )
        lines.append(
            f"| {row['workers']} | {row['mode']} | {row['plans']} | {row['task_instances']} | {wall} "
            f"| {row['run_duration_s']} | {row['plans_per_s']} | {by_worker} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="celery-bench-"))
    write_flows(base / "flows")
    port, omnitron_port, erp_port = free_ports(3)
    config = CeleryStackConfig(
        home=base / "airflow-home",
        port=port,
        omnitron_port=omnitron_port,
        erp_port=erp_port,
        plans=0,
        flows_dir=base / "flows",
        manual_only=True,
        workers=1,
        concurrency=args.concurrency,
        redis_db=9,
        fresh=True,
        database="airflow_order_cancel_bench",
        inherit_airflow_env=False,
        # A busy 2-core machine must not time out healthy tasks: keep a roomy heartbeat timeout here.
        heartbeat_timeout=60,
    )
    check_services(config)
    stack = CeleryStack(config)
    results: list[dict[str, Any]] = []
    started_at = dt.datetime.now(dt.UTC)
    try:
        ready = stack.start()
        print(f"celery-bench: stack ready in {ready:.1f} s (home {config.home})", flush=True)
        rest = AirflowRest(port).login()
        bench = Bench(stack, rest, FakesClient(omnitron_port, erp_port))
        for mode in MODES:
            rest.wait_for_dag(flow_id_of(mode))
            rest.unpause(flow_id_of(mode))
        for mode in MODES:
            warm = bench.run(mode, WARMUP_PLANS)
            print(f"celery-bench: warm-up {mode}: {warm['wall_s']} s", flush=True)
        for workers in WORKER_COUNTS:
            while len(stack.workers) < workers:
                stack.add_worker()
            for mode in MODES:
                print(f"celery-bench: {workers} worker(s), {mode}, {args.plans} plans ...", flush=True)
                runs = [bench.run(mode, args.plans) for _ in range(REPEATS[mode])]
                row = {
                    "workers": workers,
                    "concurrency_per_worker": args.concurrency,
                    **sorted(runs, key=lambda run: run["wall_s"])[len(runs) // 2],
                }
                if len(runs) > 1:
                    row["runs_wall_s"] = [run["wall_s"] for run in runs]
                results.append(row)
                print(
                    f"celery-bench:   {row['wall_s']} s wall, {row['plans_per_s']} plans/s, "
                    f"{row['task_instances']} task instances {row['task_instances_by_worker']}",
                    flush=True,
                )
    finally:
        stack.stop()
        drop_database(config)
        if args.keep_home:
            print(f"celery-bench: Airflow home kept in {config.home}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    report = {
        "benchmark": "celery_throughput",
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "versions": {
            name: importlib.metadata.version(name)
            for name in (
                "apache-airflow",
                "apache-airflow-providers-celery",
                "celery",
                "kombu",
                "redis",
                "psycopg2-binary",
            )
        },
        "stack": {
            "executor": "CeleryExecutor",
            "broker": "redis",
            "result_backend": "postgresql",
            "metadata_db": "postgresql",
            "concurrency_per_worker": args.concurrency,
            "parallelism": config.parallelism,
            "flow": flow_document("celery_bench_per_plan", None),
            "batch": MODES["batch"],
        },
        "wall_time": "trigger (POST dagRuns) until the REST API reports the run finished, polled every 0.5 s; "
        "batch rows: the median of 3 runs (runs_wall_s), per-plan rows: 1 run",
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"celery-bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
