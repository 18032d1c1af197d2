"""Login tokens, kept in the worker process that logged in: never in XCom, a log line or a database.

A hook gives every client it builds for one DAG run the same store (`tokens_for(run_id)`), so the
tasks of a run that share a process, and the threads of a batch, log in once, as the Integrator
does, instead of once per plan. Another run, in production a new task process, logs in afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

# Runs whose stores a process keeps: a Celery worker process runs the tasks of many runs in turn.
_KEPT_RUNS = 16


class TokenStore:
    """Tokens by (base URL, user); safe to share between the threads of a task."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> str | None:
        with self._lock:
            return self._tokens.get(key)

    def put(self, key: tuple[str, ...], token: str) -> None:
        with self._lock:
            self._tokens[key] = token


_stores: OrderedDict[str, TokenStore] = OrderedDict()
_stores_lock = threading.Lock()


def tokens_for(scope: str) -> TokenStore:
    """The store of one scope (a DAG run's id), made on first use; the oldest scopes are dropped."""
    with _stores_lock:
        store = _stores.pop(scope, None) or TokenStore()
        _stores[scope] = store
        while len(_stores) > _KEPT_RUNS:
            _stores.popitem(last=False)
        return store
