"""What crosses between a contained child and its parent (`containment`): whole pickled messages
over a pipe, each prefixed with its length.

A child imports this module and little else: every module it imports is paid again at each start
(a task's first script run, each batch thread's).
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

_LENGTH = struct.Struct("!Q")
_READ_AT_MOST = 1 << 20


class Pipe:
    """One end of a pipe (a file descriptor this object owns): `send` or `recv` whole messages."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        pending = memoryview(_LENGTH.pack(len(data)) + data)
        while pending:
            pending = pending[os.write(self.fd, pending) :]

    def recv(self) -> Any:
        """The next message; EOFError once the other end is closed."""
        (length,) = _LENGTH.unpack(self._read(_LENGTH.size))
        return pickle.loads(self._read(length))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _read(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = os.read(self.fd, min(left, _READ_AT_MOST))
            if not chunk:
                raise EOFError("the other end of the pipe is closed")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


def picklable(error: BaseException) -> BaseException:
    """The error itself when it crosses a process boundary intact, else its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error
