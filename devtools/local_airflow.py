"""A local Airflow with one command (`bin/airflow-local`): the fake Omnitron and ERP, and Airflow's
api-server, scheduler and dag-processor, all on 127.0.0.1, with a LocalExecutor and SQLite in
.airflow/local. Ctrl-C (or SIGTERM) stops every process it started.

    bin/airflow-local [--port 8080] [--no-fakes] [--manual-only] [--omnitron-port 18081] [--erp-port 18082]

Why not `airflow standalone`: its log servers bind every interface (8793/8794). Here the scheduler
runs with --skip-serve-logs (the api-server reads task logs from the same disk) and everything else
is bound to 127.0.0.1.

Every process gets the environment variable ORDER_CANCEL_LOCAL_AIRFLOW=<home>. Task processes run in
process groups of their own (the task SDK's supervisor calls setpgid), so after stopping the process
groups it started, the launcher also stops any process left that carries this marker.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devtools.airflow_env import ROOT, airflow_env, connection_json

DEFAULT_HOME = ROOT / ".airflow" / "local"
MARKER = "ORDER_CANCEL_LOCAL_AIRFLOW"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"
OMNITRON_LOGIN, ERP_LOGIN = ("omnitron", "omnitron-pass"), ("erp", "erp-pass")
HEALTHY_COMPONENTS = ("metadatabase", "scheduler", "dag_processor")
STOP_GRACE_SECONDS = 20.0

# Plain urllib without proxies: everything this script talks to is on 127.0.0.1.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bin/airflow-local", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="api-server (UI and REST API) port, default 8080")
    parser.add_argument("--no-fakes", action="store_true",
                        help="do not start the fakes (AIRFLOW_CONN_OMNITRON_DEMO / _ERP_DEMO from the "
                             "environment win; otherwise the connections still point at the fake ports)")
    parser.add_argument("--omnitron-port", type=int, default=18081, help="fake Omnitron port, default 18081")
    parser.add_argument("--erp-port", type=int, default=18082,
                        help="fake ERP port, default 18082 (the example flow's crm_url names 18082)")
    parser.add_argument("--plans", type=int, default=24, help="demo cancellation plans in the fake Omnitron")
    parser.add_argument("--manual-only", action="store_true",
                        help="no scheduled runs ([scheduler] use_job_schedule=False): only runs you trigger")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="Airflow home, default .airflow/local")
    parser.add_argument("--flows-dir", type=Path, default=ROOT / "include" / "flows",
                        help="ORDER_CANCEL_FLOWS_DIR, default include/flows")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for a healthy Airflow")
    return parser.parse_args(argv)


# --- the Airflow home: secrets and the admin password, made once ---------------------------------

def home_secrets(home: Path) -> dict[str, str]:
    """Fernet key, JWT secret and session key, generated on the first start and kept in the home,
    so that encrypted connections, issued tokens and UI sessions survive a restart."""
    path = home / "local-secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    secrets = {
        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "jwt_secret": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "api_secret_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    path.write_text(json.dumps(secrets, indent=2))
    path.chmod(0o600)
    return secrets


def passwords_file(home: Path) -> Path:
    """The simple auth manager keeps a password it finds in this file instead of generating one."""
    path = home / "simple_auth_manager_passwords.json"
    passwords = json.loads(path.read_text()) if path.exists() else {}
    if passwords.get(ADMIN_USER) != ADMIN_PASSWORD:
        passwords[ADMIN_USER] = ADMIN_PASSWORD
        path.write_text(json.dumps(passwords))
        path.chmod(0o600)
    return path


def fake_urls(args: argparse.Namespace) -> tuple[str, str]:
    return f"http://127.0.0.1:{args.omnitron_port}", f"http://127.0.0.1:{args.erp_port}"


def stack_env(args: argparse.Namespace) -> dict[str, str]:
    home = args.home
    secrets = home_secrets(home)
    omnitron_url, erp_url = fake_urls(args)
    env = dict(os.environ)
    env.update(airflow_env(home))
    env.update({
        MARKER: str(home),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        "NO_PROXY": ",".join(filter(None, ["127.0.0.1,localhost", env.get("NO_PROXY")])),
        "no_proxy": ",".join(filter(None, ["127.0.0.1,localhost", env.get("no_proxy")])),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(args.port),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{args.port}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(home)),
        "AIRFLOW__CORE__FERNET_KEY": secrets["fernet_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": secrets["api_secret_key"],
        "ORDER_CANCEL_FLOWS_DIR": str(args.flows_dir.resolve()),
    })
    if args.manual_only:
        env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
    connections = {
        "AIRFLOW_CONN_OMNITRON_DEMO": connection_json(omnitron_url, *OMNITRON_LOGIN),
        "AIRFLOW_CONN_ERP_DEMO": connection_json(erp_url, *ERP_LOGIN),
    }
    for name, value in connections.items():
        if not (args.no_fakes and os.environ.get(name)):
            env[name] = value
    return env


# --- processes ---------------------------------------------------------------------------------

def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like the servers themselves: connections of a stopped server in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def get_json(url: str, timeout: float = 2.0) -> dict | None:
    try:
        with _http.open(url, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    stop_requested: threading.Event = field(default_factory=threading.Event)
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.home / "components"

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        """A process in a session (process group) of its own, output to components/<name>.log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            log.write(f"===== airflow-local {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.processes.append((name, process))
        return process

    def airflow(self, name: str, *arguments: str) -> subprocess.Popen:
        return self.spawn(name, [sys.executable, "-m", "airflow", *arguments])

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def dead(self) -> list[tuple[str, int]]:
        return [(name, process.returncode) for name, process in self.processes if process.poll() is not None]

    def run_to_end(self, name: str, *arguments: str) -> None:
        """A one-off airflow command (db migrate); Ctrl-C still stops it."""
        process = self.airflow(name, *arguments)
        while process.poll() is None:
            if self.stop_requested.wait(0.2):
                return
        self.processes.remove((name, process))
        if process.returncode != 0:
            raise StartupError(f"`airflow {' '.join(arguments)}` failed (exit {process.returncode}):\n{self.log_tail(name)}")

    def wait_until(self, what: str, ready, timeout: float) -> float:
        """Polls `ready()` until true; fails early when a process died or a stop was asked for."""
        started = time.monotonic()
        while not ready():
            if self.stop_requested.is_set():
                raise StartupError("stopped while starting")
            if died := self.dead():
                name, code = died[0]
                raise StartupError(f"{name} exited with code {code} while waiting for {what}:\n{self.log_tail(name)}")
            if time.monotonic() - started > timeout:
                raise StartupError(f"{what} not ready after {timeout:.0f} s; see {self.log_dir}")
            self.stop_requested.wait(0.5)
        return time.monotonic() - started

    def stop(self) -> None:
        """One process group after the other, newest first: the dag-processor, the scheduler (it
        lets running tasks finish, and they still need the api-server's execution API and the
        fakes), then the api-server and the fakes. SIGTERM, SIGKILL after a grace period; then the
        processes that escaped into groups of their own (task runners), found by the marker."""
        for name, process in reversed(self.processes):
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in {STOP_GRACE_SECONDS:.0f} s: killing it", flush=True)
            _signal_group(process, signal.SIGKILL)  # whatever is left in its group
            if process.poll() is None:
                process.wait(timeout=5)
        leftovers = marked_processes(str(self.home))
        for pid in leftovers:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.2)
            leftovers = marked_processes(str(self.home))
        for pid in leftovers:
            _kill(pid, signal.SIGKILL)
        self.processes.clear()


class StartupError(Exception):
    pass


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # start_new_session: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def marked_processes(home: str) -> list[int]:
    """Live processes (not zombies) whose environment carries MARKER=<home>. Reads /proc, so on a
    system without it (macOS) it finds nothing and the process groups are all that gets stopped."""
    needle = f"{MARKER}={home}".encode()
    found: list[int] = []
    if not Path("/proc/self/environ").exists():
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


# --- main ---------------------------------------------------------------------------------------

def airflow_healthy(port: int) -> bool:
    health = get_json(f"http://127.0.0.1:{port}/api/v2/monitor/health")
    return bool(health) and all((health.get(part) or {}).get("status") == "healthy" for part in HEALTHY_COMPONENTS)


def banner(args: argparse.Namespace, seconds: float) -> str:
    omnitron_url, erp_url = fake_urls(args)
    base = f"http://127.0.0.1:{args.port}"
    lines = [
        f"Local Airflow is ready ({seconds:.1f} s).",
        f"  UI:            {base}/   login {ADMIN_USER} / {ADMIN_PASSWORD}",
        f"  REST API:      {base}/api/v2   token: POST {base}/auth/token "
        f'{{"username": "{ADMIN_USER}", "password": "{ADMIN_PASSWORD}"}}',
    ]
    if args.no_fakes:
        lines.append("  Fakes:         not started (--no-fakes)")
    else:
        lines += [
            f"  Fake Omnitron: {omnitron_url}   login {OMNITRON_LOGIN[0]} / {OMNITRON_LOGIN[1]}  (connection omnitron_demo)",
            f"  Fake ERP:      {erp_url}   token login {ERP_LOGIN[0]} / {ERP_LOGIN[1]}  (connection erp_demo)",
            f"                 recorded calls: GET {omnitron_url}/_fake/requests, GET {erp_url}/_fake/requests",
        ]
    lines += [
        f"  Flows:         {args.flows_dir}  (new DAGs start paused; "
        + ("only triggered runs run: --manual-only)" if args.manual_only else "unpausing runs the latest interval)"),
        f"  Logs:          {args.home / 'components'}/*.log, task logs under {args.home / 'logs'}",
        f"Stop with Ctrl-C (or: kill -TERM {os.getpid()}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.home = args.home.resolve()
    args.home.mkdir(parents=True, exist_ok=True)
    wanted = [("api-server", args.port)]
    if not args.no_fakes:
        wanted += [("fake Omnitron", args.omnitron_port), ("fake ERP", args.erp_port)]
    if busy := [f"{name} port {port}" for name, port in wanted if port_in_use(port)]:
        print(f"airflow-local: already in use on 127.0.0.1: {', '.join(busy)} (another airflow-local?)", file=sys.stderr)
        return 2
    if leftovers := marked_processes(str(args.home)):
        print(f"airflow-local: processes of an earlier run with this home are still alive: {leftovers}", file=sys.stderr)
        return 2

    stack = Stack(home=args.home, env=stack_env(args))

    def request_stop(signum, _frame):
        if not stack.stop_requested.is_set():
            print(f"\nairflow-local: {signal.Signals(signum).name} received, stopping ...", flush=True)
        stack.stop_requested.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)

    started = time.monotonic()
    code = 0
    try:
        if not args.no_fakes:
            omnitron_url, erp_url = fake_urls(args)
            stack.spawn("fakes", [sys.executable, "-m", "fakes", "--omnitron-port", str(args.omnitron_port),
                                  "--erp-port", str(args.erp_port), "--erp-auth", "token", "--plans", str(args.plans)])
        print(f"airflow-local: airflow db migrate ({args.home / 'airflow.db'}) ...", flush=True)
        stack.run_to_end("db-migrate", "db", "migrate")
        if stack.stop_requested.is_set():
            raise StartupError("stopped while starting")
        print("airflow-local: starting api-server, scheduler, dag-processor ...", flush=True)
        stack.airflow("api-server", "api-server", "--host", "127.0.0.1", "--port", str(args.port))
        stack.airflow("scheduler", "scheduler", "--skip-serve-logs")
        stack.airflow("dag-processor", "dag-processor")
        if not args.no_fakes:
            stack.wait_until("the fakes", lambda: all(
                get_json(f"{url}/_fake/health") for url in (omnitron_url, erp_url)), 30)
        stack.wait_until("Airflow health", lambda: airflow_healthy(args.port), args.timeout)
        print(banner(args, time.monotonic() - started), flush=True)
        while not stack.stop_requested.wait(1.0):
            if died := stack.dead():
                name, exit_code = died[0]
                print(f"airflow-local: {name} exited with code {exit_code}; stopping everything.\n"
                      f"{stack.log_tail(name)}", file=sys.stderr, flush=True)
                code = 1
                break
    except StartupError as exc:
        if not stack.stop_requested.is_set():
            print(f"airflow-local: {exc}", file=sys.stderr, flush=True)
            code = 1
    finally:
        stopping = time.monotonic()
        stack.stop()
        left = marked_processes(str(args.home))
        print(f"airflow-local: stopped in {time.monotonic() - stopping:.1f} s"
              + (f"; still alive: {left}" if left else "; no process left."), flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
