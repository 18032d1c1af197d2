"""A fake customer ERP: accepts anything, with the common auth setups and scripted answers.

A real ERP is whatever the customer runs, so the fake has no fixed API: every path and method is
recorded and answered ``201 {"id": "ERP-<n>", "status": "accepted"}`` unless a test scripted another
answer with ``respond``. Auth follows the flow's ERP login types: token (an Integrator-style login
call), basic, a static header, or none. It honours ``Idempotency-Key`` (a repeated key gets its first
booking back) unless told not to, as ERPs that ignore the header do; ``GET <path>/<id>`` (a query
check) answers the booking of the plan whose ``cancellationId`` (or ``pk``) is ``<id>``, else 404.
``latency_ms`` holds every answer (the login's and the CRM's too) that long, as a remote ERP does;
the benchmark measures how well each layout hides that wait.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from .messages import RecordedRequest, Reply
from .routing import Rule, RuleList
from .server import FakeServer
from .tokens import TokenStore

AUTH_MODES = ("none", "token", "basic", "header")


CRM_PREFIX = "/api/crm/"
# Write paths whose `<path>/<id>` answers a query check (GET) with the booking of plan <id>.
LOOKUP_PATHS = ("/api/cancellations", "/api/refunds")
IDEMPOTENCY_HEADER = "Idempotency-Key"


class FakeErp(FakeServer):
    """Fake ERP on 127.0.0.1; see the module docstring."""

    name = "fake-erp"

    def __init__(
        self,
        auth: str = "none",
        username: str = "erp",
        password: str = "erp-pass",
        static_token: str = "static-secret",
        port: int = 0,
        *,
        header_name: str = "Authorization",
        token_prefix: str | None = "Bearer",
        token_path: str = "access_token",
        login_path: str = "/api/auth/login",
        token_max_uses: int | None = None,
        log_requests: bool = False,
        honour_idempotency: bool = True,
        latency_ms: float = 0.0,
    ):
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
        super().__init__(port, log_requests=log_requests)
        self.auth, self.username, self.password = auth, username, password
        self.static_token, self.header_name = static_token, header_name
        self.token_prefix, self.token_path, self.login_path = token_prefix, token_path, login_path
        self.tokens = TokenStore("erp", token_max_uses)
        self._responses = RuleList()
        self._accepted = 0
        self.honour_idempotency = honour_idempotency
        self.set_latency(latency_ms)
        self.bookings: dict[str, dict] = {}
        # Every booking, in order, with what it booked (an ERP that ignores the key books a resend again).
        self.booked: list[dict] = []
        self.control_routes.add("POST", "/_fake/responses", lambda r: self._done(self.respond, r.body))
        self.control_routes.add("DELETE", "/_fake/responses", lambda r: self._done(self.clear_responses))
        self.control_routes.add("GET", "/_fake/bookings", self._control_bookings)
        self.control_routes.add("GET", "/_fake/booked", lambda r: Reply(200, self.booked_bodies()))
        self.control_routes.add("GET", "/_fake/booking_log", lambda r: Reply(200, self.booking_log()))
        self.control_routes.add("POST", "/_fake/idempotency", lambda r: self._done(self.set_idempotency, r.body))
        self.control_routes.add("POST", "/_fake/latency", lambda r: self._done(self.set_latency, r.body))

    # --- scripting -------------------------------------------------------------------------------

    def respond(
        self,
        *,
        match: dict | None = None,
        path: str | None = None,
        method: str | None = None,
        status: int = 200,
        body: Any = None,
        raw_body: bytes | str | None = None,
        headers: dict | None = None,
        delay: float = 0.0,
        times: int | None = None,
        drop_connection: bool = False,
        book: bool = False,
    ) -> None:
        """Answer requests that match with this; newest rule first, ``times=None`` = forever.

        ``match``: top-level fields that must be equal, compared as strings, in the JSON body, or in
        the query parameters when the body is not a JSON object (GET). ``path``: a regex that must
        match the whole path (a plain path works). ``method``: optional. ``book``: book the request
        first, as if the ERP had accepted it and then lost its answer (with ``delay``: a timeout).
        """
        reply = Reply(status, body, raw_body, headers, delay, drop_connection, apply=book)
        self._responses.add(Rule(_matcher(match, path, method), reply, times))

    def clear_responses(self) -> None:
        self._responses.clear()

    def clear_bookings(self) -> None:
        with self._lock:
            self.bookings.clear()
            self.booked.clear()

    def set_idempotency(self, honour: bool) -> None:
        self.honour_idempotency = bool(honour)

    def set_latency(self, latency_ms: float) -> None:
        """Hold every later answer this long (on top of a scripted ``delay``); 0 answers at once."""
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be at least 0, not {latency_ms!r}")
        self.latency_s = latency_ms / 1000

    def booking_log(self) -> list[dict]:
        """Every booking, in order: its Idempotency-Key, path, body and time (an independent record
        of what the ERP accepted, for checkers)."""
        with self._lock:
            return [{"key": e["key"], "path": e["path"], "body": e["body"], "at": e["at"]} for e in self.booked]

    def booked_bodies(self) -> list[Any]:
        with self._lock:
            return [entry["body"] for entry in self.booked]

    def expire_tokens(self) -> None:
        self.tokens.expire_all()

    def _control_bookings(self, request: RecordedRequest) -> Reply:
        """``GET /_fake/bookings``: every booking by its Idempotency-Key (a resend books nothing new)."""
        with self._lock:
            return Reply(200, {key: dict(booking) for key, booking in self.bookings.items()})

    # --- request handling ------------------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> Reply:
        reply = self._answer(request)
        return dataclasses.replace(reply, delay=reply.delay + self.latency_s) if self.latency_s else reply

    def _answer(self, request: RecordedRequest) -> Reply:
        if self.auth == "token" and request.path == self.login_path:
            return self._login(request)
        # The CRM webhook that post scripts call stands beside the ERP and needs no ERP credentials.
        if not request.path.startswith(CRM_PREFIX) and not self._authorized(request):
            return _unauthorized()
        scripted = self._responses.take(request)
        if scripted is not None and not scripted.apply:
            return scripted
        if request.method == "GET" and (found := self._lookup(request.path)) is not None:
            return found
        accepted = self._accept(request)
        return scripted or accepted

    def _lookup(self, path: str) -> Reply | None:
        """A query check, ``GET <write path>/<id>``: the booking of the plan whose cancellationId (or
        pk) is <id>, or 404; None for any other path."""
        parent, _, plan_id = path.rstrip("/").rpartition("/")
        if parent not in LOOKUP_PATHS:
            return None
        with self._lock:
            for entry in self.booked:
                body = entry["body"] if isinstance(entry["body"], dict) else {}
                if entry["path"] == parent and plan_id in (_text(body.get("cancellationId")), _text(body.get("pk"))):
                    return Reply(200, entry["booking"])
        return Reply(404, {"detail": "not found"})

    def _accept(self, request: RecordedRequest) -> Reply:
        """Book the request; a repeated Idempotency-Key gets the first booking back, not a new one
        (unless the fake ignores the header, as some ERPs do)."""
        key = request.headers.get(IDEMPOTENCY_HEADER)
        with self._lock:
            if self.honour_idempotency and key in self.bookings:
                return Reply(200, self.bookings[key], headers={"Idempotent-Replayed": "true"})
            self._accepted += 1
            booking = {"id": f"ERP-{self._accepted}", "status": "accepted"}
            if key:
                self.bookings.setdefault(key, booking)
            self.booked.append(
                {"key": key, "booking": booking, "body": request.body, "path": request.path, "at": time.time()}
            )
            return Reply(201, booking)

    def _login(self, request: RecordedRequest) -> Reply:
        """Integrator-style login: username and password in a JSON (or form) body, extra fields ok."""
        if request.method != "POST":
            return Reply(405, {"error": "method not allowed"})
        body = (
            request.body
            if isinstance(request.body, dict)
            else dict(parse_qsl(request.raw_body.decode("utf-8", errors="replace")))
        )
        if body.get("username") != self.username or body.get("password") != self.password:
            return _unauthorized()
        answer = _nest(self.token_path, self.tokens.issue(self.username))
        answer.setdefault("token_type", "Bearer")
        return Reply(200, answer)

    def _authorized(self, request: RecordedRequest) -> bool:
        if self.auth == "none":
            return True
        if self.auth == "basic":
            return _basic_credentials(request.headers.get("Authorization")) == (self.username, self.password)
        value = (request.headers.get(self.header_name) or "").strip()
        if self.auth == "header":
            return value in (self.static_token, f"Bearer {self.static_token}")
        return self.tokens.use(self._strip_prefix(value))

    def _strip_prefix(self, value: str) -> str | None:
        """The token from ``<prefix> <token>``; without a configured prefix the header is the token."""
        if not self.token_prefix:
            return value
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == self.token_prefix.lower() else None


def _matcher(match: dict | None, path: str | None, method: str | None):
    wanted = {str(k): _text(v) for k, v in (match or {}).items()}
    pattern = re.compile(path) if path else None

    def matches(request: RecordedRequest) -> bool:
        if method and request.method != method.upper():
            return False
        if pattern and not pattern.fullmatch(request.path):
            return False
        fields = request.body if isinstance(request.body, dict) else request.query
        return all(k in fields and _text(fields[k]) == v for k, v in wanted.items())

    return matches


def _text(value: Any) -> str:
    """Strings as they are, objects and lists as JSON, other scalars via ``str``: 12 == "12"."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value if isinstance(value, str) else str(value)


def _nest(dotted_path: str, value: str) -> dict:
    """``"data.token"`` -> ``{"data": {"token": value}}``, to exercise a login's token path."""
    answer: dict = {}
    node = answer
    *parents, leaf = dotted_path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return answer


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _unauthorized() -> Reply:
    return Reply(401, {"error": "unauthorized"})
