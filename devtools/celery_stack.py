"""A production-like Airflow with one command (`bin/airflow-celery`): Airflow on PostgreSQL with the
CeleryExecutor (Redis as the broker, PostgreSQL as the result backend), N Celery workers, the
api-server, scheduler and dag-processor, and the fake Omnitron and ERP; everything on 127.0.0.1.
Ctrl-C (or SIGTERM) stops every process it started.

    bin/airflow-celery [--workers 2] [--concurrency 4] [--database airflow_order_cancel] [--redis-db 7]
                       [--fresh] [--port 8080] [--no-fakes] [--manual-only] [--omnitron-port 18081] [--erp-port 18082]

It needs PostgreSQL (trust auth for the `postgres` user) and Redis on 127.0.0.1; on a machine where
they are not running, `devtools/ensure_services.sh` starts them. The metadata database (default
`airflow_order_cancel`) is created on first use and kept across restarts (`--fresh` drops it first);
the Redis database (`--redis-db`, default 7) is the Celery broker's alone and is emptied at every
start, so no message of an earlier stack is delivered to this one.

Nothing listens beyond 127.0.0.1: the workers and the scheduler run with --skip-serve-logs (they and
the api-server share the task log folder of the home), the api-server binds 127.0.0.1.

A killed worker: its tasks stop heartbeating; the scheduler fails them after
[scheduler] task_instance_heartbeat_timeout (here `--heartbeat-timeout`, default 15 s, checked every
2 s, instead of 300 s and 10 s) and retries them on the workers left. A task it had received from
the broker but not started yet stays queued (Redis hands an unacknowledged message to another worker
only after hours): the scheduler requeues it after [scheduler] task_queued_timeout (here
`--queued-timeout`, default 60 s, checked every 10 s, instead of 600 s and 120 s). A scheduler
requeues only what it queued itself: what a scheduler that died had queued waits until the next one
adopts it, every [scheduler] orphaned_tasks_check_interval (here 30 s instead of 300 s).

The process handling is devtools/stack.py's, shared with `bin/airflow-local`. Tests and the Celery
benchmark use `CeleryStack` directly (start, add or kill workers, stop).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from devtools.airflow_env import ROOT
from devtools.stack import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    Stack,
    StartupError,
    add_stack_arguments,
    airflow_healthy,
    banner_lines,
    base_env,
    fakes_command,
    free_ports,
    get_json,
    marked_processes,
    port_in_use,
    process_tree,
    run_in_foreground,
    send_signal,
)
from fakes import DEMO_ERP_PORT, DEMO_OMNITRON_PORT

DEFAULT_HOME = ROOT / ".airflow" / "celery"
DEFAULT_DATABASE = "airflow_order_cancel"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
DEFAULT_REDIS_DB = 7
ENSURE_SERVICES = "devtools/ensure_services.sh"
WORKER_READY = re.compile(rb"\S+@\S+ ready\.")


class ServiceUnavailable(StartupError):
    """PostgreSQL or Redis cannot be reached."""


@dataclass
class CeleryStackConfig:
    home: Path = DEFAULT_HOME
    port: int = 8080
    omnitron_port: int = DEMO_OMNITRON_PORT
    erp_port: int = DEMO_ERP_PORT
    fakes: bool = True
    plans: int = 24
    flows_dir: Path = ROOT / "include" / "flows"
    manual_only: bool = False
    workers: int = 2
    concurrency: int = 4
    parallelism: int = 16
    database: str = DEFAULT_DATABASE
    pg_url: str = DEFAULT_PG_URL  # server URL without the database: trust auth, user postgres
    redis_url: str = DEFAULT_REDIS_URL  # server URL without the database number
    redis_db: int = DEFAULT_REDIS_DB
    fresh: bool = False  # drop the metadata database first
    heartbeat_timeout: int = 15
    queued_timeout: int = 60
    timeout: float = 180.0
    inherit_airflow_env: bool = True  # False for a test process that has its own Airflow set up
    keep_env_connections: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def sql_alchemy_conn(self) -> str:
        return f"{self.pg_url.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{self.database}"

    @property
    def broker_url(self) -> str:
        return f"{self.redis_url}/{self.redis_db}"

    @property
    def result_backend(self) -> str:
        return f"db+{self.sql_alchemy_conn}"

    def fake_urls(self) -> tuple[str, str]:
        return f"http://127.0.0.1:{self.omnitron_port}", f"http://127.0.0.1:{self.erp_port}"


# --- PostgreSQL and Redis ------------------------------------------------------------------------


def throwaway_config(base: Path, *, flows_dir: Path, database: str, redis_db: int, **settings) -> CeleryStackConfig:
    """A stack for one test, benchmark or soak: its home under `base`, free ports, no demo plans, a
    fresh database and Redis database of its own, nothing of the caller's Airflow environment."""
    port, omnitron_port, erp_port = free_ports(3)
    return CeleryStackConfig(
        home=base / "airflow-home",
        port=port,
        omnitron_port=omnitron_port,
        erp_port=erp_port,
        plans=0,
        flows_dir=flows_dir,
        fresh=True,
        database=database,
        redis_db=redis_db,
        inherit_airflow_env=False,
        **settings,
    )


def _pg_admin(config: CeleryStackConfig):
    import psycopg2

    try:
        connection = psycopg2.connect(f"{config.pg_url}/postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise ServiceUnavailable(
            f"PostgreSQL is not reachable at {config.pg_url} ({str(exc).strip()}); start it with {ENSURE_SERVICES}"
        ) from None
    connection.autocommit = True
    return connection


def check_services(config: CeleryStackConfig) -> None:
    """Fails with a clear message when PostgreSQL or Redis cannot be reached."""
    _pg_admin(config).close()
    import redis

    try:
        redis.Redis.from_url(config.broker_url, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(
            f"Redis is not reachable at {config.redis_url} ({exc}); start it with {ENSURE_SERVICES}"
        ) from None


def _valid_database_name(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"database name {name!r}: lowercase letters, digits and underscores only")
    return name


def prepare_database(config: CeleryStackConfig) -> bool:
    """Creates the metadata database if needed (dropping it first with `fresh`); True if created."""
    name = _valid_database_name(config.database)
    connection = _pg_admin(config)
    try:
        with connection.cursor() as cursor:
            if config.fresh:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone():
                return False
            cursor.execute(f'CREATE DATABASE "{name}"')
            return True
    finally:
        connection.close()


def drop_database(config: CeleryStackConfig) -> None:
    connection = _pg_admin(config)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{_valid_database_name(config.database)}" WITH (FORCE)')
    finally:
        connection.close()


def flush_broker(config: CeleryStackConfig) -> None:
    """Empties the broker's Redis database: no message of an earlier stack reaches this one."""
    import redis

    redis.Redis.from_url(config.broker_url, socket_connect_timeout=5).flushdb()


# --- the environment -----------------------------------------------------------------------------

CELERY_CONFIG_OPTIONS = "order_cancel.airflow.celery_config.CELERY_CONFIG"


def celery_env(config: CeleryStackConfig) -> dict[str, str]:
    omnitron_url, erp_url = config.fake_urls()
    env = base_env(
        config.home,
        port=config.port,
        flows_dir=config.flows_dir,
        omnitron_url=omnitron_url,
        erp_url=erp_url,
        manual_only=config.manual_only,
        keep_env_connections=config.keep_env_connections,
        inherit_airflow_env=config.inherit_airflow_env,
    )
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": config.sql_alchemy_conn,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(config.parallelism),
            "AIRFLOW__CELERY__BROKER_URL": config.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": config.result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(config.concurrency),
            # Each worker imports the package once; its tasks' processes, forked from it, have it.
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": CELERY_CONFIG_OPTIONS,
            # A worker that dies is noticed by its tasks' missing heartbeats: the scheduler fails (and
            # retries) a running task instance without a heartbeat for this long. Airflow's default,
            # 300 s checked every 10 s, is for a fleet; locally a killed worker shows within ~17 s.
            # The supervisors heartbeat every 2 s (default 5 s), well inside the timeout.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(config.heartbeat_timeout),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
            # A task the dead worker had taken from the broker but not started stays queued: the
            # scheduler sends it again after this long (Airflow's default: 600 s, checked every 120 s).
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(config.queued_timeout),
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
            # ... but only what this scheduler queued: what a scheduler that died (or was restarted)
            # had queued is adopted by the next one at this interval (Airflow's default: 300 s), and
            # only then requeued; a worker lost beside a scheduler restart stalled runs that long.
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
            # Ready runs start quickly (the default scheduler loop waits up to 1 s between loops anyway).
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        }
    )
    env.update(config.extra_env)
    return env


# --- the stack -----------------------------------------------------------------------------------


class CeleryStack:
    """The processes of a Celery stack; `start()`, `add_worker()`, `kill_worker()`, `stop()`."""

    def __init__(self, config: CeleryStackConfig):
        self.config = config
        config.home = Path(config.home).resolve()
        config.home.mkdir(parents=True, exist_ok=True)
        self.stack = Stack(home=config.home, env=celery_env(config), banner_name="airflow-celery")
        self.workers: list[str] = []
        self._next_worker = 1

    # -- lifecycle --

    def start(self) -> float:
        """Everything up and healthy, every worker ready; returns the seconds it took."""
        config = self.config
        started = time.monotonic()
        check_services(config)
        wanted = [("api-server", config.port)]
        if config.fakes:
            wanted += [("fake Omnitron", config.omnitron_port), ("fake ERP", config.erp_port)]
        if busy := [f"{name} port {port}" for name, port in wanted if port_in_use(port)]:
            raise StartupError(f"already in use on 127.0.0.1: {', '.join(busy)} (another stack?)")
        if leftovers := marked_processes(str(config.home)):
            raise StartupError(f"processes of an earlier run with the home {config.home} are still alive: {leftovers}")
        created = prepare_database(config)
        flush_broker(config)
        if config.fakes:
            omnitron_url, erp_url = config.fake_urls()
            self.stack.spawn("fakes", fakes_command(config.omnitron_port, config.erp_port, config.plans))
        print(
            f"airflow-celery: airflow db migrate (PostgreSQL database {config.database}"
            f"{', new' if created else ''}) ...",
            flush=True,
        )
        self.stack.run_to_end("db-migrate", "db", "migrate")
        if self.stack.stop_requested.is_set():
            raise StartupError("stopped while starting")
        print(
            f"airflow-celery: starting api-server, scheduler, dag-processor, {config.workers} Celery "
            f"worker(s) x {config.concurrency} ...",
            flush=True,
        )
        for name in self.components:
            self.start_component(name)
        for _ in range(config.workers):
            self.add_worker(wait=False)
        if config.fakes:
            self.stack.wait_until(
                "the fakes", lambda: all(get_json(f"{url}/_fake/health") for url in (omnitron_url, erp_url)), 30
            )
        self.stack.wait_until("Airflow health", lambda: airflow_healthy(config.port), config.timeout)
        for name in self.workers:
            self.wait_worker_ready(name)
        return time.monotonic() - started

    def stop(self) -> None:
        """Workers first (newest first), then dag-processor, scheduler, api-server, fakes; then any
        task process left with the stack's marker."""
        self.stack.stop()
        self.workers.clear()

    def __enter__(self) -> CeleryStack:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- the api-server, scheduler and dag-processor --

    @property
    def components(self) -> dict[str, tuple[str, ...]]:
        """Airflow's own processes, by name: their `airflow` arguments."""
        return {
            "api-server": ("api-server", "--host", "127.0.0.1", "--port", str(self.config.port)),
            "scheduler": ("scheduler", "--skip-serve-logs"),
            "dag-processor": ("dag-processor",),
        }

    def start_component(self, name: str) -> None:
        self.stack.airflow(name, *self.components[name])

    def kill_component(self, name: str) -> None:
        """SIGKILL a component's whole process group, as when its container dies."""
        process = self.stack.process(name)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        self.stack.forget(name)

    # -- workers --

    def add_worker(self, wait: bool = True) -> str:
        """One more `airflow celery worker` (its own Celery node name, pid file and log)."""
        number = self._next_worker
        self._next_worker += 1
        name = f"worker-{number}"
        self.stack.airflow(
            name,
            "celery",
            "worker",
            "--skip-serve-logs",
            "--concurrency",
            str(self.config.concurrency),
            "--celery-hostname",
            f"{name}@%h",
            "--pid",
            str(self.config.home / f"{name}.pid"),
            "--without-gossip",
            "--without-mingle",
        )
        self.workers.append(name)
        if wait:
            self.wait_worker_ready(name)
        return name

    def wait_worker_ready(self, name: str, timeout: float = 90.0) -> float:
        """Until Celery logs `<node> ready.` for this worker (it then consumes from the queue)."""
        log = self.stack.log_dir / f"{name}.log"
        return self.stack.wait_until(
            f"Celery {name}", lambda: log.exists() and bool(WORKER_READY.search(log.read_bytes())), timeout
        )

    def worker_pid(self, name: str) -> int:
        return self.stack.process(name).pid

    def worker_of(self, pid: int) -> str | None:
        """The worker whose process tree holds `pid` (a supervisor or a task process)."""
        for name in self.workers:
            if pid in process_tree(self.worker_pid(name)):
                return name
        return None

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL every process of one worker at once, as when its machine or container dies: the
        Celery main process, its pool processes (each an Airflow task supervisor while it runs a
        task) and their task processes (in process groups of their own, so the worker's group alone
        would miss them). Nothing gets to report anything. Returns the pids killed."""
        root = self.worker_pid(name)
        # Freeze the tree first (a stopped process cannot fork), until no new process shows up,
        # so that no task process forked at the last moment escapes; then kill all of it.
        frozen: list[int] = []
        while new := [pid for pid in process_tree(root) if pid not in frozen]:
            for pid in new:
                send_signal(pid, signal.SIGSTOP)
            frozen += new
        for pid in frozen:
            send_signal(pid, signal.SIGKILL)
        self.stack.forget(name)
        self.workers.remove(name)
        return frozen

    # -- output --

    def log_path(self, name: str) -> Path:
        return self.stack.log_dir / f"{name}.log"

    def banner(self, seconds: float) -> str:
        config = self.config
        omnitron_url, erp_url = config.fake_urls()
        base = f"http://127.0.0.1:{config.port}"
        lines = [
            f"Celery Airflow is ready ({seconds:.1f} s).",
            f"  UI:            {base}/   login {ADMIN_USER} / {ADMIN_PASSWORD}",
            f"  REST API:      {base}/api/v2   token: POST {base}/auth/token "
            f'{{"username": "{ADMIN_USER}", "password": "{ADMIN_PASSWORD}"}}',
            f"  Metadata DB:   {config.sql_alchemy_conn}",
            f"  Celery:        broker {config.broker_url}, results {config.result_backend}",
            f"  Workers:       {', '.join(self.workers)} (concurrency {config.concurrency} each); "
            f"heartbeat timeout {config.heartbeat_timeout} s, queued timeout {config.queued_timeout} s",
        ]
        lines += banner_lines(
            fakes=config.fakes,
            omnitron_url=omnitron_url,
            erp_url=erp_url,
            flows_dir=config.flows_dir,
            manual_only=config.manual_only,
            log_dir=self.stack.log_dir,
            home=config.home,
        )
        return "\n".join(lines)


# --- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bin/airflow-celery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="Celery workers, default 2")
    parser.add_argument("--concurrency", type=int, default=4, help="task slots per worker, default 4")
    parser.add_argument("--parallelism", type=int, default=16, help="[core] parallelism, default 16")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help=f"PostgreSQL database, default {DEFAULT_DATABASE}")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help=f"PostgreSQL server, default {DEFAULT_PG_URL}")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis server, default {DEFAULT_REDIS_URL}")
    parser.add_argument(
        "--redis-db",
        type=int,
        default=DEFAULT_REDIS_DB,
        help=f"Redis database of the Celery broker (emptied at start), default {DEFAULT_REDIS_DB}",
    )
    parser.add_argument("--fresh", action="store_true", help="drop the metadata database and start from an empty one")
    parser.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=15,
        help="[scheduler] task_instance_heartbeat_timeout in seconds, default 15",
    )
    parser.add_argument(
        "--queued-timeout", type=int, default=60, help="[scheduler] task_queued_timeout in seconds, default 60"
    )
    add_stack_arguments(parser, DEFAULT_HOME)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> CeleryStackConfig:
    return CeleryStackConfig(
        home=args.home,
        port=args.port,
        omnitron_port=args.omnitron_port,
        erp_port=args.erp_port,
        fakes=not args.no_fakes,
        plans=args.plans,
        flows_dir=args.flows_dir,
        manual_only=args.manual_only,
        workers=args.workers,
        concurrency=args.concurrency,
        parallelism=args.parallelism,
        database=args.database,
        pg_url=args.pg_url.rstrip("/"),
        redis_url=args.redis_url.rstrip("/"),
        redis_db=args.redis_db,
        fresh=args.fresh,
        heartbeat_timeout=args.heartbeat_timeout,
        queued_timeout=args.queued_timeout,
        timeout=args.timeout,
        keep_env_connections=args.no_fakes,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workers < 1 or args.concurrency < 1:
        print("airflow-celery: --workers and --concurrency must be at least 1", file=sys.stderr)
        return 2
    if urlsplit(args.pg_url).path not in ("", "/"):
        print("airflow-celery: --pg-url names the server only; the database is --database", file=sys.stderr)
        return 2
    try:
        stack = CeleryStack(config_from_args(args))
    except ValueError as exc:
        print(f"airflow-celery: {exc}", file=sys.stderr)
        return 2
    return run_in_foreground(stack.stack, lambda: stack.banner(stack.start()), "airflow-celery")


if __name__ == "__main__":
    raise SystemExit(main())
