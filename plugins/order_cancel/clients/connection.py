"""An Airflow connection's fields, and what the clients make of them: the base URL and TLS.

The hooks pass Airflow's own Connection objects here; the command line reads the same connection
from the environment (AIRFLOW_CONN_<ID>, a URI or JSON, as Airflow writes it) without Airflow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit, urlunsplit


class ConnectionSettingsError(ValueError):
    """A connection that cannot work as set (missing, or without a host): a retry cannot mend it."""


@dataclass(frozen=True)
class ConnectionFields:
    """The fields of an Airflow connection that the package reads, named as Airflow names them."""

    conn_id: str
    conn_type: str | None = None
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = None
    schema: str | None = None
    extra_dejson: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, conn_id: str, environ: Mapping[str, str] = os.environ) -> ConnectionFields | None:
        """The connection Airflow would read from AIRFLOW_CONN_<CONN_ID>; None if it is not set."""
        text = environ.get(env_variable(conn_id))
        if not text:
            return None
        if text.lstrip().startswith("{"):
            return cls._from_json(conn_id, json.loads(text))
        parts = urlsplit(text)
        return cls(
            conn_id,
            conn_type=parts.scheme.replace("-", "_"),
            host=_uri_host(parts),
            port=parts.port,
            login=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            schema=unquote(parts.path.lstrip("/")) or None,
            extra_dejson=dict(parse_qsl(parts.query)),
        )

    @classmethod
    def _from_json(cls, conn_id: str, data: dict[str, Any]) -> ConnectionFields:
        extra = data.get("extra") or {}
        return cls(
            conn_id,
            conn_type=data.get("conn_type"),
            host=data.get("host"),
            port=data.get("port"),
            login=data.get("login"),
            password=data.get("password"),
            schema=data.get("schema"),
            extra_dejson=json.loads(extra) if isinstance(extra, str) else dict(extra),
        )


def env_variable(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def _uri_host(parts: SplitResult) -> str | None:
    # Airflow's URI of a SQLite connection carries the file's path, percent-encoded, as its host.
    host = parts.netloc if parts.scheme == "sqlite" else parts.hostname
    return unquote(host) if host else None


def base_url(conn: Any) -> str:
    host = (conn.host or "").strip()
    if not host:
        raise ConnectionSettingsError(f"connection {conn.conn_id!r} has no host (the Omnitron or ERP base URL)")
    if "://" not in host:
        scheme = conn.schema or ("https" if conn.conn_type == "https" else "http")
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    if conn.port and parts.port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:{conn.port}")
    return urlunsplit(parts).rstrip("/") + "/"


def tls_verify(conn: Any) -> bool | str:
    verify = conn.extra_dejson.get("verify", True)
    if isinstance(verify, str) and verify.lower() in ("false", "0", "no"):
        return False
    return verify
