"""Time limits of script runs (the Integrator's 300 s by default), inside the script's own process.

A script runs in the main thread of its child process (`containment`), where ``SIGALRM`` from
``setitimer`` interrupts it, blocking calls such as ``time.sleep`` included, and the error names
the line it stopped at. The alarm repeats while the script swallows it (a bare ``except:`` around
a request, say); a script that still goes on is killed by its parent at the limit's end.
"""

from __future__ import annotations

import signal
import threading
import types

# After the deadline the alarm repeats this often while the script still runs.
_ALARM_REPEAT = 0.1


class ScriptDeadline(BaseException):
    """Raised inside the script at its deadline; not an Exception, so `except Exception` lets it pass."""


def _runs_in(frame: types.FrameType | None, filename: str) -> bool:
    """Whether a frame of the script is on the interrupted stack."""
    while frame is not None:
        if frame.f_code.co_filename == filename:
            return True
        frame = frame.f_back
    return False


class TimeLimit:
    def __init__(self, timeout: float, filename: str):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("a script runs in the main thread of its process (see containment)")
        self._timeout = timeout
        self._filename = filename
        self.expired = False

    def start(self) -> None:
        self._previous_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self._timeout)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        # signal.signal answers None for a handler installed outside Python; SIG_DFL is the closest.
        signal.signal(signal.SIGALRM, signal.SIG_DFL if self._previous_handler is None else self._previous_handler)

    def _on_alarm(self, signum: int, frame: types.FrameType | None) -> None:
        self.expired = True
        # Raise only inside the script: once it has returned, our caller must not be interrupted.
        if _runs_in(frame, self._filename):
            signal.setitimer(signal.ITIMER_REAL, _ALARM_REPEAT)
            raise ScriptDeadline
