"""The request and reply objects the fakes pass around: what was asked, and what to answer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class Headers(dict):
    """Request headers with case-insensitive lookups (keys are stored lower-cased)."""

    def __init__(self, items=()):
        super().__init__((str(k).lower(), v) for k, v in dict(items).items())

    def __getitem__(self, key):
        return super().__getitem__(str(key).lower())

    def __contains__(self, key):
        return super().__contains__(str(key).lower())

    def get(self, key, default=None):
        return super().get(str(key).lower(), default)


@dataclass
class RecordedRequest:
    """One request as the fake saw it; tests assert on these."""

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: Any
    raw_body: bytes
    query_string: str = ""

    @property
    def json_error(self) -> bool:
        """True when a body was sent but is not valid JSON (a DRF server would answer 400)."""
        return bool(self.raw_body.strip()) and self.body is None

    def to_dict(self) -> dict:
        """A JSON-safe form, for the control API."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "query_string": self.query_string,
            "headers": dict(self.headers),
            "body": self.body,
            "raw_body": self.raw_body.decode("utf-8", errors="replace"),
        }


@dataclass
class Reply:
    """What the server sends back. ``raw_body`` wins over ``body`` so tests can send broken JSON."""

    status: int = 200
    body: Any = None
    raw_body: bytes | str | None = None
    headers: dict[str, str] | None = None
    delay: float = 0.0
    drop_connection: bool = False
    # The request takes effect before this reply is sent (the fake ERP books it, the fake Omnitron
    # applies the write): an answer lost, or held, after the work was done.
    apply: bool = False

    def payload(self) -> bytes:
        if self.raw_body is not None:
            return self.raw_body.encode() if isinstance(self.raw_body, str) else self.raw_body
        if self.body is None:
            return b""
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")
