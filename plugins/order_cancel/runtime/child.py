"""The child process of `containment`: `python -m order_cancel.runtime.child REQUESTS_FD ANSWERS_FD PARENT_PID`.

Runs the calls its parent sends, one at a time, in its main thread (so a script's time limit can
interrupt blocking calls), until the parent closes the requests pipe or goes away.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
from functools import reduce
from typing import Any

from order_cancel.runtime.messages import Pipe, picklable

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """A parent lost without closing the pipe (SIGKILL) takes its child along."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed pipe ends the loop instead
        return
    if os.getppid() != parent:  # the parent went before prctl
        os._exit(1)


def _function(module: str, qualname: str) -> Any:
    return reduce(getattr, qualname.split("."), importlib.import_module(module))


def serve(requests: Pipe, answers: Pipe) -> None:
    while True:
        try:
            module, qualname, args, kwargs = requests.recv()
        except EOFError:
            return
        try:
            answer: tuple[str, Any] = ("ok", _function(module, qualname)(*args, **kwargs))
        except BaseException as error:  # everything goes back to the parent, SystemExit included
            answer = ("error", picklable(error))
        answers.send(answer)


def main(argv: list[str]) -> None:
    _die_with_parent(int(argv[2]))
    requests, answers = Pipe(int(argv[0])), Pipe(int(argv[1]))
    serve(requests, answers)


if __name__ == "__main__":
    main(sys.argv[1:])
