"""Airflow hooks: an Airflow connection becomes an Omnitron or ERP client, as the HTTP provider's
hooks do from a `conn_id`.

Credentials come only from connections (environment, UI, secrets backend). A connection's `host` is
the full base URL (`https://demo.omnitron.akinon.net/`); `port` and `schema` are honoured when the
host has none. TLS certificates are verified unless the connection's extra says `{"verify": false}`
(or names a CA bundle file).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk import BaseHook

from order_cancel.clients.erp import ErpClient
from order_cancel.clients.factory import erp_factory, omnitron_factory
from order_cancel.clients.omnitron import OmnitronClient
from order_cancel.clients.tokens import TokenStore
from order_cancel.flows.models import ErpLogin


class _ClientHook(BaseHook):
    """A hook whose connection becomes an HTTP client: the base URL, the credentials, TLS."""

    conn_type = "http"
    conn_name_attr: str  # the attribute that holds the connection id, as Airflow's hooks name it

    def __init__(self, conn_id: str, *, timeout: float = 30, tokens: TokenStore | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        setattr(self, self.conn_name_attr, conn_id)
        self.timeout = timeout
        self.tokens = tokens or TokenStore()

    def _connection(self) -> Any:
        return self.get_connection(getattr(self, self.conn_name_attr))


class OmnitronHook(_ClientHook):
    """Omnitron's API user: host = Omnitron's domain URL, login/password = the API user."""

    conn_name_attr = "omnitron_conn_id"
    default_conn_name = "omnitron_default"
    hook_name = "Akinon Omnitron"

    def __init__(self, omnitron_conn_id: str = default_conn_name, **kwargs: Any):
        super().__init__(omnitron_conn_id, **kwargs)

    def client_factory(self) -> Callable[[], OmnitronClient]:
        """Reads the connection once; each call builds a client with an HTTP session of its own."""
        return omnitron_factory(self._connection(), timeout=self.timeout, tokens=self.tokens)

    def get_conn(self) -> OmnitronClient:
        return self.client_factory()()


class ErpHook(_ClientHook):
    """The customer's ERP: host = its base URL, login/password = the ERP user (or the permanent token)."""

    conn_name_attr = "erp_conn_id"
    default_conn_name = "erp_default"
    hook_name = "Customer ERP"

    def __init__(
        self,
        erp_conn_id: str = default_conn_name,
        *,
        login: ErpLogin | None = None,
        **kwargs: Any,
    ):
        super().__init__(erp_conn_id, **kwargs)
        self.login = login

    def client_factory(self) -> Callable[[], ErpClient]:
        """Reads the connection once; each call builds a client with an HTTP session of its own."""
        return erp_factory(self._connection(), self.login, timeout=self.timeout, tokens=self.tokens)

    def get_conn(self) -> ErpClient:
        return self.client_factory()()
