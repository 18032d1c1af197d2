"""ERP HTTP client: the login styles of the Integrator (token, basic, permanent header) and the
cancellation write.

A write never raises for what the ERP answers or fails to answer: the answer (or its absence) is
data for the response evaluation, which decides the plan's relation.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3

from order_cancel.clients.http import HttpSession, failure, masked, shown_url
from order_cancel.clients.tokens import TokenStore
from order_cancel.flows.models import BasicLogin, ErpLogin, HeaderLogin, TokenLogin

# An ERP answer is kept for the response script and the task's XCom; a runaway answer must not
# fill the worker's memory or the metadata database.
MAX_ANSWER_BYTES = 256 * 1024
# IETF draft "The Idempotency-Key HTTP Header Field": one key per version of a plan.
IDEMPOTENCY_HEADER = "Idempotency-Key"


class ErpLoginError(Exception):
    """The ERP login got no usable answer (no connection, a 5xx): a retry may mend it. The message
    names no credential."""


class ErpLoginRefused(ErpLoginError):
    """The ERP refused the credentials or answered without a token: a retry cannot mend it."""


@dataclass(frozen=True)
class ErpAnswer:
    """What the ERP answered to one request; status_code is None when no answer came (timeout,
    refused). The rest is what NiFi's InvokeHTTP records of a request (see pipeline.invokehttp)."""

    status_code: int | None
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    """No answer: "timeout", or the exception's class name."""
    truncated: bool = False
    reason: str = ""
    """The status line's reason phrase ("Unprocessable Entity")."""
    request_url: str = ""
    response_url: str = ""
    duration_ms: int = 0
    tx_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    exception: tuple[str, str] | None = None
    """No answer: the exception's class and message."""

    def body(self) -> Any:
        """The answer as JSON where it is JSON, else as text."""
        try:
            return json.loads(self.text) if self.text else None
        except ValueError:
            return self.text


class ErpClient:
    """The ERP of one flow: its login style, and the cancellation write."""

    def __init__(
        self,
        base_url: str,
        login: ErpLogin | None,
        username: str | None,
        password: str | None,
        *,
        tokens: TokenStore | None = None,
        timeout: float = 30,
        verify: bool | str = True,
    ):
        self.base_url = base_url.rstrip("/") + "/"
        self.login_settings = login
        self._username = username or ""
        self._password = password or ""
        self.tokens = tokens or TokenStore()
        self.timeout = timeout
        self.session = HttpSession()
        self.session.verify = verify

    def url(self, path_or_url: str) -> str:
        return urljoin(self.base_url, path_or_url.lstrip("/") if "://" not in path_or_url else path_or_url)

    @property
    def _token_key(self) -> tuple[str, ...]:
        return (self.base_url, self._username)

    # -- authentication -------------------------------------------------------------------------
    def login(self) -> None:
        """Fetch a fresh token (token login); other login styles need no round trip."""
        if not isinstance(self.login_settings, TokenLogin):
            return
        settings = self.login_settings
        url = self.url(settings.url)
        body = {"username": self._username, "password": self._password, **settings.extra_body}
        try:
            response = self.session.post(url, json=body, headers=settings.headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ErpLoginError(f"ERP login failed: {failure(exc, url)}") from None
        if response.status_code >= 500:
            raise ErpLoginError(f"ERP login at {shown_url(url)} answered HTTP {response.status_code}")
        if not response.ok:
            raise ErpLoginRefused(
                f"ERP login at {shown_url(url)} refused user {self._username!r} (HTTP {response.status_code})"
            )
        try:
            token = _dig(response.json(), settings.token_path)
        except (ValueError, KeyError, IndexError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ErpLoginRefused(f"ERP login at {shown_url(url)} answered no token at {settings.token_path!r}")
        self.tokens.put(self._token_key, token)

    def auth_headers(self) -> dict[str, str]:
        settings = self.login_settings
        if isinstance(settings, TokenLogin):
            token = self.tokens.get(self._token_key)
            if token is None:
                self.login()
                token = self.tokens.get(self._token_key) or ""
            return {settings.header: _prefixed(settings.prefix, token)}
        if isinstance(settings, HeaderLogin):
            return {settings.header: _prefixed(settings.prefix, self._password)}
        return {}

    @property
    def _basic_auth(self) -> tuple[str, str] | None:
        return (self._username, self._password) if isinstance(self.login_settings, BasicLogin) else None

    # -- the cancellation write -----------------------------------------------------------------
    def request_for(self, method: str, path_or_url: str, body: Any, headers: dict[str, str]) -> dict[str, Any]:
        """The request for one plan, without credentials: a JSON body, or query parameters for GET."""
        request: dict[str, Any] = {"method": method, "url": self.url(path_or_url), "headers": dict(headers)}
        if method == "GET":
            request["params"] = _query_params(body)
        else:
            request["json"] = body
        return request

    @property
    def auth_description(self) -> str:
        """How the request is authenticated, naming no secret (for dry runs)."""
        settings = self.login_settings
        if isinstance(settings, (TokenLogin, HeaderLogin)):
            return f"{settings.type} login: token in header {settings.header}"
        return "basic auth" if isinstance(settings, BasicLogin) else "none"

    def send(self, method: str, path_or_url: str, body: Any, headers: dict[str, str] | None = None) -> ErpAnswer:
        """Send one plan; the credentials are added here and nowhere else."""
        return self._exchange(self.request_for(method, path_or_url, body, headers or {}))

    def query(self, method: str, path_or_url: str) -> ErpAnswer:
        """Ask the ERP about a plan (a query check): no body."""
        return self._exchange({"method": method, "url": self.url(path_or_url), "headers": {}})

    def _exchange(self, request: dict[str, Any]) -> ErpAnswer:
        request["headers"].update(self.auth_headers())
        # The answer is kept (attributes, records, logs): it names the URL without its credentials.
        url, tx_id, started = masked(_full_url(request)), str(uuid.uuid4()), time.monotonic()
        try:
            response = self.session.request(auth=self._basic_auth, timeout=self.timeout, stream=True, **request)
            with response:
                raw = response.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
        except requests.Timeout as exc:
            return ErpAnswer(None, error="timeout", exception=_described(exc), request_url=url, tx_id=tx_id)
        except requests.RequestException as exc:
            return ErpAnswer(None, error=type(exc).__name__, exception=_described(exc), request_url=url, tx_id=tx_id)
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # the answer broke off while it was read
            error = f"answer not read: {type(exc).__name__}"
            return ErpAnswer(None, error=error, exception=_described(exc), request_url=url, tx_id=tx_id)
        return ErpAnswer(
            status_code=response.status_code,
            text=raw[:MAX_ANSWER_BYTES].decode(response.encoding or "utf-8", errors="replace"),
            headers=dict(response.headers),
            truncated=len(raw) > MAX_ANSWER_BYTES,
            reason=response.reason or "",
            request_url=url,
            response_url=masked(response.url),
            duration_ms=round(1000 * (time.monotonic() - started)),
            tx_id=tx_id,
        )


def _full_url(request: dict[str, Any]) -> str:
    """The URL as sent, query parameters included."""
    return (
        requests.Request(method=request["method"], url=request["url"], params=request.get("params")).prepare().url or ""
    )


def _described(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, masked(str(exc))  # requests quotes the URL it tried


def _prefixed(prefix: str | None, token: str) -> str:
    return f"{prefix} {token}" if prefix else token


def _dig(document: Any, dotted_path: str) -> Any:
    """Follow a dotted path such as `data.access_token` (a number indexes a list)."""
    for part in dotted_path.split("."):
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


def _query_params(body: Any) -> dict[str, str]:
    """A GET carries the mapped plan as query parameters; nested values travel as JSON text."""
    if not isinstance(body, dict):
        raise ValueError("a GET request needs the mapped plan to be a JSON object")
    return {
        key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False) for key, value in body.items()
    }
