"""Omnitron HTTP client: every path, query parameter and body the flow uses lives in this module.

Parts of the wire contract are assumed (shared/reference/omnitron-api.md); keeping them here makes
a wrong assumption a one-line change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from order_cancel.clients.http import HttpSession, failure, shown_url
from order_cancel.clients.tokens import TokenStore

LOGIN_PATH = "api/v1/auth/login/"
CANCELLATION_PLANS_PATH = "api/v1/cancellation_plans/"
CANCELLATION_PLAN_PATH = "api/v1/cancellation_plans/{plan_pk}/"
CANCELLATION_PLAN_STATUSES_PATH = "api/v1/cancellation_plans/cancellation_plan_statuses/"
ORDER_TRANSACTIONS_PATH = "api/v1/order_transactions/"
ORDER_TRANSACTION_PATH = "api/v1/order_transactions/{transaction_pk}/"
APPROVE_PATH = "api/v1/orders/{order_pk}/cancellation_approved_order/"
UPDATE_STATUS_PATH = "api/v1/cancellation_plans/{plan_pk}/update_status/"
CREATE_MAPPING_PATH = "api/v1/order_transactions/{transaction_pk}/create_mapping/"

REJECTED_STATUS = "rejected"
# No public evidence that Omnitron honours `ordering` (Akinon's channel apps sort with `sort=`), and
# DRF ignores a parameter it does not know: the flow never depends on it (pipeline.fetch), and
# `python -m order_cancel preflight` says whether it holds, or which of these does.
ORDERING_PARAM = "ordering"
ORDERING_ALTERNATIVES = ("sort",)
BY_MODIFIED_DATE = "modified_date"
# The field of an order transaction that leads to its order (no public evidence either).
TRANSACTION_ORDER_FIELD = "order"


class OmnitronError(Exception):
    """A call to Omnitron failed. The message names the call, never a credential."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class OmnitronLoginError(OmnitronError):
    """Omnitron refused the credentials (or answered no token): a retry cannot mend it."""


class OmnitronAnswerError(OmnitronError):
    """Omnitron answered something the flow cannot read: not JSON, or a page without results."""


@dataclass(frozen=True)
class Written:
    """One write to Omnitron, as made: for the plan's record (no credential in it)."""

    method: str
    path: str
    body: dict[str, Any]
    answer: Any

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "body": self.body, "answer": self.answer}


@dataclass(frozen=True)
class PlanQuery:
    """The filters of "Get Data From Omnitron", as Omnitron query parameters."""

    channel_type: str | None = None
    status: str | None = None
    plan_type: str | None = None
    channel_ids: tuple[int, ...] = ()
    order_id: int | None = None
    modified_from: str | None = None
    modified_until: str | None = None
    # Plans modified until this time, included (a completed flow's proof that nothing was skipped).
    modified_through: str | None = None
    # Plans by pk (`pk__in`, assumed: a django-filter "in" filter like channel_id__in).
    plan_pks: tuple[int, ...] = ()
    ordering_param: str = ORDERING_PARAM
    descending: bool = False

    def params(self) -> dict[str, str]:
        params = {}
        if self.plan_pks:
            params["pk__in"] = ",".join(str(pk) for pk in self.plan_pks)
        if self.channel_type:
            params["channel_type"] = self.channel_type
        if self.status:
            params["status"] = self.status
        if self.plan_type:
            params["plan_type"] = self.plan_type
        if self.channel_ids:
            params["channel_id__in"] = ",".join(str(channel) for channel in self.channel_ids)
        if self.order_id is not None:
            params["order_id"] = str(self.order_id)
        if self.modified_from:
            params["modified_date__gte"] = self.modified_from
        if self.modified_until:
            params["modified_date__lt"] = self.modified_until
        if self.modified_through:
            params["modified_date__lte"] = self.modified_through
        params[self.ordering_param] = ("-" if self.descending else "") + BY_MODIFIED_DATE
        return params


RETURN_TRANSACTION = "return"


@dataclass(frozen=True)
class TransactionQuery:
    """The filters of the order transaction list, as Omnitron query parameters (assumed, but for
    `transaction_type`)."""

    transaction_type: str | None = None
    mapped: bool | None = None
    channel_type: str | None = None
    channel_ids: tuple[int, ...] = ()
    pk: int | None = None

    def params(self) -> dict[str, str]:
        params = {}
        if self.transaction_type:
            params["transaction_type"] = self.transaction_type
        if self.mapped is not None:
            params["integration_mapping__isnull"] = "false" if self.mapped else "true"
        if self.channel_type:
            params["channel_type"] = self.channel_type
        if self.channel_ids:
            params["channel_id__in"] = ",".join(str(channel) for channel in self.channel_ids)
        if self.pk is not None:
            params["pk"] = str(self.pk)
        params[ORDERING_PARAM] = BY_MODIFIED_DATE
        return params


def return_transactions_query(channel_type: str, channel_ids: tuple[int, ...]) -> TransactionQuery:
    """What the Order Transaction mode lists: return transactions without an integration mapping."""
    return TransactionQuery(RETURN_TRANSACTION, mapped=False, channel_type=channel_type, channel_ids=channel_ids)


class OmnitronClient:
    """Token-authenticated Omnitron API client; logs in again once when a token has expired (401)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        tokens: TokenStore | None = None,
        timeout: float = 30,
        verify: bool | str = True,
    ):
        self.base_url = base_url.rstrip("/") + "/"
        self.username = username
        self._password = password
        self.tokens = tokens or TokenStore()
        self.timeout = timeout
        self.session = HttpSession()
        self.session.verify = verify

    # -- authentication -------------------------------------------------------------------------
    @property
    def _token_key(self) -> tuple[str, str]:
        return (self.base_url, self.username)

    def login(self) -> None:
        """POST the credentials; HTTP 400 means they are wrong."""
        response = self._send("POST", LOGIN_PATH, json={"username": self.username, "password": self._password})
        if response.status_code == 400:
            where, user = shown_url(self.base_url), self.username
            raise OmnitronLoginError(
                f"Omnitron login at {where} refused the credentials of user {user!r} (HTTP 400)", 400
            )
        _raise_for_status(response, "POST", LOGIN_PATH)
        token = _json(response, "POST", LOGIN_PATH).get("key")
        if not token:
            raise OmnitronLoginError(
                f"Omnitron login at {shown_url(self.base_url)} answered without a token", response.status_code
            )
        self.tokens.put(self._token_key, token)

    def _token(self) -> str:
        token = self.tokens.get(self._token_key)
        if token is None:
            self.login()
            token = self.tokens.get(self._token_key)
        return token or ""

    # -- transport ------------------------------------------------------------------------------
    def _send(self, method: str, path_or_url: str, **kwargs: Any) -> requests.Response:
        url = urljoin(self.base_url, path_or_url)
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise OmnitronError(f"Omnitron {method} failed: {failure(exc, url)}") from None

    def request(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        """An authenticated call that answers parsed JSON; a 401 means an expired token: log in once and repeat."""
        for attempt in (1, 2):
            headers = {"Authorization": f"Token {self._token()}"}
            response = self._send(method, path_or_url, headers=headers, **kwargs)
            if response.status_code == 401 and attempt == 1:
                self.login()
                continue
            _raise_for_status(response, method, path_or_url)
            return _json(response, method, path_or_url) if response.content else None
        raise AssertionError("unreachable")

    def pages(self, path: str, params: dict[str, str], page_size: int) -> Iterator[dict[str, Any]]:
        """Yield the pages of a paginated list, following `next` until it is null."""
        page: Any = self.request("GET", path, params={**params, "limit": str(page_size), "page": "1"})
        while True:
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                raise OmnitronAnswerError(f"Omnitron GET {_path(path)} answered a page without a results list")
            yield page
            if not page.get("next"):
                return
            page = self.request("GET", page["next"])

    def iter_pages(self, path: str, params: dict[str, str], page_size: int) -> Iterator[dict[str, Any]]:
        """Yield the results of a paginated list, page by page."""
        for page in self.pages(path, params, page_size):
            yield from page["results"]

    # -- the calls of the flow ------------------------------------------------------------------
    def cancellation_plans(self, query: PlanQuery, page_size: int) -> Iterator[dict[str, Any]]:
        """The matching plans, page by page: a caller that stops early fetches no further page."""
        return self.iter_pages(CANCELLATION_PLANS_PATH, query.params(), page_size)

    def return_transactions(
        self, channel_type: str, channel_ids: tuple[int, ...], page_size: int
    ) -> Iterator[dict[str, Any]]:
        """Return-type order transactions that have no integration mapping yet (Order Transaction mode)."""
        query = return_transactions_query(channel_type, channel_ids)
        return self.iter_pages(ORDER_TRANSACTIONS_PATH, query.params(), page_size)

    def rejected_count(self, order_pk: int | None) -> int:
        page = self.request(
            "GET",
            CANCELLATION_PLANS_PATH,
            params={"order_id": str(order_pk), "status": REJECTED_STATUS, "limit": "1"},
        )
        return int(page.get("count", 0))

    def plan_count(self, query: PlanQuery) -> int | None:
        """How many plans match (the list's `count`); None when the answer has no count."""
        return self._count(CANCELLATION_PLANS_PATH, query.params())

    def transaction_count(self, query: TransactionQuery) -> int | None:
        """How many order transactions match (the list's `count`); None when the answer has no count."""
        return self._count(ORDER_TRANSACTIONS_PATH, query.params())

    def _count(self, path: str, params: dict[str, str]) -> int | None:
        page = self.request("GET", path, params={**params, "limit": "1"})
        count = page.get("count") if isinstance(page, dict) else None
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    def cancellation_plan(self, plan_pk: int) -> Any:
        """One plan as Omnitron shows it now (retrieve)."""
        return self.request("GET", CANCELLATION_PLAN_PATH.format(plan_pk=plan_pk))

    def plan_status(self, plan_pk: int) -> str | None:
        """The plan's status in Omnitron now (retrieve)."""
        plan = self.cancellation_plan(plan_pk)
        return plan.get("status") if isinstance(plan, dict) else None

    def order_transaction(self, transaction_pk: int) -> Any:
        """One order transaction as Omnitron shows it now (retrieve)."""
        return self.request("GET", ORDER_TRANSACTION_PATH.format(transaction_pk=transaction_pk))

    def plan_statuses(self) -> list[str] | None:
        """The plan statuses Omnitron knows; None when the answer's shape is not one of those read:
        a list of values, of [value, label] pairs or of objects with a value, or an object keyed by value."""
        return _status_values(self.request("GET", CANCELLATION_PLAN_STATUSES_PATH))

    def has_mapping(self, transaction_pk: int) -> bool:
        """Whether the transaction has its integration mapping: the retrieve answer when it shows the
        field, else the list filtered to that transaction and to mapped ones (assumed)."""
        transaction = self.order_transaction(transaction_pk)
        if isinstance(transaction, dict) and "integration_mapping" in transaction:
            return bool(transaction["integration_mapping"])
        return bool(self.transaction_count(TransactionQuery(mapped=True, pk=transaction_pk)))

    def _write(self, path: str, body: dict[str, Any]) -> Written:
        return Written("POST", "/" + path, body, self.request("POST", path, json=body))

    def approve(self, order_pk: int, plan_pk: int) -> Written:
        return self._write(APPROVE_PATH.format(order_pk=order_pk), {"cancellation_plan": plan_pk})

    def update_status(self, plan_pk: int, status: str) -> Written:
        return self._write(UPDATE_STATUS_PATH.format(plan_pk=plan_pk), {"status": status})

    def reject(self, plan_pk: int) -> Written:
        return self.update_status(plan_pk, REJECTED_STATUS)

    def create_mapping(self, transaction_pk: int, code: str) -> Written:
        return self._write(CREATE_MAPPING_PATH.format(transaction_pk=transaction_pk), {"code": code})


_STATUS_KEYS = ("value", "key", "status", "code")


def _status_values(answer: Any) -> list[str] | None:
    if isinstance(answer, dict) and isinstance(answer.get("results"), list):
        answer = answer["results"]
    if isinstance(answer, dict):
        return [str(key) for key in answer]
    if not isinstance(answer, list):
        return None
    values = []
    for entry in answer:
        if isinstance(entry, str):
            values.append(entry)
        elif isinstance(entry, list) and entry:
            values.append(str(entry[0]))
        elif isinstance(entry, dict) and any(key in entry for key in _STATUS_KEYS):
            values.append(str(next(entry[key] for key in _STATUS_KEYS if key in entry)))
        else:
            return None
    return values


def _path(path_or_url: str) -> str:
    """The path alone: enough to name a call in a message, without hosts or query strings."""
    return "/" + urlsplit(path_or_url).path.lstrip("/")


def _raise_for_status(response: requests.Response, method: str, path: str) -> None:
    if response.status_code >= 400:
        raise OmnitronError(
            f"Omnitron {method} {_path(path)} answered HTTP {response.status_code}: {response.text[:300]}",
            response.status_code,
        )


def _json(response: requests.Response, method: str, path: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise OmnitronAnswerError(
            f"Omnitron {method} {_path(path)} answered something that is not JSON: {response.text[:200]!r}",
            response.status_code,
        ) from None
