"""The crash-point matrix (`bin/crashpoints`): a task process SIGKILLed at each dangerous moment of a
plan, as a lost worker, on a real scheduler; then the verdict on what Airflow's retry did, from what
the fakes recorded only.

    bin/crashpoints [--layouts per_step,single,batch] [--points erp_answer_held,...]
                    [--erp-ignores-key] [--keep-home]

One LocalExecutor stack (`python -m devtools.local_airflow`: SQLite, scheduler, dag-processor,
api-server, the fakes) serves every point. Each layout has a flow of its own on a channel of its
own, each point plans of its own, so no point sees another's plans. For each (layout, point): new
plans, a hold in a fake (the request takes effect, its answer comes a minute later), a run triggered
through the REST API; once the fake shows the held request applied, the task process doing it is
SIGKILLed (its supervisor fails the try at once and Airflow retries it).

    erp_answer_held        the ERP booked the plan, its answer is not back (batch: the ERP phase's middle)
    omnitron_answer_held   Omnitron applied the write, its answer is not back (batch: the Omnitron phase's middle)
    after_omnitron_answer  Omnitron answered and the task is at its last act, the plan ledger's write,
                           kept waiting by the harness holding SQLite's write lock on the ledger
    post_script_call_held  the post script's CRM call is held

Each hold names one plan: the ERP's is a scripted answer that books first (`book`), matched on the
plan's pk in the body (every plan goes to the same ERP path, and faults match paths only); Omnitron's
is a fault with `apply` on the plan's own approve path; the CRM's a fault with `apply` on a path that
the flows' post script ends with the plan's pk. In a batch the phase's other calls answer after a
second, so that some are in flight at the kill. after_omnitron_answer is made deterministic without a
hook in the product: Omnitron's answer is held 3 s, the harness takes the ledger's lock meanwhile,
and the kill comes once the answer is back and the task process has the ledger file open.

A point is ok when its run ends in success, the ERP booked every plan once (--erp-ignores-key: at
most the plans in flight at the kill booked twice), Omnitron was written once per plan and shows it
approved, and the killed task had a second try. Exit 1 when any point is not ok.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from devtools.airflow_env import ROOT
from devtools.soak_check import plan_of
from devtools.stack import Stack, StartupError, command_line, free_ports, process_tree
from devtools.stack_client import AirflowRest, FakesClient, RestError
from fakes.data import make_plan
from fakes.erp import CRM_PREFIX

T = TypeVar("T")

ERP_HELD, OMNITRON_HELD, AFTER_OMNITRON, POST_HELD = POINTS = (
    "erp_answer_held",
    "omnitron_answer_held",
    "after_omnitron_answer",
    "post_script_call_held",
)
LAUNCHER = "airflow-local"
ERP_PATH = "/api/cancellations"
CRM_PATH = f"{CRM_PREFIX}notify"
APPROVE_PATH = "/api/v1/orders/{order}/cancellation_approved_order/"
ACCEPTED = {"id": "ERP-held", "status": "accepted"}
LEDGER_FILE = "order_cancel_ledger.db"  # under AIRFLOW_HOME, as plugins/order_cancel/ledger/location.py says
HOLD_SECONDS = 60.0  # a held answer: far longer than any wait of a point
BRIEF_HOLD_SECONDS = 3.0  # after_omnitron_answer: time to take the ledger's lock before the answer
SLOW_SECONDS = 1.0  # a batch's other calls, so that some are in flight at the kill
BATCH_SIZE, BATCH_CONCURRENCY = 10, 3
START_TIMEOUT, APPLIED_TIMEOUT, TASK_TIMEOUT, RUN_TIMEOUT = 240.0, 120.0, 30.0, 240.0


@dataclass(frozen=True)
class Layout:
    """A flow's task layout, and how the harness uses it."""

    name: str
    channel: int
    plans: int  # plans per point
    target: int  # the index of the plan whose call is held
    tasks: dict[str, str]  # point -> the task that makes that call
    in_flight: int  # how many plans one killed task can have in flight at the ERP

    @property
    def dag_id(self) -> str:
        return f"crash_{self.name}"

    def flow_document(self, erp_url: str) -> dict[str, Any]:
        """No script or mapping (the ERP gets the plan itself); a post script that calls the CRM."""
        document: dict[str, Any] = {
            "flow_id": self.dag_id,
            "schedule": None,
            "retries": 2,
            "retry_delay_seconds": 1,
            "omnitron": {"conn_id": "omnitron_demo"},
            "get_data": {
                "channel_type": "marketplace" if self.channel == 3 else "web",
                "cancel_status": "waiting",
                "channel_ids": [self.channel],
            },
            "attributes": {"crm_url": f"{erp_url}{CRM_PATH}"},
            "erp": {"conn_id": "erp_demo", "login": {"type": "token", "url": "/api/auth/login", "prefix": "Bearer"}},
            "write_erp": {"url": ERP_PATH, "method": "POST"},
            "write_omnitron": {"next_state": "approved"},
            "post_script": "scripts/notify_crm.py",
        }
        if self.name == "batch":
            document["batch"] = {"size": BATCH_SIZE, "concurrency": BATCH_CONCURRENCY}
        else:
            document["plan_tasks"] = self.name
        return document


LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout(
            "per_step",
            channel=1,
            plans=3,
            target=1,
            tasks={
                ERP_HELD: "plan.write_erp",
                OMNITRON_HELD: "plan.write_omnitron",
                AFTER_OMNITRON: "plan.write_omnitron",
                POST_HELD: "plan.post_script",
            },
            in_flight=1,
        ),
        Layout("single", channel=2, plans=3, target=1, tasks=dict.fromkeys(POINTS, "plan"), in_flight=1),
        # 12 plans: a batch of 10, the held plan in its middle, beside a batch of 2.
        Layout(
            "batch",
            channel=3,
            plans=12,
            target=4,
            tasks=dict.fromkeys(POINTS, "plan_batch"),
            in_flight=BATCH_CONCURRENCY,
        ),
    )
}

# The post script of the flows: the plan's pk in the CRM path, so that one plan's call can be held.
NOTIFY_CRM = """\
import requests

url = "%s/%s" % (get_attribute("crm_url"), get_attribute("plan_pk"))
requests.post(url, json={"erp_response": response_data}, timeout=120).raise_for_status()
"""


class PointError(Exception):
    """A point that could not be played to its end (a wait that ran out, a task not found)."""


@dataclass(frozen=True)
class Result:
    layout: str
    point: str
    verdict: str  # ok, FAIL (a rule broken) or error (the point could not be played)
    evidence: str
    seconds: float = 0.0

    @property
    def row(self) -> tuple[str, str, str, str]:
        return self.layout, self.point, self.verdict, self.evidence


def until(what: str, found: Callable[[], T | None], timeout: float, poll: float = 0.1) -> T:
    """Polls `found()` until it gives something; a PointError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while (value := found()) is None or value is False:
        if time.monotonic() > deadline:
            raise PointError(f"no {what} after {timeout:.0f} s")
        time.sleep(poll)
    return value


# --- the stack -----------------------------------------------------------------------------------


class LocalAirflow:
    """`python -m devtools.local_airflow` on free ports and a fresh home, its output in
    <home>/components/airflow-local.log beside its components' logs; its SIGTERM stops every
    component (and the task processes) it started, and the Stack's nets catch what it missed."""

    def __init__(self, base: Path):
        self.home = base / "airflow-home"
        self.flows_dir = base / "flows"
        self.port, self.omnitron_port, self.erp_port = free_ports(3)
        # The launcher builds the Airflow environment itself: none of the caller's (a test's) settings.
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "ORDER_CANCEL"))}
        env["PYTHONPATH"] = str(ROOT)
        self.stack = Stack(home=self.home, env=env, banner_name="crashpoints")

    def start(self) -> None:
        options = {"--home": self.home, "--flows-dir": self.flows_dir, "--plans": 0, "--port": self.port}
        options.update({"--omnitron-port": self.omnitron_port, "--erp-port": self.erp_port})
        command = [sys.executable, "-m", "devtools.local_airflow", "--manual-only"]
        launcher = self.stack.spawn(LAUNCHER, command + [str(part) for option in options.items() for part in option])
        try:
            self.stack.wait_until(
                "Airflow", lambda: "Local Airflow is ready" in self.stack.log_tail(LAUNCHER), START_TIMEOUT
            )
        except StartupError as exc:
            raise PointError(str(exc)) from None
        # Every component runs in a session of its own, and so does every task process it forks.
        for pid in process_tree(launcher.pid):
            with suppress(ProcessLookupError):
                self.stack.sessions.add(os.getsid(pid))

    def stop(self) -> list[int]:
        """Stops the launcher, then whatever of the stack is left; returns what is alive after that.
        Ctrl-C and SIGTERM wait until the stop is done: raised in its middle, they left the stack running."""
        interrupts = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self.stack.stop()
            return self.stack.leftovers()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, interrupts)


@contextmanager
def ledger_locked(path: Path) -> Iterator[None]:
    """SQLite's write lock on the plan ledger: every task's last act, record_attempts, waits for it
    (up to 30 s), so a task that has done all its calls cannot end while the lock is held."""
    connection = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
    finally:
        connection.close()  # rolls the empty transaction back


def task_process(ti: dict) -> int | None:
    """The task runner of a running task instance, the process titled `airflow worker -- <task
    instance id>`: the REST API's `pid` when it is that process, else found in /proc. Only a process
    with that title is taken, so a reused pid is never killed."""
    title = f"airflow worker -- {ti['id']}"
    pids = [ti["pid"]] if ti.get("pid") else []
    pids += [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return next((pid for pid in pids if command_line(pid).startswith(title)), None)


def has_open(pid: int, path: Path) -> bool:
    """Whether the process has the file (or its -wal, -shm companions) open."""
    with suppress(OSError):  # a process gone, or a file closed meanwhile: not now
        return any(os.readlink(fd).startswith(str(path)) for fd in Path(f"/proc/{pid}/fd").iterdir())
    return False


def works_on(ti: dict, pk: int) -> bool:
    """Whether a task instance works on plan `pk`: its label names the plan, or a batch holding it."""
    label = ti.get("rendered_map_index") or ""
    if batch := re.match(r"plans (\d+)\D+(\d+) ", label):
        return int(batch[1]) <= pk <= int(batch[2])
    return label.startswith(f"plan {pk} ")


# --- the verdict ---------------------------------------------------------------------------------


def judge(
    pks: list[int],
    *,
    run_state: str,
    tries: int,
    bookings: list[dict],
    writes: list[dict],
    statuses: dict[int, str],
    doubles_allowed: int = 0,
) -> tuple[str, str]:
    """(verdict, evidence) of one point, from the run's state, the killed task's tries and the fakes'
    records. `doubles_allowed`: how many plans the ERP may book twice (an ERP that ignores the key
    books a resend again: at most the plans in flight at the kill)."""
    booked_log = Counter(plan_of(booking) for booking in bookings if booking["path"] == ERP_PATH)
    written_log = Counter(write["plan"] for write in writes)
    booked, written = {pk: booked_log[pk] for pk in pks}, {pk: written_log[pk] for pk in pks}
    problems = [f"run {run_state}"] if run_state != "success" else []
    if tries < 2:
        problems.append(f"the killed task had {tries} try")
    most = 2 if doubles_allowed else 1
    problems += _grouped("booked {}x", booked, lambda count: 1 <= count <= most)
    doubles = [pk for pk in pks if booked[pk] == 2]
    if doubles_allowed and len(doubles) > doubles_allowed:
        problems.append(
            f"booked twice: {len(doubles)} plans, more than the {doubles_allowed} in flight at most: "
            + ", ".join(map(str, doubles))
        )
    problems += _grouped("written {}x", written, lambda count: count == 1)
    problems += _grouped("{} in Omnitron", {pk: statuses.get(pk) for pk in pks}, lambda status: status == "approved")
    once = sum(count == 1 for count in booked.values())
    evidence = f"tries={tries} bookings={once}/{len(pks)} writes={sum(n == 1 for n in written.values())}/{len(pks)}"
    evidence += (f" booked_twice={len(doubles)}" if doubles else "") + f" run={run_state}"
    return ("FAIL", f"{evidence}: {'; '.join(problems)}") if problems else ("ok", evidence)


def _grouped(what: str, values: dict[int, Any], wanted: Callable[[Any], bool]) -> list[str]:
    """One problem per unwanted value, with its plans: `written 2x: plans 7, 8`."""
    plans: dict[Any, list[str]] = {}
    for pk, value in values.items():
        if not wanted(value):
            plans.setdefault(value, []).append(str(pk))
    return [f"{what.format(value)}: plans {', '.join(pks)}" for value, pks in plans.items()]


# --- the harness ---------------------------------------------------------------------------------


class CrashPoints:
    """One stack with a flow per layout; `run_point` plays one (layout, point) on it."""

    def __init__(self, base: Path, layouts: list[str], *, erp_ignores_key: bool = False):
        self.airflow = LocalAirflow(base)
        self.layouts = [LAYOUTS[name] for name in layouts]
        self.erp_ignores_key = erp_ignores_key
        self.fakes = FakesClient(self.airflow.omnitron_port, self.airflow.erp_port)
        self.rest = AirflowRest(self.airflow.port)
        self.ledger = self.airflow.home / LEDGER_FILE
        self.next_pk = {layout.name: 10_000 * (index + 1) for index, layout in enumerate(LAYOUTS.values())}
        self.left: list[int] = []

    def __enter__(self) -> CrashPoints:
        try:
            self.start()
        except BaseException:
            self.left = self.airflow.stop()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.left = self.airflow.stop()

    def start(self) -> None:
        """The flows, the stack, and a warm-up run per layout (it makes the plan ledger, too)."""
        scripts = self.airflow.flows_dir / "scripts"
        scripts.mkdir(parents=True)
        (scripts / "notify_crm.py").write_text(NOTIFY_CRM)
        erp_url = f"http://127.0.0.1:{self.airflow.erp_port}"
        for layout in self.layouts:
            document = layout.flow_document(erp_url)
            (self.airflow.flows_dir / f"{layout.dag_id}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        self.airflow.start()
        self.rest.login()
        runs = {}
        for layout in self.layouts:
            self.rest.wait_for_dag(layout.dag_id)
            self.rest.unpause(layout.dag_id)
            self.fakes.add_plans(self.new_plans(layout, 1))
            runs[layout.dag_id] = self.rest.trigger(layout.dag_id)["dag_run_id"]
        for dag_id, run_id in runs.items():
            state = self.rest.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)["state"]
            if state != "success":
                raise PointError(f"the warm-up run of {dag_id} ended {state}; see {self.airflow.home}/logs")
        if not self.ledger.exists():
            raise PointError(f"no plan ledger at {self.ledger} after the warm-up runs")
        self.fakes.erp_honours_idempotency(not self.erp_ignores_key)

    def new_plans(self, layout: Layout, count: int) -> list[dict]:
        first = self.next_pk[layout.name]
        self.next_pk[layout.name] += 100
        return [make_plan(pk, channel=layout.channel) for pk in range(first, first + count)]

    def run_point(self, layout_name: str, point: str) -> Result:
        layout = LAYOUTS[layout_name]
        plans = self.new_plans(layout, layout.plans)
        started = time.monotonic()
        try:
            verdict, evidence = self._play(layout, point, plans)
        except (PointError, RestError, OSError) as exc:
            verdict, evidence = "error", str(exc).replace("\n", " ")
        finally:
            with suppress(RestError, OSError):
                self.fakes.clear_faults()
                self._park(plans)
        return Result(layout.name, point, verdict, evidence, time.monotonic() - started)

    def _play(self, layout: Layout, point: str, plans: list[dict]) -> tuple[str, str]:
        target, task_id = plans[layout.target], layout.tasks[point]
        self.fakes.add_plans(plans)
        self._hold(layout, point, target)
        run_id = self.rest.trigger(layout.dag_id)["dag_run_id"]
        try:
            ti = self._kill(layout, point, target, run_id, task_id)
            run = self.rest.wait_for_run(layout.dag_id, run_id, timeout=RUN_TIMEOUT)
        except (PointError, RestError):
            with suppress(RestError, OSError):  # not to leave it running beside the next point
                self.rest.api("PATCH", f"/dags/{layout.dag_id}/dagRuns/{run_id}", json={"state": "failed"})
            raise
        pks = [plan["pk"] for plan in plans]
        return judge(
            pks,
            run_state=run["state"],
            tries=len(self.rest.tries(layout.dag_id, run_id, task_id, ti["map_index"])),
            bookings=[b for b in self.fakes.erp_booking_log() if b["path"] == ERP_PATH and plan_of(b) in pks],
            writes=[write for write in self.fakes.omnitron_writes() if write["plan"] in pks],
            statuses=self.fakes.plan_statuses(pks),
            doubles_allowed=layout.in_flight if self.erp_ignores_key else 0,
        )

    def _hold(self, layout: Layout, point: str, target: dict) -> None:
        """The fault that holds the target plan's call; in a batch, the others of the phase slowed."""
        slow_others = layout.name == "batch"
        approve = APPROVE_PATH.format(order=target["order"]["pk"])
        if point == ERP_HELD:
            held = {"path": ERP_PATH, "method": "POST", "status": 201, "body": ACCEPTED, "book": True}
            if slow_others:
                self.fakes.erp_respond(**held, delay=SLOW_SECONDS, times=None)
            self.fakes.erp_respond(**held, match={"pk": target["pk"]}, delay=HOLD_SECONDS, times=1)
        elif point in (OMNITRON_HELD, AFTER_OMNITRON):
            if slow_others and point == OMNITRON_HELD:
                any_approve = APPROVE_PATH.format(order=r"\d+")
                self.fakes.omnitron_fault(
                    method="POST", path_regex=any_approve, apply=True, delay=SLOW_SECONDS, times=None
                )
            delay = HOLD_SECONDS if point == OMNITRON_HELD else BRIEF_HOLD_SECONDS
            self.fakes.omnitron_fault(method="POST", path_regex=f"^{approve}$", apply=True, delay=delay, times=1)
        else:
            self.fakes.erp_fault(
                method="POST", path_regex=f"^{CRM_PATH}/{target['pk']}$", apply=True, delay=HOLD_SECONDS, times=1
            )

    def _applied(self, point: str, pk: int) -> bool:
        """Whether the fake shows the target's held call done (booked, written, notified)."""
        if point in (OMNITRON_HELD, AFTER_OMNITRON):
            return any(write["plan"] == pk for write in self.fakes.omnitron_writes())
        path = ERP_PATH if point == ERP_HELD else f"{CRM_PATH}/{pk}"
        return any(b["path"] == path and (point != ERP_HELD or plan_of(b) == pk) for b in self.fakes.erp_booking_log())

    def _kill(self, layout: Layout, point: str, target: dict, run_id: str, task_id: str) -> dict:
        """Once the held call is applied: SIGKILL the process of the task making it. Returns the task
        instance."""
        pk = target["pk"]
        until(f"{point} of plan {pk} in the fake's log", lambda: self._applied(point, pk), APPLIED_TIMEOUT)
        applied = time.monotonic()
        with ExitStack() as lock:
            if point == AFTER_OMNITRON:
                lock.enter_context(ledger_locked(self.ledger))
            ti = until(
                f"running {task_id} instance of plan {pk}",
                lambda: self._running(layout.dag_id, run_id, task_id, pk),
                TASK_TIMEOUT,
                poll=0.3,
            )
            pid = until(f"task process of {task_id} ({ti['id']})", lambda: task_process(ti), TASK_TIMEOUT)
            if point == AFTER_OMNITRON:  # Omnitron's answer is back, the task is at the ledger's write
                until(
                    f"ledger write of {task_id} (plan {pk}) after Omnitron's answer",
                    lambda: time.monotonic() > applied + BRIEF_HOLD_SECONDS and has_open(pid, self.ledger),
                    TASK_TIMEOUT,
                )
            os.kill(pid, signal.SIGKILL)
            self.fakes.clear_faults()  # the retry meets answers in time
        return ti

    def _running(self, dag_id: str, run_id: str, task_id: str, pk: int) -> dict | None:
        """The running instance of `task_id` that works on plan `pk`, if any."""
        instances = self.rest.task_instances(dag_id, run_id)
        return next(
            (ti for ti in instances if ti["task_id"] == task_id and ti["state"] == "running" and works_on(ti, pk)), None
        )

    def _park(self, plans: list[dict]) -> None:
        """Plans a point left waiting (its run failed) are taken out of the next points' way."""
        statuses = self.fakes.plan_statuses([plan["pk"] for plan in plans])
        self.fakes.add_plans([{**plan, "status": "rejected"} for plan in plans if statuses[plan["pk"]] == "waiting"])


# --- the command ---------------------------------------------------------------------------------


def table(results: list[Result]) -> list[str]:
    rows = [("layout", "point", "verdict", "evidence"), *(result.row for result in results)]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [" | ".join([*(row[column].ljust(width) for column, width in enumerate(widths)), row[3]]) for row in rows]
    return [lines[0], "-+-".join("-" * width for width in [*widths, 8]), *lines[1:]]


def run_matrix(pairs: list[tuple[str, str]], *, erp_ignores_key: bool, keep_home: bool) -> list[Result]:
    base = Path(tempfile.mkdtemp(prefix="order-cancel-crashpoints-"))
    results: list[Result] = []
    try:
        print(f"crashpoints: starting the stack in {base} ...", flush=True)
        with CrashPoints(
            base, list(dict.fromkeys(layout for layout, _ in pairs)), erp_ignores_key=erp_ignores_key
        ) as run:
            for layout, point in pairs:
                results.append(result := run.run_point(layout, point))
                print(f"crashpoints: {' | '.join(result.row)} ({result.seconds:.0f} s)", flush=True)
        if run.left:
            print(f"crashpoints: processes of the stack still alive after its stop: {run.left}", flush=True)
        return results
    finally:
        if keep_home:
            print(f"crashpoints: the stack's home (logs, the plan ledger) is kept in {base}", flush=True)
        else:
            shutil.rmtree(base, ignore_errors=True)


def _names(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        if unknown := [name for name in names if name not in allowed]:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(allowed)}")
        return names

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bin/crashpoints", description="A task process killed at each crash point; the retry judged by the fakes."
    )
    parser.add_argument("--layouts", type=_names(tuple(LAYOUTS)), default=list(LAYOUTS), help="comma-separated")
    parser.add_argument("--points", type=_names(POINTS), default=list(POINTS), help="comma-separated")
    parser.add_argument(
        "--erp-ignores-key",
        action="store_true",
        help="the fake ERP books every send again: at most the plans in flight at the kill may be booked twice",
    )
    parser.add_argument("--keep-home", action="store_true", help="keep the stack's home (logs, ledger) afterwards")
    return parser.parse_args(argv)


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # stops the stack as Ctrl-C does
    started = time.monotonic()
    pairs = [(layout, point) for layout in args.layouts for point in args.points]
    try:
        results = run_matrix(pairs, erp_ignores_key=args.erp_ignores_key, keep_home=args.keep_home)
    except PointError as exc:
        print(f"crashpoints: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("crashpoints: interrupted; the stack is stopped", file=sys.stderr)
        return 130
    print("\n".join(["", *table(results), "", f"{len(results)} points in {time.monotonic() - started:.0f} s"]))
    return 0 if results and all(result.verdict == "ok" for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
