"""What every local Airflow stack of this project shares: `bin/airflow-local` (LocalExecutor,
SQLite) and `bin/airflow-celery` (CeleryExecutor, PostgreSQL, Redis).

* the Airflow home's secrets and the admin password, made once;
* the environment common to every component (loopback only, simple auth manager, the flows folder,
  the connections to the fakes);
* `Stack`: processes in sessions of their own with their output in <home>/components/<name>.log,
  a health wait that fails early when a process dies, and a clean stop (process groups newest
  first, then whatever still carries the stack's marker);
* `run_in_foreground`: the Ctrl-C/SIGTERM loop of a command-line launcher.

Task processes run in process groups of their own (the task SDK's supervisor calls setpgid), so
stopping the process groups a stack started is not enough. Two nets catch what is left:

* the session: every component starts a session of its own (start_new_session), and setpgid does
  not leave it, so every process a component ever forked -- Celery pool processes, task supervisors,
  task processes, even when their parent was killed -- still carries that session id;
* the marker: every process gets the environment variable ORDER_CANCEL_LOCAL_AIRFLOW=<home>. It
  survives a new session, but not a process title: processes that call setproctitle (api-server,
  Celery workers, task supervisors and task processes) overwrite the memory /proc/<pid>/environ
  shows, so the marker alone misses them.
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
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

from devtools.airflow_env import ROOT, airflow_env, connection_json
from fakes import DEMO_ERP_PORT, DEMO_OMNITRON_PORT

MARKER = "ORDER_CANCEL_LOCAL_AIRFLOW"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"
OMNITRON_LOGIN, ERP_LOGIN = ("omnitron", "omnitron-pass"), ("erp", "erp-pass")
HEALTHY_COMPONENTS = ("metadatabase", "scheduler", "dag_processor")
STOP_GRACE_SECONDS = 20.0
CONNECTION_VARIABLES = ("AIRFLOW_CONN_OMNITRON_DEMO", "AIRFLOW_CONN_ERP_DEMO")

# Plain urllib without proxies: everything a stack talks to is on 127.0.0.1.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


def base_env(
    home: Path,
    *,
    port: int,
    flows_dir: Path,
    omnitron_url: str,
    erp_url: str,
    manual_only: bool = False,
    keep_env_connections: bool = False,
    inherit_airflow_env: bool = True,
) -> dict[str, str]:
    """The environment of every component of a stack, whatever its executor and database.

    ``keep_env_connections``: AIRFLOW_CONN_OMNITRON_DEMO / _ERP_DEMO already in the environment win
    (a launcher run with --no-fakes). ``inherit_airflow_env=False`` drops every AIRFLOW* and
    ORDER_CANCEL* variable of the calling process first (a test process has its own Airflow set up).
    """
    secrets = home_secrets(home)
    env = dict(os.environ)
    if not inherit_airflow_env:
        env = {key: value for key, value in env.items() if not key.startswith(("AIRFLOW", "ORDER_CANCEL"))}
    env.update(airflow_env(home))
    env.update(
        {
            MARKER: str(home),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "NO_PROXY": ",".join(filter(None, ["127.0.0.1,localhost", env.get("NO_PROXY")])),
            "no_proxy": ",".join(filter(None, ["127.0.0.1,localhost", env.get("no_proxy")])),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(home)),
            "AIRFLOW__CORE__FERNET_KEY": secrets["fernet_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": secrets["api_secret_key"],
            "ORDER_CANCEL_FLOWS_DIR": str(Path(flows_dir).resolve()),
            # The summary task sets each run's note through the REST API with this connection.
            "AIRFLOW_CONN_AIRFLOW_API": connection_json(f"http://127.0.0.1:{port}", ADMIN_USER, "admin"),
        }
    )
    if manual_only:
        env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
    connections = {
        "AIRFLOW_CONN_OMNITRON_DEMO": connection_json(omnitron_url, *OMNITRON_LOGIN),
        "AIRFLOW_CONN_ERP_DEMO": connection_json(erp_url, *ERP_LOGIN),
    }
    for name, value in connections.items():
        if not (keep_env_connections and env.get(name)):
            env[name] = value
    return env


# --- ports and HTTP ------------------------------------------------------------------------------


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like the servers themselves: connections of a stopped server in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def banner_lines(
    *, fakes: bool, omnitron_url: str, erp_url: str, flows_dir: Path, manual_only: bool, log_dir: Path, home: Path
) -> list[str]:
    """The part of a launcher's "ready" banner that every stack shares: fakes, flows, logs, stop."""
    if fakes:
        lines = [
            f"  Fake Omnitron: {omnitron_url}   login {OMNITRON_LOGIN[0]} / {OMNITRON_LOGIN[1]}"
            "  (connection omnitron_demo)",
            f"  Fake ERP:      {erp_url}   token login {ERP_LOGIN[0]} / {ERP_LOGIN[1]}  (connection erp_demo)",
            f"                 recorded calls: GET {omnitron_url}/_fake/requests, GET {erp_url}/_fake/requests",
        ]
    else:
        lines = ["  Fakes:         not started (--no-fakes)"]
    return [
        *lines,
        f"  Flows:         {flows_dir}  (new DAGs start paused; "
        + ("only triggered runs run: --manual-only)" if manual_only else "unpausing runs the latest interval)"),
        f"  Logs:          {log_dir}/*.log, task logs under {home / 'logs'}",
        f"Stop with Ctrl-C (or: kill -TERM {os.getpid()}).",
    ]


def add_stack_arguments(parser: argparse.ArgumentParser, default_home: Path) -> None:
    """The options every stack launcher takes: ports, fakes, scheduling, home, flows, start timeout."""
    parser.add_argument("--port", type=int, default=8080, help="api-server (UI and REST API) port, default 8080")
    parser.add_argument(
        "--no-fakes",
        action="store_true",
        help="do not start the fakes (AIRFLOW_CONN_OMNITRON_DEMO / _ERP_DEMO from the "
        "environment win; otherwise the connections still point at the fake ports)",
    )
    parser.add_argument(
        "--omnitron-port",
        type=int,
        default=DEMO_OMNITRON_PORT,
        help=f"fake Omnitron port, default {DEMO_OMNITRON_PORT}",
    )
    parser.add_argument(
        "--erp-port",
        type=int,
        default=DEMO_ERP_PORT,
        help=f"fake ERP port, default {DEMO_ERP_PORT} (the example flow's crm_url names it)",
    )
    parser.add_argument("--plans", type=int, default=24, help="demo cancellation plans in the fake Omnitron")
    parser.add_argument(
        "--manual-only",
        action="store_true",
        help="no scheduled runs ([scheduler] use_job_schedule=False): only runs you trigger",
    )
    parser.add_argument(
        "--home", type=Path, default=default_home, help=f"Airflow home, default {default_home.relative_to(ROOT)}"
    )
    parser.add_argument(
        "--flows-dir",
        type=Path,
        default=ROOT / "include" / "flows",
        help="ORDER_CANCEL_FLOWS_DIR, default include/flows",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for a healthy Airflow")


def port_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all different)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def get_json(url: str, timeout: float = 2.0) -> dict | None:
    try:
        with _http.open(url, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def airflow_healthy(port: int) -> bool:
    health = get_json(f"http://127.0.0.1:{port}/api/v2/monitor/health")
    return health is not None and all(
        (health.get(part) or {}).get("status") == "healthy" for part in HEALTHY_COMPONENTS
    )


def fakes_command(omnitron_port: int, erp_port: int, plans: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fakes",
        "--omnitron-port",
        str(omnitron_port),
        "--erp-port",
        str(erp_port),
        "--erp-auth",
        "token",
        "--plans",
        str(plans),
    ]


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    stop_requested: threading.Event = field(default_factory=threading.Event)
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    banner_name: str = "airflow-local"
    # Session ids of every process ever spawned (kept after a stop, to check that nothing is left).
    sessions: set[int] = field(default_factory=set)

    @property
    def log_dir(self) -> Path:
        return self.home / "components"

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        """A process in a session (process group) of its own, output to components/<name>.log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            log.write(f"===== {self.banner_name} {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append((name, process))
        self.sessions.add(process.pid)
        return process

    def airflow(self, name: str, *arguments: str) -> subprocess.Popen:
        return self.spawn(name, [sys.executable, "-m", "airflow", *arguments])

    def process(self, name: str) -> subprocess.Popen:
        return dict(self.processes)[name]

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def dead(self) -> list[tuple[str, int]]:
        return [(name, process.returncode) for name, process in self.processes if process.poll() is not None]

    def forget(self, name: str, timeout: float = 10.0) -> int | None:
        """A process that was stopped on purpose (a killed worker): reap it and stop watching it."""
        process = self.process(name)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.processes.remove((name, process))
        return code

    def run_to_end(self, name: str, *arguments: str) -> None:
        """A one-off airflow command (db migrate); Ctrl-C still stops it."""
        process = self.airflow(name, *arguments)
        while process.poll() is None:
            if self.stop_requested.wait(0.2):
                return
        self.processes.remove((name, process))
        if process.returncode != 0:
            raise StartupError(
                f"`airflow {' '.join(arguments)}` failed (exit {process.returncode}):\n{self.log_tail(name)}"
            )

    def wait_until(self, what: str, ready: Callable[[], bool], timeout: float) -> float:
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
        """One process group after the other, newest first (for airflow-local: the dag-processor,
        the scheduler -- it lets running tasks finish, and they still need the api-server's
        execution API and the fakes -- then the api-server and the fakes; Celery workers, started
        last, stop first). SIGTERM, SIGKILL after a grace period; then the processes that escaped
        into groups of their own (task runners), found by the marker."""
        for name, process in reversed(self.processes):
            signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in {STOP_GRACE_SECONDS:.0f} s: killing it", flush=True)
            signal_group(process, signal.SIGKILL)  # whatever is left in its group
            if process.poll() is None:
                process.wait(timeout=5)
        leftovers = self.leftovers()
        for pid in leftovers:
            send_signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.2)
            leftovers = self.leftovers()
        for pid in leftovers:
            send_signal(pid, signal.SIGKILL)
        self.processes.clear()

    def leftovers(self) -> list[int]:
        """Live processes of this stack: in a session it started, or carrying its marker."""
        return sorted(set(session_members(self.sessions)) | set(marked_processes(str(self.home))))


class StartupError(Exception):
    pass


def signal_group(process: subprocess.Popen, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)  # start_new_session: the group id is the child's pid


def send_signal(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


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
        except OSError:
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def session_members(sessions: set[int]) -> list[int]:
    """Live processes (not zombies) of these sessions (Linux /proc; elsewhere none)."""
    found: list[int] = []
    if not sessions or not Path("/proc/self/stat").exists():
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] != "Z" and int(fields[3]) in sessions:
            found.append(int(entry.name))
    return found


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant of it (Linux /proc), root first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


# --- a launcher in the foreground ----------------------------------------------------------------


def run_in_foreground(stack: Stack, start: Callable[[], str], name: str) -> int:
    """Start the stack with `start()` (which returns the banner), print the banner, then wait for
    Ctrl-C, SIGTERM or SIGHUP, or for a process that dies; stop everything in any case."""

    def request_stop(signum, _frame):
        if not stack.stop_requested.is_set():
            print(f"\n{name}: {signal.Signals(signum).name} received, stopping ...", flush=True)
        stack.stop_requested.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)

    code = 0
    try:
        print(start(), flush=True)
        while not stack.stop_requested.wait(1.0):
            if died := stack.dead():
                died_name, exit_code = died[0]
                print(
                    f"{name}: {died_name} exited with code {exit_code}; stopping everything.\n"
                    f"{stack.log_tail(died_name)}",
                    file=sys.stderr,
                    flush=True,
                )
                code = 1
                break
    except StartupError as exc:
        if not stack.stop_requested.is_set():
            print(f"{name}: {exc}", file=sys.stderr, flush=True)
            code = 1
    finally:
        stopping = time.monotonic()
        stack.stop()
        left = stack.leftovers()
        print(
            f"{name}: stopped in {time.monotonic() - stopping:.1f} s"
            + (f"; still alive: {left}" if left else "; no process left."),
            flush=True,
        )
    return code
