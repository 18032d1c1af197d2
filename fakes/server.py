"""Shared machinery of the fake HTTP servers: serving, recording, fault injection, control API.

FakeOmnitron and FakeErp only decide *what* to answer (``handle``); everything a test needs around
that -- a real socket on 127.0.0.1, a log of every request, injected failures, a control API for
another process -- lives here once, so both fakes behave the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from .messages import Headers, RecordedRequest, Reply
from .routing import Router, Rule, RuleList

HOST = "127.0.0.1"


class FakeServer:
    """Base of the fakes: a ThreadingHTTPServer on 127.0.0.1 in a daemon thread.

    Every request outside ``/_fake/`` is recorded, then answered by the first matching fault, else
    by ``handle`` (the subclass). ``/_fake/...`` is the unrecorded, unauthenticated control API.
    """

    name = "fake"

    def __init__(self, port: int = 0, *, log_requests: bool = False):
        self._lock = threading.RLock()
        self._requested_port = port
        self._requests: list[RecordedRequest] = []
        self._faults = RuleList()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.log_requests = log_requests
        self.control_routes = Router()
        self.control_routes.add("GET", "/_fake/health", lambda r: Reply(200, {"ok": True}))
        self.control_routes.add("GET", "/_fake/requests", self._control_requests)
        self.control_routes.add("DELETE", "/_fake/requests", lambda r: self._done(self.clear_requests))
        self.control_routes.add("POST", "/_fake/faults", lambda r: self._done(self.add_fault, r.body))
        self.control_routes.add("DELETE", "/_fake/faults", lambda r: self._done(self.clear_faults))
        self.control_routes.add("POST", "/_fake/expire_tokens", lambda r: self._done(self.expire_tokens))

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind 127.0.0.1 and serve in a daemon thread; returns self for chaining."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server((HOST, self._requested_port), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(  # a short poll interval keeps stop() fast
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"{self.name}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port.

        Kept-alive client connections are closed too, so a client's pooled connection cannot keep
        talking to a "stopped" server; delayed answers still pending are cut short.
        """
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # --- recording -------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every recorded request, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def calls(self, method: str | None = None, path_prefix: str | None = None) -> list[RecordedRequest]:
        """Recorded requests filtered by method and/or path prefix."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path_prefix is None or r.path.startswith(path_prefix))
        ]

    # --- fault injection -------------------------------------------------------------------------

    def add_fault(
        self,
        method: str,
        path_regex: str,
        *,
        status: int = 500,
        body: Any = None,
        raw_body: bytes | str | None = None,
        headers: dict | None = None,
        delay: float = 0.0,
        times: int | None = 1,
        drop_connection: bool = False,
        after: int = 0,
        apply: bool = False,
    ) -> None:
        """Answer matching requests (method or "*", ``re.search`` on the path) with this instead.

        Faults are checked before any normal handling, newest first; ``times=None`` = forever;
        ``after``: the first that many matching requests are answered normally. ``apply``: the
        request is handled as usual first (a write takes effect, the ERP books) and its own answer
        is sent after ``delay``, or lost with ``drop_connection``: a client killed meanwhile has
        done the work without hearing of it.
        """
        pattern = re.compile(path_regex)
        method = method.upper()

        def matches(request: RecordedRequest) -> bool:
            return method in ("*", request.method) and bool(pattern.search(request.path))

        reply = Reply(status, body, raw_body, headers, delay, drop_connection, apply)
        self._faults.add(Rule(matches, reply, times, after))

    def clear_faults(self) -> None:
        self._faults.clear()

    def expire_tokens(self) -> None:
        """Invalidate every issued token; subclasses with auth override this."""

    # --- request processing ----------------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> Reply:
        raise NotImplementedError

    def process(self, request: RecordedRequest) -> Reply:
        """Control API, else record + faults + ``handle``; a crash becomes a 500, not a hang."""
        try:
            if request.path.startswith("/_fake/"):
                return self.control_routes.dispatch(request)
            with self._lock:
                self._requests.append(request)
            fault = self._faults.take(request)
            if fault is None:
                return self.handle(request)
            if fault.apply:
                handled = self.handle(request)
                return dataclasses.replace(handled, delay=fault.delay, drop_connection=fault.drop_connection)
            return fault
        except Exception as exc:
            traceback.print_exc()
            return Reply(500, {"detail": f"{self.name} crashed: {exc!r}"})

    def _control_requests(self, request: RecordedRequest) -> Reply:
        return Reply(200, [r.to_dict() for r in self.requests])

    @staticmethod
    def _done(action: Callable, kwargs: Any = None) -> Reply:
        """Run a control action; bad arguments are the caller's fault (400), not ours."""
        try:
            action(**kwargs) if isinstance(kwargs, dict) else action()
        except (TypeError, ValueError, KeyError, re.error) as exc:
            return Reply(400, {"error": str(exc)})
        return Reply(200, {"ok": True})


class _Server(ThreadingHTTPServer):
    """Tracks open connections so that ``stop`` can close kept-alive ones."""

    daemon_threads = True
    # socketserver's default backlog (5) drops connections when many clients connect at once (a
    # batch's threads, several batches); a real server listens with a larger one.
    request_queue_size = 1024
    fake: FakeServer

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address):
        """Clients that hang up (timeouts, dropped connections) are normal here; stay quiet."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid 40 ms stalls
    server: _Server

    def do_GET(self):
        request = self._read_request()
        if request is None:
            self.close_connection = True
            return
        self._send(self.server.fake.process(request))

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _read_request(self) -> RecordedRequest | None:
        """The request, or None when its client hung up before the whole body arrived: like any HTTP
        server, the fake then never hands the request on (a client killed mid-send books nothing)."""
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            return None
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = None
        return RecordedRequest(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=Headers(self.headers.items()),
            body=body,
            raw_body=raw,
            query_string=parts.query,
        )

    def _send(self, reply: Reply) -> None:
        if reply.delay:
            self.server.fake._stopping.wait(reply.delay)
        if reply.drop_connection:
            self._drop()
            return
        payload = reply.payload()
        headers = {"Content-Type": "application/json"} if payload else {}
        headers.update(reply.headers or {})
        try:
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, str(value))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _drop(self) -> None:
        """Close the socket without a status line, like a crashed upstream or a proxy reset."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format, *args):
        if self.server.fake.log_requests:
            sys.stderr.write(f"[{self.server.fake.name}] {format % args}\n")
