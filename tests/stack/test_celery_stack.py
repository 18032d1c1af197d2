"""The flow on a production-like stack: Airflow on PostgreSQL with the CeleryExecutor (Redis broker,
PostgreSQL results), two Celery workers, api-server, scheduler, dag-processor and the fakes, all on
127.0.0.1 and on free ports (devtools/celery_stack.py, the same code as `bin/airflow-celery`).

One stack serves the module (starting it costs ~25 s); every test has a flow of its own, reading its
own channel of the fake Omnitron, so the tests do not see each other's plans:

* celery_flow     channel 1 (web): a run through the Celery workers;
* celery_serial   channel 2 (web): two runs triggered back to back never overlap (max_active_runs=1);
* celery_retry    channel 3 (marketplace), retries 1: a worker killed during a plan's ERP write.

The kill test runs last: it leaves one worker. PostgreSQL and Redis must be reachable: without them
the tests fail (devtools/ensure_services.sh starts both), they are never skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import yaml

from devtools.airflow_env import ROOT
from devtools.celery_stack import CeleryStack, ServiceUnavailable, check_services, drop_database, throwaway_config
from devtools.stack import command_line, port_listening
from devtools.stack_client import AirflowRest, FakesClient
from fakes.data import make_plan

# The tests share one stack (a module fixture): on one xdist worker.
pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("celery_stack")]

HEARTBEAT_TIMEOUT = 10
QUEUED_TIMEOUT = 30
PLAN_STEPS = {"plan.transform", "plan.write_erp", "plan.write_omnitron"}
WORKLOAD = re.compile(
    r"Executing workload in Celery: .*?ti=TaskInstanceDTO\(id=UUID\('(?P<id>[0-9a-f-]+)'\), "
    r"task_id='(?P<task>[^']+)'.*?try_number=(?P<try>\d+)"
)


def flow_document(flow_id: str, channel: int, channel_type: str = "web", **overrides) -> dict:
    document = {
        "flow_id": flow_id,
        "schedule": None,
        "retries": 0,
        "omnitron": {"conn_id": "omnitron_demo"},
        "get_data": {
            "channel_type": channel_type,
            "cancel_type": "all",
            "cancel_status": "waiting",
            "channel_ids": [channel],
        },
        "mapping": "mappings/erp_cancel.json",
        "erp": {"conn_id": "erp_demo", "login": {"type": "token", "url": "/api/auth/login", "prefix": "Bearer"}},
        "write_erp": {"url": f"/api/{flow_id}", "method": "POST"},
        "write_omnitron": {"next_state": "approved"},
    }
    document.update(overrides)
    return document


FLOWS = [
    flow_document("celery_flow", channel=1),
    flow_document("celery_serial", channel=2),
    flow_document("celery_retry", channel=3, channel_type="marketplace", retries=1, retry_delay_seconds=1),
]


@dataclass
class RunningStack:
    stack: CeleryStack
    rest: AirflowRest
    fakes: FakesClient

    def run_flow(self, dag_id: str, timeout: float = 90.0) -> dict:
        run = self.rest.trigger(dag_id)
        return self.rest.wait_for_run(dag_id, run["dag_run_id"], timeout=timeout)

    def workloads(self) -> dict[tuple[str, int], str]:
        """(task instance id, try number) -> the worker whose log says it executed that workload."""
        found = {}
        for name in sorted(path.stem for path in self.stack.stack.log_dir.glob("worker-*.log")):
            for match in WORKLOAD.finditer(self.stack.log_path(name).read_text(errors="replace")):
                found[(match["id"], int(match["try"]))] = name
        return found


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("celery-stack")
    flows = base / "flows"
    shutil.copytree(ROOT / "include" / "flows" / "mappings", flows / "mappings")
    for document in FLOWS:
        (flows / f"{document['flow_id']}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    config = throwaway_config(
        base,
        flows_dir=flows,
        database=f"airflow_order_cancel_test_{os.getpid()}",
        redis_db=8,
        manual_only=True,
        workers=2,
        concurrency=4,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        queued_timeout=QUEUED_TIMEOUT,
    )
    port, omnitron_port, erp_port = config.port, config.omnitron_port, config.erp_port
    try:
        check_services(config)
    except ServiceUnavailable as exc:
        pytest.fail(f"the Celery stack needs PostgreSQL and Redis: {exc}", pytrace=False)
    stack = CeleryStack(config)
    try:
        started = time.monotonic()
        stack.start()
        print(f"\nCelery stack ready in {time.monotonic() - started:.1f} s")
        rest = AirflowRest(port).login()
        for document in FLOWS:
            rest.wait_for_dag(document["flow_id"])
            rest.unpause(document["flow_id"])
        yield RunningStack(stack, rest, FakesClient(omnitron_port, erp_port))
    finally:
        stopping = time.monotonic()
        stack.stop()
        print(f"\nCelery stack stopped in {time.monotonic() - stopping:.1f} s")
        # Every process the stack ever started, and all they forked (task processes in process
        # groups of their own, pool processes of the killed worker): by session and by marker.
        left = [(pid, command_line(pid)) for pid in stack.stack.leftovers()]
        listening = [p for p in (port, omnitron_port, erp_port) if port_listening(p)]
        drop_database(config)
        assert left == [], f"processes of the stack still alive: {left}"
        assert listening == [], f"ports still listening: {listening}"


def _when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def _by_plan(instances: list[dict], task_id: str) -> dict[int, dict]:
    """The mapped instances of one step by plan pk (their label is `plan <pk> · order <number>`)."""
    return {
        int(ti["rendered_map_index"].split()[1]): ti
        for ti in instances
        if ti["task_id"] == task_id and (ti["rendered_map_index"] or "").startswith("plan ")
    }


def test_a_flow_runs_to_success_through_the_celery_workers(celery_stack):
    plans = list(range(101, 107))
    celery_stack.fakes.add_plans([make_plan(pk, channel=1) for pk in plans])

    run = celery_stack.run_flow("celery_flow")

    instances = celery_stack.rest.task_instances("celery_flow", run["dag_run_id"])
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
    assert run["state"] == "success", states
    assert all(state == "success" for state in states.values()), states
    mapped = [ti for ti in instances if ti["map_index"] >= 0]
    assert len(mapped) == 3 * len(plans) and {ti["task_id"] for ti in mapped} == PLAN_STEPS
    assert celery_stack.fakes.plan_statuses(plans) == dict.fromkeys(plans, "approved")
    sent = celery_stack.fakes.erp_requests("/api/celery_flow")
    assert sorted(call["body"]["cancellationId"] for call in sent) == plans

    # Every task instance went through the Celery queue and ran in a Celery worker: the worker's log
    # names the task instance's id in the workload it executed. (`executor` stays null: no task
    # asks for a specific executor, the CeleryExecutor is the default one.)
    workloads = celery_stack.workloads()
    ran_on = {ti["id"]: workloads.get((ti["id"], ti["try_number"])) for ti in instances}
    assert None not in ran_on.values(), [ti["task_id"] for ti in instances if ran_on[ti["id"]] is None]
    assert all(ti["queue"] == "default" and ti["hostname"] and ti["pid"] for ti in instances)
    used = sorted(set(ran_on.values()))
    print(
        f"\n{len(instances)} task instances in {run['duration']:.1f} s, on "
        + ", ".join(f"{name}: {list(ran_on.values()).count(name)}" for name in used)
    )
    assert set(used) <= {"worker-1", "worker-2"}


def test_nothing_of_the_stack_listens_beyond_loopback(celery_stack):
    """The workers and the scheduler serve no logs (--skip-serve-logs: no port 8793 on every
    interface); the api-server and the fakes bind 127.0.0.1."""
    import psutil

    config = celery_stack.stack.config
    ours = set(celery_stack.stack.stack.leftovers())  # every live process of the stack
    listening = [
        (conn.pid, conn.laddr.ip, conn.laddr.port)
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in ours
    ]
    assert {port for _, _, port in listening} >= {config.port, config.omnitron_port, config.erp_port}, listening
    assert all(ip in ("127.0.0.1", "::1") for _, ip, _ in listening), listening


def test_two_runs_of_one_flow_never_overlap(celery_stack):
    plans = [201, 202, 203]
    celery_stack.fakes.add_plans([make_plan(pk, channel=2) for pk in plans])
    # A slow ERP answer keeps the first run busy, so a second run would have time to start beside it.
    celery_stack.fakes.erp_respond(
        match={"cancellationId": 201}, status=201, body={"id": "ERP-slow", "status": "accepted"}, delay=4, times=1
    )
    rest = celery_stack.rest

    first = rest.trigger("celery_serial")["dag_run_id"]
    second = rest.trigger("celery_serial")["dag_run_id"]
    seen_together = []
    deadline = time.monotonic() + 120
    while True:
        one, two = rest.run("celery_serial", first), rest.run("celery_serial", second)
        seen_together.append((one["state"], two["state"]))
        if one["state"] in ("success", "failed") and two["state"] in ("success", "failed"):
            break
        assert time.monotonic() < deadline, f"runs not finished: {one['state']}, {two['state']}"
        time.sleep(0.3)

    assert ("running", "running") not in seen_together
    assert ("running", "queued") in seen_together, seen_together  # the second one waited
    assert one["state"] == two["state"] == "success"
    assert _when(two["start_date"]) >= _when(one["end_date"]), (one["start_date"], one["end_date"], two["start_date"])
    # The first run took every plan; the second found none left (they are approved now).
    assert celery_stack.fakes.plan_statuses(plans) == dict.fromkeys(plans, "approved")
    assert sorted(c["body"]["cancellationId"] for c in celery_stack.fakes.erp_requests("/api/celery_serial")) == plans
    second_instances = rest.task_instances("celery_serial", second)
    assert next(ti for ti in second_instances if ti["task_id"] == "fetch_plans")["state"] == "success"
    assert not [ti for ti in second_instances if ti["map_index"] >= 0 and ti["state"] == "success"]
    print(f"\nrun 1 {one['start_date']} .. {one['end_date']}, run 2 {two['start_date']} .. {two['end_date']}")


# Select it alone with: bin/test -m worker_kill tests/stack
@pytest.mark.worker_kill
def test_a_worker_killed_during_the_erp_write_is_noticed_and_the_write_retried_once_booked(celery_stack):
    """The fake ERP holds plan 302's answer for 8 s. As soon as it has the request, the whole Celery
    worker running that write is SIGKILLed (see CeleryStack.kill_worker): main process, pool
    processes (task supervisors) and task processes, so nothing reports the failure. The scheduler
    notices the missing heartbeats, fails the try, and the other worker runs try 2, which sends the
    plan again with the same Idempotency-Key.

    The dead worker may also have taken another plan's task from the broker without starting it:
    that task stays queued until the scheduler's task_queued_timeout sends it again (Redis would
    redeliver the message only after hours). Without that setting such a run never finished: 4 of
    19 runs before the stack set it."""
    plans, slow = [301, 302, 303], 302
    fakes, rest, stack = celery_stack.fakes, celery_stack.rest, celery_stack.stack
    fakes.add_plans([make_plan(pk, channel=3) for pk in plans])
    fakes.erp_respond(
        match={"cancellationId": slow},
        status=201,
        body={"id": "ERP-never-read", "status": "accepted"},
        delay=8,
        times=1,
    )

    def writes_of_slow_plan() -> list[dict]:
        return [c for c in fakes.erp_requests("/api/celery_retry") if c["body"]["cancellationId"] == slow]

    run_id = rest.trigger("celery_retry")["dag_run_id"]
    deadline = time.monotonic() + 60
    while not writes_of_slow_plan():
        assert time.monotonic() < deadline, "the ERP never received plan 302"
        time.sleep(0.1)
    # The instance writing plan 302 (labelled once it runs; the label can lag the request briefly).
    while not (write := _by_plan(rest.task_instances("celery_retry", run_id), "plan.write_erp").get(slow)):
        assert time.monotonic() < deadline, "no write_erp instance labelled plan 302"
        time.sleep(0.1)
    assert write["state"] == "running" and write["try_number"] == 1 and write["pid"], write
    worker = stack.worker_of(write["pid"])  # the task process's pid, as the task reported it
    assert worker, f"no worker runs pid {write['pid']} ({command_line(write['pid'])})"
    killed = stack.kill_worker(worker)
    killed_at, killed_when = time.monotonic(), datetime.now(UTC)
    print(f"\nkilled {worker}: {len(killed)} processes, task process {write['pid']} among them")
    assert write["pid"] in killed

    run = rest.wait_for_run("celery_retry", run_id, timeout=120)
    noticed_after = time.monotonic() - killed_at

    instances = rest.task_instances("celery_retry", run_id)
    assert run["state"] == "success", {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
    tries = rest.tries("celery_retry", run_id, "plan.write_erp", write["map_index"])
    assert [t["try_number"] for t in tries] == [1, 2], tries
    assert tries[0]["state"] in ("failed", "up_for_retry") and tries[1]["state"] == "success", tries
    # Try 2 (a task instance id of its own: every try gets one) ran on the worker left.
    survivor = {"worker-1", "worker-2"} - {worker}
    retried = rest.task_instance("celery_retry", run_id, "plan.write_erp", write["map_index"])
    assert retried["try_number"] == 2 and celery_stack.workloads().get((retried["id"], 2)) in survivor
    # How Airflow noticed: the scheduler's heartbeat check (an audit log entry "heartbeat timeout").
    timeouts = [
        e
        for e in rest.event_logs(dag_id="celery_retry", event="heartbeat timeout")
        if e["task_id"] == "plan.write_erp" and e["map_index"] == write["map_index"]
    ]
    assert timeouts, rest.event_logs(dag_id="celery_retry")

    # The ERP got plan 302 twice with one key, and booked it once; every plan is approved.
    sent = writes_of_slow_plan()
    keys = [call["headers"]["idempotency-key"] for call in sent]
    assert len(sent) == 2 and keys[0] == keys[1], keys
    bookings = {key: booking for key, booking in fakes.erp_bookings().items() if key.startswith("celery_retry-")}
    assert keys[0] in bookings and len(bookings) == len(plans), bookings
    assert fakes.plan_statuses(plans) == dict.fromkeys(plans, "approved")
    requeued = [
        (e["task_id"], e["map_index"])
        for e in rest.event_logs(dag_id="celery_retry", event="stuck in queued reschedule")
    ]
    detected = (_when(timeouts[0]["when"]) - killed_when).total_seconds()
    retry_started = (_when(retried["start_date"]) - killed_when).total_seconds()
    print(
        f"heartbeat timeout ({HEARTBEAT_TIMEOUT} s) detected {detected:.1f} s after the kill, try 2 started on "
        f"{sorted(survivor)[0]} after {retry_started:.1f} s, run finished after {noticed_after:.1f} s; "
        f"audit log: {timeouts[0]['extra'][:70]}...; requeued after {QUEUED_TIMEOUT} s in queue: {requeued or 'none'}"
    )
