"""Airflow hooks: turn an Airflow connection into an Omnitron or ERP client.

Credentials come only from connections (environment, UI, secrets backend). A connection's `host` is
the full base URL (`https://demo.omnitron.akinon.net/`); `port` and `schema` are honoured when the
host has none. TLS certificates are verified unless the connection's extra says `{"verify": false}`
(or names a CA bundle file).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook

from order_cancel.config import ErpSettings, OmnitronSettings
from order_cancel.erp import ErpClient
from order_cancel.omnitron import OmnitronClient


class ConnectionSettingsError(ValueError):
    """A connection that cannot work as set (no host): a retry cannot mend it."""


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


class OmnitronHook(BaseHook):
    conn_name_attr = "omnitron_conn_id"
    default_conn_name = "omnitron_default"
    conn_type = "http"
    hook_name = "Akinon Omnitron"

    def __init__(self, settings: OmnitronSettings, **kwargs: Any):
        super().__init__(**kwargs)
        self.settings = settings

    def client_factory(self) -> Callable[[], OmnitronClient]:
        """Reads the connection once; each call builds a client with an HTTP session of its own."""
        conn = self.get_connection(self.settings.conn_id)
        return partial(
            OmnitronClient,
            base_url(conn),
            conn.login or "",
            conn.password or "",
            timeout=self.settings.timeout_seconds,
            verify=tls_verify(conn),
        )

    def get_conn(self) -> OmnitronClient:
        return self.client_factory()()


class ErpHook(BaseHook):
    conn_name_attr = "erp_conn_id"
    default_conn_name = "erp_default"
    conn_type = "http"
    hook_name = "Customer ERP"

    def __init__(self, settings: ErpSettings, **kwargs: Any):
        super().__init__(**kwargs)
        self.settings = settings

    def client_factory(self) -> Callable[[], ErpClient]:
        """Reads the connection once; each call builds a client with an HTTP session of its own."""
        conn = self.get_connection(self.settings.conn_id)
        return partial(
            ErpClient,
            base_url(conn),
            self.settings.login,
            conn.login,
            conn.password,
            timeout=self.settings.timeout_seconds,
            verify=tls_verify(conn),
        )

    def get_conn(self) -> ErpClient:
        return self.client_factory()()
