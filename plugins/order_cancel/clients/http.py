"""The HTTP session of the Omnitron and ERP clients."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import requests


class HttpSession(requests.Session):
    """A requests session that reads the environment's proxy and CA bundle settings once per host.

    A plain session reads them again for every request, scanning the whole of os.environ (hundreds
    of variables in an Airflow worker): about half a millisecond per request here, as long as a
    request to a local server takes. Proxies, NO_PROXY and REQUESTS_CA_BUNDLE are honoured as
    before; a change to them during the session's life (one task) is not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple, Any] = {}

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        key = (urlsplit(url)[:2], tuple(sorted((proxies or {}).items())), stream, verify, cert, self.verify, self.cert)
        if key not in self._environment:
            self._environment[key] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        return dict(self._environment[key])


def shown_url(url: str) -> str:
    """A URL fit for a message: scheme, host, port and path; no user info, no query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


MASK = "***"
# A query parameter is taken for a credential when a word of its name is one of these ("apiKey",
# "X-Amz-Signature", "access_token", "client_secret"); masking a harmless "sort_key" too costs little.
SECRET_WORDS = frozenset(
    {"apikey", "auth", "authorization", "credential", "credentials", "jwt", "key", "pass", "passwd", "password"}
    | {"pwd", "secret", "session", "sessionid", "sig", "signature", "token"}
)
_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")
_PARAMETER = re.compile(r"(?<=[?&])([^=&#\s]+)=([^&#\s'\"]*)")
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def masked(text: str) -> str:
    """`text` (a URL, or a message that quotes one) with its credentials replaced by ***: the user
    info of a URL, and the values of query parameters named like a key, token, secret, password or
    signature. For what is kept (a ledger, a record, a log line), never for what is sent."""
    text = _USERINFO.sub(f"{MASK}@", text)
    return _PARAMETER.sub(lambda found: f"{found[1]}={MASK}" if _names_a_secret(found[1]) else found[0], text)


def _names_a_secret(name: str) -> bool:
    return any(word.lower() in SECRET_WORDS for word in _WORD.findall(unquote_plus(name)))


def failure(exc: requests.RequestException, url: str) -> str:
    """Why a request got no answer, naming the URL it tried: "ConnectionError: ... (connection refused)"."""
    text = str(exc)
    if isinstance(exc, requests.Timeout):
        reason = "timed out"
    elif "Connection refused" in text:
        reason = "connection refused"
    elif "NameResolutionError" in text or "Name or service not known" in text:
        reason = "host name not found"
    elif "SSL" in text or "certificate" in text:
        reason = "TLS error"
    else:
        reason = "no answer"
    return f"{type(exc).__name__} at {shown_url(url)} ({reason})"
