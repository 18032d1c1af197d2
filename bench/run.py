"""Benchmark driver: `bin/bench [--plans 10,100,500] [--quick] [--out bench/results.json]`.

Measures, against the fakes on 127.0.0.1: the DAG parse time for 1, 10 and 100 flow files; one
flow run with dag.test() per plan count and mode (wall time, peak memory, task instances); two
floors for the same run (a no-op DAG of the same shape, and the same HTTP calls in a plain loop);
and the script + mapping cost per plan.

Each measurement runs in a fresh subprocess (bench.child) with its own Airflow home, SQLite file
and flows folder, so memory and Airflow state never leak from one into the next. The fakes run
here, in the driver: the measured process then holds neither their data nor their threads.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter
from typing import Any

from bench.report import markdown
from bench.scenarios import (
    ERP_CONN,
    ERP_LOGIN,
    ERP_WRITE_PATH,
    FLOWS_DAG_FILE,
    MODES,
    OMNITRON_CONN,
    OMNITRON_LOGIN,
    ROOT,
    Mode,
    bench_plans,
    flow_document,
    run_flow_document,
    write_flows,
    write_noop_dag,
)
from fakes import FakeErp, FakeOmnitron

DEFAULT_PLANS = (10, 100, 500)
QUICK_PLANS = (10, 100)
PARSE_FLOW_COUNTS = (1, 10, 100)
# The issue sets batch mode's and the single layout's goals for a run of 500 plans (batch_goal, single_goal).
GOAL_PLANS = 500
PER_STEP, SINGLE = "per-step", "single"
SINGLE_VS_PER_STEP = 0.45
BASELINE_ROUNDS = 5
# The batch goal's three terms are measured alternately this many times (the first round is the
# row's own run): dag.test()'s set-up alone varies by a second from run to run.
GOAL_ROUNDS = 5
# A stuck child must not hold the whole benchmark; the biggest run takes a few minutes.
CHILD_TIMEOUT_S = 20 * 60


class BenchmarkError(Exception):
    """A measurement failed or its run did not do what it should; its numbers would be meaningless."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bin/bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--plans",
        default=",".join(map(str, DEFAULT_PLANS)),
        help="comma-separated plan counts of the flow runs (default: %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help=f"smoke run: plans {QUICK_PLANS} only")
    parser.add_argument(
        "--modes",
        help=f"comma-separated modes to run (default: all of {', '.join(mode.name for mode in MODES)})",
    )
    parser.add_argument(
        "--baseline",
        metavar="COMMIT",
        help="also run each batch mode at 500 plans with the code of COMMIT, alternately with this code "
        f"{BASELINE_ROUNDS} times each: what a change costs, measured in one run",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results.json",
        help="results JSON; the markdown goes next to it as .md (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    args.plans = list(QUICK_PLANS) if args.quick else sorted({int(part) for part in args.plans.split(",")})
    known = {mode.name for mode in MODES}
    args.modes = known if args.modes is None else {part.strip() for part in args.modes.split(",")}
    if args.modes - known:
        parser.error(f"unknown modes {sorted(args.modes - known)}; known: {sorted(known)}")
    return args


# -- subprocesses ------------------------------------------------------------------------------


class Workspace:
    """A temporary folder with one sub-folder per measurement (Airflow home, flows, log, result)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="order-cancel-bench-"))
        self._count = 0

    def folder(self, name: str) -> Path:
        self._count += 1
        folder = self.root / f"{self._count:02d}-{name}"
        folder.mkdir()
        return folder

    def run_child(self, folder: Path, kind: str, code: Path = ROOT, **params: Any) -> dict[str, Any]:
        """Run `python -m bench.child` with the project's code at `code` (this checkout, or a
        baseline's), and answer its result plus its wall time and peak RSS."""
        result_path, log_path = folder / "result.json", folder / "child.log"
        command = [sys.executable, "-m", "bench.child", kind, json.dumps(params), str(result_path)]
        # Ahead of the venv's editable install of this checkout's package.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), str(code / "plugins")])}
        start = perf_counter()
        with open(log_path, "wb") as log:
            child = subprocess.Popen(command, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
            killer = threading.Timer(CHILD_TIMEOUT_S, child.kill)
            killer.start()
            # wait4 answers this child's own resource usage; RUSAGE_CHILDREN would mix all children.
            _, status, usage = os.wait4(child.pid, 0)
            killer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        wall_s = perf_counter() - start
        if child.returncode != 0 or not result_path.exists():
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise BenchmarkError(f"{kind} failed (exit {child.returncode}); log {log_path}:\n{tail}")
        result = json.loads(result_path.read_text())
        # ru_maxrss is in KiB on Linux.
        return {**result, "child_wall_s": wall_s, "peak_rss_mb": usage.ru_maxrss / 1024}


@contextlib.contextmanager
def fresh_fakes(plans: int) -> Iterator[tuple[FakeOmnitron, FakeErp]]:
    with (
        FakeOmnitron(users=dict([OMNITRON_LOGIN])) as omnitron,
        FakeErp(auth="token", username=ERP_LOGIN[0], password=ERP_LOGIN[1]) as erp,
    ):
        omnitron.add_plans(bench_plans(plans))
        yield omnitron, erp


def connections(omnitron: FakeOmnitron, erp: FakeErp) -> dict[str, list[str]]:
    return {OMNITRON_CONN: [omnitron.url, *OMNITRON_LOGIN], ERP_CONN: [erp.url, *ERP_LOGIN]}


def check_delivered(what: str, omnitron: FakeOmnitron, erp: FakeErp, plans: int) -> None:
    """The fakes must show every plan sent to the ERP once and approved in Omnitron."""
    approved = sum(plan["status"] == "approved" for plan in omnitron.plans.values())
    sent = len(erp.calls("POST", ERP_WRITE_PATH))
    if approved != plans or sent != plans:
        raise BenchmarkError(f"{what}: {approved} of {plans} plans approved, {sent} sent to the ERP")


# -- measurements ------------------------------------------------------------------------------


def measure_parse(workspace: Workspace, flow_count: int) -> dict[str, Any]:
    folder = workspace.folder(f"parse-{flow_count}")
    write_flows(folder / "flows", [flow_document(f"bench_flow_{index:03d}") for index in range(flow_count)])
    result = workspace.run_child(
        folder,
        "parse",
        home=str(folder / "home"),
        flows_dir=str(folder / "flows"),
        dags_folder=str(FLOWS_DAG_FILE.parent),
    )
    if result["dags"] != flow_count or result["import_errors"]:
        raise BenchmarkError(f"parse of {flow_count} flow files: {result['dags']} DAGs, {result['import_errors']}")
    return {"flow_files": flow_count, **result}


def measure_run(workspace: Workspace, mode: Mode, plans: int, code: Path = ROOT) -> dict[str, Any]:
    folder = workspace.folder(f"run-{mode.name}-{plans}{'' if code == ROOT else '-baseline'}")
    document = run_flow_document(plans, mode)
    write_flows(folder / "flows", [document])
    with fresh_fakes(plans) as (omnitron, erp):
        result = workspace.run_child(
            folder,
            "dag_test",
            code=code,
            home=str(folder / "home"),
            dag_file=str(code / FLOWS_DAG_FILE.relative_to(ROOT)),
            dag_id=document["flow_id"],
            flows_dir=str(folder / "flows"),
            connections=connections(omnitron, erp),
        )
        check_succeeded(f"{mode.name} run of {plans} plans", result)
        check_delivered(f"{mode.name} run of {plans} plans", omnitron, erp, plans)
    return result


def measure_noop(workspace: Workspace, shape: dict[str, Any]) -> dict[str, Any]:
    folder = workspace.folder(f"noop-{shape['items']}")
    dag_file = write_noop_dag(folder / "dags", "noop_floor", shape)
    result = workspace.run_child(
        folder,
        "dag_test",
        home=str(folder / "home"),
        dag_file=str(dag_file),
        dag_id="noop_floor",
        dags_folder=str(dag_file.parent),
    )
    check_succeeded(f"no-op floor of {shape['items']} items", result)
    return result


@contextlib.contextmanager
def code_at(commit: str) -> Iterator[Path]:
    """The project's files at `commit`, in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="order-cancel-baseline-"))
    try:
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def baseline_comparison(
    workspace: Workspace, mode: Mode, plans: int, baseline: Path, progress: Progress
) -> dict[str, Any]:
    """The same run with the baseline's code and with this code, alternately, so that a drift of the
    machine's speed weighs on both; the medians and their ratio."""
    theirs, ours = [], []
    for _ in range(BASELINE_ROUNDS):
        with progress.step(f"{mode.name} run, {plans} plans, baseline code"):
            theirs.append(measure_run(workspace, mode, plans, code=baseline)["run_s"])
        with progress.step(f"{mode.name} run, {plans} plans, this code"):
            ours.append(measure_run(workspace, mode, plans)["run_s"])
    return {
        "baseline_s": statistics.median(theirs),
        "current_s": statistics.median(ours),
        "vs_baseline": statistics.median(ours) / statistics.median(theirs),
        "baseline_runs_s": theirs,
        "current_runs_s": ours,
    }


def check_succeeded(what: str, result: dict[str, Any]) -> None:
    # A batch run without failed plans skips the mapped `plan` task (nothing to map over).
    if result["state"] != "success" or not set(result["states"]) <= {"success", "skipped"}:
        raise BenchmarkError(f"{what}: run {result['state']}, task instances {result['states']}")


def measure_http(workspace: Workspace, plans: int) -> dict[str, Any]:
    folder = workspace.folder(f"http-{plans}")
    document = run_flow_document(plans)
    write_flows(folder / "flows", [document])
    with fresh_fakes(plans) as (omnitron, erp):
        result = workspace.run_child(
            folder,
            "http_floor",
            flow_file=str(folder / "flows" / f"{document['flow_id']}.yaml"),
            omnitron_url=omnitron.url,
            erp_url=erp.url,
            omnitron_login=OMNITRON_LOGIN,
            erp_login=ERP_LOGIN,
        )
        check_delivered(f"HTTP floor of {plans} plans", omnitron, erp, plans)
    return result


def measure_transform(workspace: Workspace, plans: int) -> dict[str, Any]:
    folder = workspace.folder(f"transform-{plans}")
    document = run_flow_document(plans)
    write_flows(folder / "flows", [document])
    return workspace.run_child(
        folder, "transform", flow_file=str(folder / "flows" / f"{document['flow_id']}.yaml"), plans=plans
    )


def unavailable(mode: Mode) -> str | None:
    """Why a mode cannot run with the project as it is now, if it cannot."""
    from order_cancel.flows.models import FlowConfig

    if mode.needs_field and mode.needs_field not in FlowConfig.model_fields:
        return f"{mode.name} mode not available"
    return None


# -- the whole benchmark -----------------------------------------------------------------------


class Progress:
    """One line per measurement on stderr, so a long run can be followed."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, perf_counter()

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.done += 1
        print(f"[{self.done:2d}/{self.total}] {label} ...", end="", file=sys.stderr, flush=True)
        start = perf_counter()
        yield
        print(
            f" {perf_counter() - start:.2f} s (total {perf_counter() - self.started:.0f} s)",
            file=sys.stderr,
            flush=True,
        )


def benchmark(
    workspace: Workspace, plan_counts: list[int], names: set[str], baseline: Path | None = None
) -> dict[str, Any]:
    modes = [mode for mode in MODES if mode.name in names and not unavailable(mode)]
    runs_per_count = {n: [mode for mode in modes if n >= mode.min_plans] for n in plan_counts}
    goal_steps = 1 + 3 * (GOAL_ROUNDS - 1) + (0 if baseline is None else 2 * BASELINE_ROUNDS)
    progress = Progress(
        len(PARSE_FLOW_COUNTS)
        + sum(
            2 + sum(1 + goal_steps if mode.batched and n == GOAL_PLANS else 2 for mode in runs)
            for n, runs in runs_per_count.items()
        )
    )
    parse_rows = []
    for count in PARSE_FLOW_COUNTS:
        with progress.step(f"parse {count} flow file(s)"):
            parse_rows.append(measure_parse(workspace, count))
    run_rows: list[dict[str, Any]] = []
    for plans in plan_counts:
        with progress.step(f"script + mapping, {plans} plans"):
            transform = measure_transform(workspace, plans)
        with progress.step(f"HTTP floor, {plans} plans"):
            http = measure_http(workspace, plans)
        for mode in runs_per_count[plans]:
            with progress.step(f"{mode.name} run, {plans} plans"):
                run = measure_run(workspace, mode, plans)
            with progress.step(f"no-op floor, {run['shape']['items']} items x {len(run['shape']['steps'])} steps"):
                noop = measure_noop(workspace, run["shape"])
            row = run_row(mode, plans, run, noop, http, transform)
            per_step = [r for r in run_rows if r["mode"] == PER_STEP and r["plans"] == plans]
            if mode.name == SINGLE and plans == GOAL_PLANS and per_step:
                row.update(single_goal(row, per_step[0]))
            if mode.batched and plans == GOAL_PLANS:
                row.update(batch_goal(goal_rounds(workspace, mode, plans, run, http, progress)))
                if baseline is not None:
                    row.update(baseline_comparison(workspace, mode, plans, baseline, progress))
            run_rows.append(row)
    skipped = [
        {"mode": mode.name, "plans": plans, "note": unavailable(mode)}
        for mode in MODES
        if unavailable(mode)
        for plans in plan_counts
        if plans >= mode.min_plans
    ]
    return {"parse": parse_rows, "runs": run_rows, "skipped": skipped, "marginal": marginal_costs(run_rows)}


def run_row(mode: Mode, plans: int, run: dict, noop: dict, http: dict, transform: dict) -> dict[str, Any]:
    return {
        "mode": mode.name,
        "plans": plans,
        "run_s": run["run_s"],
        "peak_rss_mb": run["peak_rss_mb"],
        "task_instances": run["task_instances"],
        "tis_per_plan": run["task_instances"] / plans,
        "ms_per_ti": 1000 * run["run_s"] / run["task_instances"],
        "noop_s": noop["run_s"],
        "vs_noop": run["run_s"] / noop["run_s"],
        "http_s": http["http_s"],
        "vs_http": run["run_s"] / http["http_s"],
        "transform_ms_per_plan": transform["ms_per_plan"],
        "details": {"run": run, "noop": noop, "http": http, "transform": transform},
    }


def goal_rounds(
    workspace: Workspace, mode: Mode, plans: int, run: dict, http: dict, progress: Progress
) -> dict[str, list[float]]:
    """The batch goal's terms, round after round: the run, the HTTP floor and the no-op DAG with one
    batch, so that a drift of the machine's speed weighs on all three."""
    one_batch = {**run["shape"], "items": 1}
    with progress.step("no-op floor, one batch"):
        rounds = {
            "run_s": [run["run_s"]],
            "http_s": [http["http_s"]],
            "noop_s": [measure_noop(workspace, one_batch)["run_s"]],
        }
    for _ in range(GOAL_ROUNDS - 1):
        with progress.step(f"{mode.name} run, {plans} plans, again"):
            rounds["run_s"].append(measure_run(workspace, mode, plans)["run_s"])
        with progress.step(f"HTTP floor, {plans} plans, again"):
            rounds["http_s"].append(measure_http(workspace, plans)["http_s"])
        with progress.step("no-op floor, one batch, again"):
            rounds["noop_s"].append(measure_noop(workspace, one_batch)["run_s"])
    return rounds


def batch_goal(rounds: dict[str, list[float]]) -> dict[str, Any]:
    """The issue's goal for batch mode at 500 plans: within 2x the HTTP floor plus one batch's Airflow
    overhead, which is the run time of the same DAG with a single batch of no-op tasks (dag.test()
    set-up included); each term the median of its rounds."""
    run_s, http_s, noop_s = (statistics.median(rounds[key]) for key in ("run_s", "http_s", "noop_s"))
    goal_s = 2 * http_s + noop_s
    return {
        "goal_run_s": run_s,
        "goal_http_s": http_s,
        "one_batch_noop_s": noop_s,
        "goal_s": goal_s,
        "goal_met": run_s <= goal_s,
        "goal_rounds": rounds,
    }


def single_goal(row: dict[str, Any], per_step: dict[str, Any]) -> dict[str, Any]:
    """The goal for the one-task-per-plan layout at 500 plans: at most 0.45x the per-step layout's
    run in this run. Its cost over a no-op DAG (`vs_noop`) is reported, not judged: that goal moved
    to the Celery stack (bench.celery_throughput), where Airflow's per-task cost is a deployment's."""
    vs_per_step = row["run_s"] / per_step["run_s"]
    return {
        "per_step_s": per_step["run_s"],
        "vs_per_step": vs_per_step,
        "single_goal_met": vs_per_step <= SINGLE_VS_PER_STEP,
    }


def marginal_costs(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Cost of one more plan and of one more task instance, from the smallest to the largest run of
    a mode: the fixed start-up of dag.test() (the first task's set-up) cancels out."""
    costs = {}
    for mode in dict.fromkeys(row["mode"] for row in rows):
        own = [row for row in rows if row["mode"] == mode]
        if len(own) < 2:
            continue
        small, large = own[0], own[-1]
        plans = large["plans"] - small["plans"]
        tis = large["task_instances"] - small["task_instances"]
        noop_tis = large["details"]["noop"]["task_instances"] - small["details"]["noop"]["task_instances"]
        costs[mode] = {
            "from_plans": small["plans"],
            "to_plans": large["plans"],
            "ms_per_plan": 1000 * (large["run_s"] - small["run_s"]) / plans,
            "noop_ms_per_plan": 1000 * (large["noop_s"] - small["noop_s"]) / plans,
            "ms_per_ti": 1000 * (large["run_s"] - small["run_s"]) / tis,
            "noop_ms_per_ti": 1000 * (large["noop_s"] - small["noop_s"]) / noop_tis,
        }
    return costs


def machine_info() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "airflow": importlib.metadata.version("apache-airflow"),
        "platform": platform.platform(),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and uncommitted changes to the code a run executes (work may be in progress)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--", "plugins", "dags", "include", "fakes").splitlines(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_before, code = perf_counter(), os.getloadavg(), code_version()
    workspace = Workspace()
    try:
        with contextlib.ExitStack() as stack:
            baseline = stack.enter_context(code_at(args.baseline)) if args.baseline else None
            measured = benchmark(workspace, args.plans, args.modes, baseline)
    except BenchmarkError as error:
        print(f"\nbenchmark failed: {error}\n(measurement folders kept in {workspace.root})", file=sys.stderr)
        return 1
    shutil.rmtree(workspace.root)
    results = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["bin/bench", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(),
        "code": code,
        "baseline": args.baseline,
        "plan_counts": args.plans,
        **measured,
        "total_s": perf_counter() - started,
        # Other work on the machine skews every number; the 1-minute load average before and after shows it.
        "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
