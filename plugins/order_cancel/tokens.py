"""Login tokens shared by the clients of one worker process.

Per-plan tasks that run in the same process reuse one login, as the Integrator does, instead of
logging in once per plan. Tokens never leave the process: no XCom, no log line.
"""

from __future__ import annotations

import threading


class TokenStore:
    def __init__(self) -> None:
        self._tokens: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> str | None:
        with self._lock:
            return self._tokens.get(key)

    def put(self, key: tuple[str, ...], token: str) -> None:
        with self._lock:
            self._tokens[key] = token

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()
