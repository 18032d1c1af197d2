"""The clients a connection makes, built the same way from Airflow's Connection (the hooks) and from
the same connection read from the environment (the command line)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from order_cancel.clients.connection import base_url, tls_verify
from order_cancel.clients.erp import ErpClient
from order_cancel.clients.omnitron import OmnitronClient
from order_cancel.clients.tokens import TokenStore
from order_cancel.flows.models import ErpLogin


def omnitron_factory(conn: Any, *, timeout: float, tokens: TokenStore) -> Callable[[], OmnitronClient]:
    """Omnitron's API user: host = Omnitron's domain URL, login/password = the API user. The
    connection is read now; each call builds a client with an HTTP session of its own. Raises
    ConnectionSettingsError for a connection without a host."""
    return partial(
        OmnitronClient,
        base_url(conn),
        conn.login or "",
        conn.password or "",
        tokens=tokens,
        timeout=timeout,
        verify=tls_verify(conn),
    )


def erp_factory(conn: Any, login: ErpLogin | None, *, timeout: float, tokens: TokenStore) -> Callable[[], ErpClient]:
    """The customer's ERP: host = its base URL, login/password = the ERP user (or the permanent
    token), logged in as `login` says; otherwise as omnitron_factory."""
    return partial(
        ErpClient,
        base_url(conn),
        login,
        conn.login,
        conn.password,
        tokens=tokens,
        timeout=timeout,
        verify=tls_verify(conn),
    )
