"""Issued login tokens, shared by both fakes so token expiry behaves the same everywhere."""

from __future__ import annotations

import hashlib
import threading


class TokenStore:
    """Issues deterministic tokens and checks them.

    Tokens can be expired all at once (``expire_all``) or after ``max_uses`` authenticated calls,
    which is how tests provoke the "401 -> log in again -> repeat the call" path of a client.
    """

    def __init__(self, kind: str, max_uses: int | None = None):
        self._kind = kind
        self.max_uses = max_uses
        self._remaining: dict[str, int | None] = {}
        self._issued = 0
        self._lock = threading.Lock()

    def issue(self, username: str) -> str:
        with self._lock:
            self._issued += 1
            digest = hashlib.sha1(f"{self._kind}:{username}:{self._issued}".encode()).hexdigest()
            token = f"{self._kind}-{self._issued}-{digest[:24]}"
            self._remaining[token] = self.max_uses
            return token

    def use(self, token: str | None) -> bool:
        """True if the token is valid; counts one use against ``max_uses``."""
        with self._lock:
            if token not in self._remaining:
                return False
            left = self._remaining[token]
            if left is None:
                return True
            if left <= 0:
                del self._remaining[token]
                return False
            self._remaining[token] = left - 1
            return True

    def expire_all(self) -> None:
        with self._lock:
            self._remaining.clear()

    @property
    def issued(self) -> int:
        """How many logins succeeded; lets tests assert that a client re-logged in."""
        return self._issued
