"""Time limits of script runs (the Integrator's 300 s by default).

* In the main thread, ``SIGALRM`` from ``setitimer`` interrupts the script, blocking calls such as
  ``time.sleep`` included. Whoever owned ``SIGALRM`` before (Airflow's ``execution_timeout``) keeps
  its handler and its pending timer's due time: if that timer comes due while the script runs, its
  handler is called then and its exception (``AirflowTaskTimeout``) propagates unchanged.
* In any other thread signals cannot be used: a watchdog raises an exception in the script's
  thread with CPython's ``PyThreadState_SetAsyncExc``. Such an exception is only delivered between
  bytecodes, so the script's ``time`` module sleeps in short slices. Limitations of this fallback:
  another blocking C call (a socket read without a timeout) is interrupted only when it returns, and
  the exception is raised once, so a script that swallows it with a bare ``except:`` runs on (it is
  still reported as timed out when it ends).
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import signal
import threading
import time
import types
from typing import ClassVar

# After the deadline the alarm repeats this often while the script still runs, in case the script
# swallowed the first interruption (a bare `except:` around a request, say) and carried on.
_ALARM_REPEAT = 0.1
# setitimer(0) disarms a timer, so "fire now" is this small delay.
_MIN_ALARM_DELAY = 1e-6
# In a worker thread, how often a sleeping script gives the watchdog's exception a chance.
_SLEEP_SLICE = 0.05


class ScriptDeadline(BaseException):
    """Raised inside the script at its deadline; not an Exception, so `except Exception` lets it pass."""


def _runs_in(frame: types.FrameType | None, filename: str) -> bool:
    """Whether a frame of the script is on the interrupted stack."""
    while frame is not None:
        if frame.f_code.co_filename == filename:
            return True
        frame = frame.f_back
    return False


class _AlarmLimit:
    """Main-thread limit: SIGALRM from ITIMER_REAL, which also interrupts blocking calls."""

    replaced_modules: ClassVar[dict[str, types.ModuleType]] = {}

    def __init__(self, timeout: float, filename: str):
        self._timeout = timeout
        self._filename = filename
        self.expired = False
        self.outer_error: BaseException | None = None

    def start(self) -> None:
        now = time.monotonic()
        self._deadline = now + self._timeout
        self._previous_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        delay, self._outer_interval = signal.setitimer(signal.ITIMER_REAL, 0)
        self._outer_due = now + delay if delay else None
        self._arm()

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        # signal.signal answers None for a handler installed outside Python; SIG_DFL is the closest.
        previous = signal.SIG_DFL if self._previous_handler is None else self._previous_handler
        signal.signal(signal.SIGALRM, previous)
        if self._outer_due is not None:
            delay = max(self._outer_due - time.monotonic(), _MIN_ALARM_DELAY)
            signal.setitimer(signal.ITIMER_REAL, delay, self._outer_interval)

    def _chained_due(self) -> float | None:
        """When the outer timer is due, if its handler is called from ours: only a Python handler
        can be; SIG_DFL or SIG_IGN get the signal after stop()."""
        return self._outer_due if callable(self._previous_handler) else None

    def _arm(self) -> None:
        outer_due = self._chained_due()
        due = self._deadline if outer_due is None else min(self._deadline, outer_due)
        signal.setitimer(signal.ITIMER_REAL, max(due - time.monotonic(), _MIN_ALARM_DELAY))

    def _on_alarm(self, signum: int, frame: types.FrameType | None) -> None:
        now = time.monotonic()
        outer_due = self._chained_due()
        if outer_due is not None and now >= outer_due:
            self._outer_due = now + self._outer_interval if self._outer_interval else None
            self._arm()
            outer = self._previous_handler
            try:
                if callable(outer):
                    outer(signum, frame)
            except BaseException as error:
                self.outer_error = error
                raise
        elif now >= self._deadline:
            self.expired = True
            # Raise only inside the script: once it has returned, our caller must not be interrupted.
            if _runs_in(frame, self._filename):
                signal.setitimer(signal.ITIMER_REAL, _ALARM_REPEAT)
                raise ScriptDeadline
        else:
            self._arm()  # woke up early


def _set_async_exception(thread_id: int, exception_type: type[BaseException] | None) -> None:
    """CPython's PyThreadState_SetAsyncExc; None withdraws an exception not yet delivered."""
    exception = ctypes.py_object(exception_type) if exception_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exception)


def _sliced_time_module() -> types.ModuleType:
    """The time module with a sleep that an asynchronous exception can interrupt."""
    module = types.ModuleType("time", time.__doc__)
    vars(module).update(vars(time))

    def sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, _SLEEP_SLICE))

    vars(module)["sleep"] = sleep
    return module


class _Watchdog:
    """One daemon thread that delivers the deadlines of every script running outside the main thread.

    A thread per script run would cost a thread start per plan, which with a batch's worker
    threads competing for the GIL took longer than the script itself. Stopped limits are dropped
    when they reach the front of the queue.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._queue: list[tuple[float, int, _WatchdogLimit]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, limit: _WatchdogLimit, timeout: float) -> None:
        with self._condition:
            heapq.heappush(self._queue, (time.monotonic() + timeout, next(self._order), limit))
            # is_alive(): a forked worker process inherits this object but not the thread.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._deliver, name="script-watchdog", daemon=True)
                self._thread.start()
            self._condition.notify()

    def _deliver(self) -> None:
        with self._condition:
            while True:
                while self._queue and not self._queue[0][2].running:
                    heapq.heappop(self._queue)
                if not self._queue:
                    self._condition.wait()
                    continue
                due, _, limit = self._queue[0]
                if due > time.monotonic():
                    self._condition.wait(due - time.monotonic())
                    continue
                heapq.heappop(self._queue)
                limit.fire()


class _WatchdogLimit:
    """Limit outside the main thread: the watchdog raises ScriptDeadline in the script's thread.

    It fires once, under a lock, and stop() withdraws an exception not yet delivered: after stop()
    nothing can hit the caller's code. (A repeated exception could land after the script returned.)
    """

    replaced_modules: ClassVar[dict[str, types.ModuleType]] = {"time": _sliced_time_module()}
    watchdog: ClassVar[_Watchdog] = _Watchdog()

    def __init__(self, timeout: float):
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._timeout = timeout
        self.running = False
        self.expired = False
        self.outer_error: BaseException | None = None

    def start(self) -> None:
        self.running = True
        self.watchdog.watch(self, self._timeout)

    def stop(self) -> None:
        with self._lock:
            self.running = False
            if self.expired:
                _set_async_exception(self._thread_id, None)

    def fire(self) -> None:
        with self._lock:
            if self.running:
                self.expired = True
                _set_async_exception(self._thread_id, ScriptDeadline)


def time_limit(timeout: float, filename: str) -> _AlarmLimit | _WatchdogLimit:
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _AlarmLimit(timeout, filename)
    return _WatchdogLimit(timeout)
