"""The chaos soak (`bin/soak`): the flows on the production stack (PostgreSQL, Celery with two workers,
the real scheduler) for a bounded time, while new plans keep arriving and a seeded random schedule
injects faults; then an independent checker (devtools/soak_check.py) reads only what the fakes
recorded and fails on any plan lost, booked twice, or written without the ERP's acceptance.

    bin/soak [--minutes 30] [--seed 7] [--fault-every 12] [--arrive-every 15] [--arrivals 1]
             [--batch-arrivals 30] [--max-plans 5000] [--drain-minutes 8] [--aimed-kills 0]
             [--aimed-wait-minutes 5] [--out artifacts/soak/soak.json]

Four flows, each on a channel of its own and scheduled every minute: per step (waiting), one task per
plan (waiting), batches (waiting), and one task per plan on completed plans (the watermark and its
pending plans). Faults: ERP 5xx, 429 with Retry-After, timeouts after the ERP booked the plan, slow
answers, 401 storms, connection resets, ERP and Omnitron token expiry, Omnitron 5xx on lists and on
writes, a Celery worker SIGKILLed, the scheduler and the api-server killed and started again,
PostgreSQL restarted. Every other fault aims at a window where a lost worker could make a retry
repeat a side effect: a call held by a fake after it took effect (the ERP booked, Omnitron wrote),
and the worker running the task that made it killed meanwhile. A component that dies (of a fault or
of PostgreSQL's restart) is started again, as a process supervisor would. Everything runs on 127.0.0.1.

Exit 0: no violation, and every plan was delivered once the faults stopped; 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devtools.airflow_env import ROOT
from devtools.celery_stack import CeleryStack, CeleryStackConfig, drop_database, throwaway_config
from devtools.soak_check import Records, SoakFlow, Verdict, check, summary_rows
from devtools.stack_client import AirflowRest, FakesClient, RestError
from fakes.data import make_plan

BATCH_FLOW = "soak_batch"
FLOWS = [
    SoakFlow("soak_step", "waiting", 1),
    SoakFlow("soak_single", "waiting", 2),
    SoakFlow(BATCH_FLOW, "waiting", 3),
    SoakFlow("soak_completed", "completed", 2),
]
ERP_TIMEOUT_SECONDS = 3
FIRST_PLAN = 100_000


def flow_document(flow: SoakFlow, since: str) -> dict[str, Any]:
    document: dict[str, Any] = {
        "flow_id": flow.flow_id,
        "schedule": "* * * * *",
        "retries": 2,
        "retry_delay_seconds": 2,
        "omnitron": {"conn_id": "omnitron_demo", "timeout_seconds": 10},
        "get_data": {
            "channel_type": "marketplace" if flow.channel == 3 else "web",
            "cancel_status": flow.status,
            "channel_ids": [flow.channel],
            "max_plans_per_run": 300,
        },
        "mapping": "mappings/erp_cancel.json",
        "erp": {
            "conn_id": "erp_demo",
            "login": {"type": "token", "url": "/api/auth/login", "prefix": "Bearer"},
            "timeout_seconds": ERP_TIMEOUT_SECONDS,
        },
        "write_erp": {"url": flow.erp_path, "method": "POST"},
        "write_omnitron": {"next_state": "approved"},
    }
    if flow.flow_id == BATCH_FLOW:
        document["batch"] = {"size": 25, "concurrency": 4}
    else:
        document["plan_tasks"] = "per_step" if flow.flow_id == "soak_step" else "single"
    if flow.status == "completed":
        document["get_data"] = {**document["get_data"], "completed_since": since}
    return document


HELD_SECONDS = 30
TARGET_WAIT_SECONDS = 90


@dataclass
class HeldCall:
    """A call a fake holds after it took effect; once it is out, the worker of the task that made it
    is killed."""

    kind: str
    flow_id: str
    task_id: str
    arrived: Callable[[], bool]
    deadline: float


@dataclass
class Chaos:
    """The seeded fault schedule, and what it injected."""

    stack: CeleryStack
    fakes: FakesClient
    rng: random.Random
    injected: Counter = field(default_factory=Counter)
    held: HeldCall | None = None
    count: int = 0
    aimed: int = 0

    def targeted(self) -> dict[str, Callable[[], HeldCall | None]]:
        """The faults aimed at the windows after a side effect, each a held call and a kill."""
        step, single, batch = FLOWS[0], FLOWS[1], FLOWS[2]
        aims = {
            "worker killed while a batch sends to the ERP": (self._hold_erp_send, batch, "plan_batch"),
            "worker killed while a batch writes to Omnitron": (self._hold_omnitron_write, batch, "plan_batch"),
            "worker killed between a plan task's Omnitron write and its end": (
                self._hold_omnitron_write,
                single,
                "plan",
            ),
            "worker killed while a per-step task writes to Omnitron": (
                self._hold_omnitron_write,
                step,
                "plan.write_omnitron",
            ),
        }
        return {kind: functools.partial(hold, kind, flow, task) for kind, (hold, flow, task) in aims.items()}

    def kinds(self) -> dict[str, Callable[[], None]]:
        return {
            "ERP 5xx": lambda: self._erp(status=503, body={"error": "down"}, times=self.rng.randint(2, 8)),
            "ERP 429 with Retry-After": lambda: self._erp(status=429, headers={"Retry-After": "1"}, times=4),
            "ERP timeout after booking": lambda: self._erp(delay=ERP_TIMEOUT_SECONDS + 2, book=True, times=2),
            "ERP slow answers": lambda: self._erp(delay=2.0, book=True, status=201, times=6),
            "ERP 401 storm": lambda: self._erp(status=401, body={"error": "expired"}, times=8),
            "ERP connection resets": lambda: self._erp(drop_connection=True, times=4),
            "ERP token expiry": lambda: self.fakes.expire_tokens("erp"),
            "Omnitron token expiry": lambda: self.fakes.expire_tokens("omnitron"),
            "Omnitron 5xx on lists": lambda: self.fakes.omnitron_fault(
                method="GET", path_regex="/cancellation_plans/", status=503, times=3
            ),
            "Omnitron 5xx on writes": lambda: self.fakes.omnitron_fault(
                method="POST", path_regex="/cancellation_approved_order/", status=500, times=4
            ),
            "worker SIGKILLed": self._kill_worker,
            "scheduler killed and restarted": lambda: self._restart("scheduler"),
            "api-server killed and restarted": lambda: self._restart("api-server"),
            "PostgreSQL restarted": restart_postgres,
        }

    def aimed_kills(self) -> int:
        """The aimed faults whose worker was killed while their call was held."""
        return sum(self.injected[kind] for kind in self.targeted())

    def inject(self) -> str:
        """The next fault: every other one aimed at a window (while none is pending), else any."""
        self.count += 1
        if self.count % 2 == 0 and self.held is None:
            targeted = self.targeted()
            kind = sorted(targeted)[self.aimed % len(targeted)]
            self.aimed += 1
            self.held = targeted[kind]()
            return f"{kind}: holding a call" if self.held else f"{kind}: no plan to aim at"
        kinds = self.kinds()
        kind = self.rng.choice(sorted(kinds))
        kinds[kind]()
        self.injected[kind] += 1
        return kind

    def follow_up(self, rest: AirflowRest) -> str | None:
        """Kills the worker of the held call's task once the call is out; says what it did."""
        held = self.held
        if held is None:
            return None
        if time.monotonic() > held.deadline:
            self.held = None
            return f"{held.kind}: the held call never came"
        if not held.arrived():
            return None
        running = rest.api("GET", f"/dags/{held.flow_id}/dagRuns/~/taskInstances", params={"state": "running"})
        pids = [ti["pid"] for ti in running["task_instances"] if ti["task_id"] == held.task_id and ti.get("pid")]
        victims = {worker for pid in pids if (worker := self.stack.worker_of(pid))}
        self.held = None
        if not victims:
            return f"{held.kind}: its task had ended"
        for worker in victims:
            self.stack.kill_worker(worker)
            self.stack.add_worker(wait=False)
        self.injected[held.kind] += 1
        return f"{held.kind}: killed {', '.join(sorted(victims))}"

    def _hold_erp_send(self, kind: str, flow: SoakFlow, task_id: str) -> HeldCall:
        booked = len(self.fakes.erp_booking_log())
        self.fakes.erp_respond(path=flow.erp_path, method="POST", book=True, delay=HELD_SECONDS, times=1)

        def arrived() -> bool:
            return any(entry["path"] == flow.erp_path for entry in self.fakes.erp_booking_log()[booked:])

        return HeldCall(kind, flow.flow_id, task_id, arrived, time.monotonic() + TARGET_WAIT_SECONDS)

    def _hold_omnitron_write(self, kind: str, flow: SoakFlow, task_id: str) -> HeldCall | None:
        """Holds the next approval of one of the flow's waiting plans (the flow's run writes it)."""
        plans = self.fakes.plans().items()
        waiting = [pk for pk, plan in plans if plan["order"]["channel"] == flow.channel and plan["status"] == "waiting"]
        if not waiting:
            return None
        self.fakes.omnitron_fault(
            method="POST",
            path_regex=f"/orders/({'|'.join(map(str, waiting))})/cancellation_approved_order/$",
            apply=True,
            delay=HELD_SECONDS,
            times=1,
        )
        written = len(self.fakes.omnitron_writes())

        def arrived() -> bool:
            return any(write["plan"] in waiting for write in self.fakes.omnitron_writes()[written:])

        return HeldCall(kind, flow.flow_id, task_id, arrived, time.monotonic() + TARGET_WAIT_SECONDS)

    def _erp(self, **rule) -> None:
        flow = self.rng.choice(FLOWS)
        self.fakes.erp_respond(path=flow.erp_path, method="POST", **rule)

    def _kill_worker(self) -> None:
        victim = self.rng.choice(self.stack.workers)
        self.stack.kill_worker(victim)
        self.stack.add_worker(wait=False)

    def _restart(self, name: str) -> None:
        self.stack.kill_component(name)
        time.sleep(self.rng.uniform(1, 4))
        self.stack.start_component(name)


def restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def supervise(stack: CeleryStack) -> int:
    """Starts again whatever died (a process supervisor's job); answers how many."""
    restarted = 0
    for name, _ in stack.stack.dead():
        stack.stack.forget(name)
        if name in stack.components:
            stack.start_component(name)
        elif name in stack.workers:
            stack.workers.remove(name)
            stack.add_worker(wait=False)
        else:
            continue
        restarted += 1
    return restarted


@dataclass
class Arrivals:
    """New plans, a few per flow at a time (`per_flow`: flow id -> plans), up to a bound."""

    fakes: FakesClient
    per_flow: dict[str, int]
    limit: int
    next_pk: int = FIRST_PLAN
    added: int = 0

    def add(self) -> None:
        if self.added >= self.limit:
            return
        plans = []
        for flow in FLOWS:
            for _ in range(self.per_flow[flow.flow_id]):
                modified = dt.datetime.now(dt.UTC)
                plans.append(
                    make_plan(
                        self.next_pk,
                        order_pk=self.next_pk,
                        channel=flow.channel,
                        status=flow.status,
                        modified_date=modified,
                    )
                )
                self.next_pk += 1
        self.fakes.add_plans(plans)
        self.added += len(plans)


def arrivals_per_flow(args: argparse.Namespace) -> dict[str, int]:
    """The batch flow takes the volume (thousands of plans are what batches are for); the others
    get what 2 cores process in their task-per-plan layouts."""
    return {flow.flow_id: args.batch_arrivals if flow.flow_id == BATCH_FLOW else args.arrivals for flow in FLOWS}


def records(fakes: FakesClient) -> Records:
    return Records(fakes.erp_booking_log(), fakes.omnitron_writes(), fakes.plans())


def run_counts(rest: AirflowRest) -> dict[str, dict[str, int]]:
    counts = {}
    for flow in FLOWS:
        runs = rest.api("GET", f"/dags/{flow.flow_id}/dagRuns", params={"limit": 1000})["dag_runs"]
        counts[flow.flow_id] = dict(Counter(run["state"] for run in runs))
    return counts


def stack_config(args: argparse.Namespace, base: Path) -> CeleryStackConfig:
    """A fresh Celery stack with two workers whose flows folder holds the soak's flows."""
    flows_dir = base / "flows"
    shutil.copytree(ROOT / "include" / "flows" / "mappings", flows_dir / "mappings")
    since = dt.datetime.now(dt.UTC).isoformat()
    for flow in FLOWS:
        (flows_dir / f"{flow.flow_id}.yaml").write_text(yaml.safe_dump(flow_document(flow, since), sort_keys=False))
    return throwaway_config(
        base,
        flows_dir=flows_dir,
        database=f"airflow_order_cancel_soak_{os.getpid()}",
        redis_db=10,
        workers=2,
        concurrency=4,
        heartbeat_timeout=15,
        queued_timeout=30,
    )


@dataclass
class Soak:
    args: argparse.Namespace
    stack: CeleryStack
    fakes: FakesClient
    chaos: Chaos
    arrivals: Arrivals
    restarted: int = 0
    interim: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.stack.start()
        rest = AirflowRest(self.stack.config.port).login()
        for flow in FLOWS:
            rest.wait_for_dag(flow.flow_id)
            rest.unpause(flow.flow_id)

    def follow_up(self, started: float) -> None:
        """The kill of a targeted fault, once its held call is out (the api-server may be down)."""
        try:
            said = self.chaos.follow_up(AirflowRest(self.stack.config.port).login())
        except (RestError, OSError) as exc:
            said = f"a targeted kill waits for the api-server ({type(exc).__name__})"
        if said:
            print(f"soak {elapsed(started)}: {said}", flush=True)

    def under_faults(self) -> float:
        """Plans arrive and faults strike until the time is up, and longer (up to `--aimed-wait-minutes`)
        while fewer than `--aimed-kills` aimed faults landed; checked every 30 s. Answers the seconds."""
        started = time.monotonic()
        deadline = started + self.args.minutes * 60
        last_chance = deadline + self.args.aimed_wait_minutes * 60
        next_fault, next_arrival, next_check = started + self.args.fault_every, started, started + 30
        while (now := time.monotonic()) < deadline or (
            now < last_chance and self.chaos.aimed_kills() < self.args.aimed_kills
        ):
            if now >= next_arrival:
                self.arrivals.add()
                next_arrival = now + self.args.arrive_every
            if now >= next_fault:
                print(f"soak {elapsed(started)}: {self.chaos.inject()}", flush=True)
                next_fault = now + self.args.fault_every * self.chaos.rng.uniform(0.5, 1.5)
            if now >= next_check:
                self.check_now()
                next_check = now + 30
            if self.chaos.held is not None:
                self.follow_up(started)
            self.restarted += supervise(self.stack)
            time.sleep(1)
        return time.monotonic() - started

    def check_now(self) -> None:
        found = check(records(self.fakes), FLOWS, final=False).violations
        self.interim += [violation for violation in found if violation not in self.interim]

    def drain(self) -> tuple[Verdict, float]:
        """No more faults or plans: until every plan is delivered (or the drain time is up)."""
        started = time.monotonic()
        deadline = started + self.args.drain_minutes * 60
        while True:
            self.restarted += supervise(self.stack)
            if self.chaos.held is not None:  # an aimed fault waits for its call: its kill comes first
                self.follow_up(started)
                time.sleep(1)
                continue
            try:
                self.fakes.clear_faults()
                verdict = check(records(self.fakes), FLOWS, final=True)
            except (RestError, OSError) as exc:
                print(f"soak drain: {exc}", flush=True)
                time.sleep(5)
                continue
            if verdict.drained or time.monotonic() > deadline:
                return verdict, time.monotonic() - started
            print(
                f"soak drain: {verdict.waiting} waiting, {verdict.undelivered_completed} completed undelivered",
                flush=True,
            )
            time.sleep(10)

    def result(self, soaked: float, verdict: Verdict, drained_in: float) -> dict:
        return {
            "seed": self.args.seed,
            "minutes": round(soaked / 60, 1),
            "drain_minutes": round(drained_in / 60, 1),
            "workers": self.stack.config.workers,
            "runs": run_counts(AirflowRest(self.stack.config.port).login()),
            "plans": self.arrivals.added,
            "faults": dict(sorted(self.chaos.injected.items())),
            "components restarted after dying": self.restarted,
            "erp_bookings": verdict.booked,
            "omnitron_writes": verdict.written,
            "still_waiting": verdict.waiting,
            "completed_undelivered": verdict.undelivered_completed,
            "violations": list(dict.fromkeys(self.interim + verdict.violations)),
            "drained": verdict.drained,
            "undelivered": verdict.undelivered[:50],
        }


def soak(args: argparse.Namespace) -> dict:
    base = Path(tempfile.mkdtemp(prefix="order-cancel-soak-"))
    config = stack_config(args, base)
    stack = CeleryStack(config)
    fakes = FakesClient(config.omnitron_port, config.erp_port)
    run = Soak(
        args,
        stack,
        fakes,
        Chaos(stack, fakes, random.Random(args.seed)),
        Arrivals(fakes, arrivals_per_flow(args), args.max_plans),
    )
    passed = False
    try:
        run.start()
        soaked = run.under_faults()
        print(f"soak: {soaked / 60:.1f} min of faults; the faults stop, the rest is delivered", flush=True)
        verdict, drained_in = run.drain()
        result = run.result(soaked, verdict, drained_in)
        passed = not result["violations"] and result["drained"]
        return result
    finally:
        stack.stop()
        drop_database(config)
        if passed or not args.keep_home:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"soak: the stack's home (logs, the plan ledger) is kept in {base}", flush=True)


def elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def report_lines(result: dict) -> list[str]:
    runs = ", ".join(
        f"{flow} {sum(counts.values())} ({', '.join(f'{n} {state}' for state, n in sorted(counts.items()))})"
        for flow, counts in result["runs"].items()
    )
    faults = ", ".join(f"{kind} {count}" for kind, count in result["faults"].items())
    extra = {
        "seed": result["seed"],
        "duration": f"{result['minutes']} min of faults, then {result['drain_minutes']} min to drain",
        "runs": runs,
        "plans": result["plans"],
        f"faults injected ({sum(result['faults'].values())})": faults,
        "components restarted after dying": result["components restarted after dying"],
    }
    verdict = Verdict(
        violations=result["violations"],
        booked=result["erp_bookings"],
        written=result["omnitron_writes"],
        waiting=result["still_waiting"],
        undelivered_completed=result["completed_undelivered"],
    )
    rows = summary_rows(verdict, extra)
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    if result["undelivered"]:
        lines.append(f"{'undelivered plans'.ljust(width)}  {result['undelivered']}")
    return lines + [f"VIOLATION {violation}" for violation in result["violations"]]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bin/soak", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30, help="minutes of faults (default %(default)s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fault-every", type=float, default=12, help="seconds between faults, on average")
    parser.add_argument("--arrive-every", type=float, default=15, help="seconds between arrivals of new plans")
    parser.add_argument("--arrivals", type=int, default=1, help="new plans per flow at each arrival")
    parser.add_argument("--batch-arrivals", type=int, default=30, help="new plans of the batch flow at each arrival")
    parser.add_argument("--max-plans", type=int, default=5000, help="at most this many plans in all")
    parser.add_argument("--drain-minutes", type=float, default=8, help="at most this long to deliver the rest")
    parser.add_argument(
        "--aimed-kills",
        type=int,
        default=0,
        help="faults go on past --minutes until this many aimed kills landed (default %(default)s)",
    )
    parser.add_argument(
        "--aimed-wait-minutes", type=float, default=5, help="at most this much longer (default %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "soak" / "soak.json")
    parser.add_argument("--keep-home", action="store_true", help="keep the stack's home (logs) when the soak fails")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = soak(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(report_lines(result)))
    return 0 if not result["violations"] and result["drained"] else 1


if __name__ == "__main__":
    sys.exit(main())
