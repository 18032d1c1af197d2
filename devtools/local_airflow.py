"""A local Airflow with one command (`bin/airflow-local`): the fake Omnitron and ERP, and Airflow's
api-server, scheduler and dag-processor, all on 127.0.0.1, with a LocalExecutor and SQLite in
.airflow/local. Ctrl-C (or SIGTERM) stops every process it started.

    bin/airflow-local [--port 8080] [--no-fakes] [--manual-only] [--omnitron-port 18081] [--erp-port 18082]

Why not `airflow standalone`: its log servers bind every interface (8793/8794). Here the scheduler
runs with --skip-serve-logs (the api-server reads task logs from the same disk) and everything else
is bound to 127.0.0.1.

Task processes run in process groups of their own (the task SDK's supervisor calls setpgid), so
after stopping the process groups it started, the launcher also stops any process left in the
sessions it started or carrying the marker ORDER_CANCEL_LOCAL_AIRFLOW=<home> in its environment.
The process handling lives in devtools/stack.py, shared with `bin/airflow-celery`.
"""

from __future__ import annotations

import argparse
import sys
import time

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
    get_json,
    marked_processes,
    port_in_use,
    run_in_foreground,
)

DEFAULT_HOME = ROOT / ".airflow" / "local"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bin/airflow-local", description=__doc__.split("\n\n")[0])
    add_stack_arguments(parser, DEFAULT_HOME)
    return parser.parse_args(argv)


def fake_urls(args: argparse.Namespace) -> tuple[str, str]:
    return f"http://127.0.0.1:{args.omnitron_port}", f"http://127.0.0.1:{args.erp_port}"


def stack_env(args: argparse.Namespace) -> dict[str, str]:
    omnitron_url, erp_url = fake_urls(args)
    env = base_env(
        args.home,
        port=args.port,
        flows_dir=args.flows_dir,
        omnitron_url=omnitron_url,
        erp_url=erp_url,
        manual_only=args.manual_only,
        keep_env_connections=args.no_fakes,
    )
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
        }
    )
    return env


def banner(args: argparse.Namespace, seconds: float) -> str:
    omnitron_url, erp_url = fake_urls(args)
    base = f"http://127.0.0.1:{args.port}"
    lines = [
        f"Local Airflow is ready ({seconds:.1f} s).",
        f"  UI:            {base}/   login {ADMIN_USER} / {ADMIN_PASSWORD}",
        f"  REST API:      {base}/api/v2   token: POST {base}/auth/token "
        f'{{"username": "{ADMIN_USER}", "password": "{ADMIN_PASSWORD}"}}',
    ]
    lines += banner_lines(
        fakes=not args.no_fakes,
        omnitron_url=omnitron_url,
        erp_url=erp_url,
        flows_dir=args.flows_dir,
        manual_only=args.manual_only,
        log_dir=args.home / "components",
        home=args.home,
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.home = args.home.resolve()
    args.home.mkdir(parents=True, exist_ok=True)
    wanted = [("api-server", args.port)]
    if not args.no_fakes:
        wanted += [("fake Omnitron", args.omnitron_port), ("fake ERP", args.erp_port)]
    if busy := [f"{name} port {port}" for name, port in wanted if port_in_use(port)]:
        print(
            f"airflow-local: already in use on 127.0.0.1: {', '.join(busy)} (another airflow-local?)", file=sys.stderr
        )
        return 2
    if leftovers := marked_processes(str(args.home)):
        print(
            f"airflow-local: processes of an earlier run with this home are still alive: {leftovers}", file=sys.stderr
        )
        return 2

    stack = Stack(home=args.home, env=stack_env(args))

    def start() -> str:
        started = time.monotonic()
        if not args.no_fakes:
            omnitron_url, erp_url = fake_urls(args)
            stack.spawn("fakes", fakes_command(args.omnitron_port, args.erp_port, args.plans))
        print(f"airflow-local: airflow db migrate ({args.home / 'airflow.db'}) ...", flush=True)
        stack.run_to_end("db-migrate", "db", "migrate")
        if stack.stop_requested.is_set():
            raise StartupError("stopped while starting")
        print("airflow-local: starting api-server, scheduler, dag-processor ...", flush=True)
        stack.airflow("api-server", "api-server", "--host", "127.0.0.1", "--port", str(args.port))
        stack.airflow("scheduler", "scheduler", "--skip-serve-logs")
        stack.airflow("dag-processor", "dag-processor")
        if not args.no_fakes:
            stack.wait_until(
                "the fakes", lambda: all(get_json(f"{url}/_fake/health") for url in (omnitron_url, erp_url)), 30
            )
        stack.wait_until("Airflow health", lambda: airflow_healthy(args.port), args.timeout)
        return banner(args, time.monotonic() - started)

    return run_in_foreground(stack, start, "airflow-local")


if __name__ == "__main__":
    raise SystemExit(main())
