"""User code (flow scripts) runs in a child process of its own, never in the caller's process.

A child is a plain Python process (`order_cancel.runtime.child`) started with an environment that
holds none of the caller's settings or secrets (`child_environment`); it runs functions for its
parent, one call at a time, and answers their result or their exception. A call that outlives its
limit is not asked to stop: its whole process group is killed, and the next call starts a fresh
child. So a script is stopped whatever it does (an `except:` that swallows every interruption, a
blocking C call, a thread of its own), and it never sees the memory of an Airflow task or of the
api-server.

Tasks, `test-script` and `try-flow` keep one child per thread (`thread_child`: a batch's threads
run scripts side by side); the panels start one per try (`run_once`), so nothing of one user's try
outlives it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from order_cancel.runtime.messages import Pipe

# Beyond a call's own limit: the child's own alarm stops a script that lets itself be stopped (and
# says on which line); the kill is for the others.
GRACE_SECONDS = 1.0
# What a child keeps of its parent's environment: locale, time zone and proxies (a post script's
# HTTP call may need them). Nothing of Airflow's (AIRFLOW__*, connections, keys), nothing else.
_KEPT_VARIABLES = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"})
_KEPT_PREFIXES = ("LC_",)
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# Set in a child: code running there is contained already, so its scripts run in-process.
IN_CHILD_VARIABLE = "ORDER_CANCEL_CONTAINED"


class ContainedError(Exception):
    """A contained call did not answer."""


class CallTimedOut(ContainedError):
    """The call outlived its limit; its process was killed."""


class ChildDied(ContainedError):
    """The child ended during the call (its process killed from outside, or out of memory)."""


def in_child() -> bool:
    return os.environ.get(IN_CHILD_VARIABLE) == "1"


def child_environment() -> dict[str, str]:
    kept = {
        name: value
        for name, value in os.environ.items()
        if name.upper() in _KEPT_VARIABLES or name.startswith(_KEPT_PREFIXES)
    }
    return {**kept, "PYTHONPATH": str(_PACKAGE_ROOT), IN_CHILD_VARIABLE: "1", "PYTHONDONTWRITEBYTECODE": "1"}


class Child:
    """One child process, started on first use and again after it was killed; one call at a time."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Pipe | None = None
        self._answers: Pipe | None = None
        self._answered = select.poll()
        self._owner = os.getpid()

    def call(self, function: Callable[..., Any], *args: Any, timeout: float, **kwargs: Any) -> Any:
        """`function(*args, **kwargs)` in the child (a module-level function; its arguments and
        result are pickled). Raises what it raised, or CallTimedOut after `timeout` seconds."""
        self._start()
        assert self._requests is not None and self._answers is not None
        try:
            self._requests.send((function.__module__, function.__qualname__, args, kwargs))
            if not self._answered.poll(timeout * 1000):
                self.close()
                raise CallTimedOut(f"no answer after {timeout:g} s: its process was killed")
            outcome, value = self._answers.recv()
        except (EOFError, OSError) as exc:
            code = self._process.poll() if self._process else None
            self.close()
            raise ChildDied(f"its process ended during the call (exit {code})") from exc
        except BaseException:
            # Interrupted while the child works (Airflow's execution_timeout, a KeyboardInterrupt):
            # its state is unknown, so it goes.
            self.close()
            raise
        if outcome == "error":
            raise value
        return value

    def close(self) -> None:
        """Kills the child and every process it started."""
        process, self._process = self._process, None
        for pipe in (self._requests, self._answers):
            if pipe is not None:
                pipe.close()
        self._requests = self._answers = None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def _start(self) -> None:
        if self._owner != os.getpid():  # inherited through a fork: that child is not ours
            self._process = self._requests = self._answers = None
            self._owner = os.getpid()
        if self._process is not None and self._process.poll() is None:
            return
        self.close()
        their_requests, our_requests = os.pipe()
        our_answers, their_answers = os.pipe()
        command = [sys.executable, "-m", "order_cancel.runtime.child"]
        command += [str(their_requests), str(their_answers), str(os.getpid())]
        self._process = subprocess.Popen(
            command,
            env=child_environment(),
            pass_fds=(their_requests, their_answers),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # one process group: a kill reaches what the script started
            close_fds=True,
        )
        os.close(their_requests)
        os.close(their_answers)
        self._requests = Pipe(our_requests)
        self._answers = Pipe(our_answers)
        self._answered = select.poll()
        self._answered.register(our_answers, select.POLLIN)


_threads = threading.local()


def thread_child() -> Child:
    """The calling thread's child (it lives as long as the thread's process, or until killed)."""
    child = getattr(_threads, "child", None)
    if child is None:
        child = _threads.child = Child()
    return child


def run_once(function: Callable[..., Any], *args: Any, timeout: float, **kwargs: Any) -> Any:
    """`function` in a child of its own, which ends with the call."""
    child = Child()
    try:
        return child.call(function, *args, timeout=timeout, **kwargs)
    finally:
        child.close()
