"""A fake Omnitron: the slice of its REST API that the order cancel flow uses.

It follows /work/shared/reference/omnitron-api.md: token login, DRF-style filtered and paginated
lists of cancellation plans and order transactions, the plan statuses, and the three write calls.
State is plain dicts (``plans``, ``order_transactions``) that tests may read and change directly.

Where the reference has no public evidence, switches make the fake answer otherwise, as a real
Omnitron might: ``ordering_param`` (the parameter it sorts by, None: it ignores every one and lists
by pk), ``ignored_filters`` (filters it does not know), ``omit_field`` (a field its serializer does
not show); ``reset_data`` turns them off.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .data import PLAN_STATUSES, iso
from .listing import (
    InvalidPage,
    QueryError,
    apply_filters,
    date_filters,
    equals,
    int_equals,
    int_in,
    is_null,
    order,
    paginate,
    parse_datetime,
)
from .messages import RecordedRequest, Reply
from .routing import Router
from .server import HOST, FakeServer
from .tokens import TokenStore

API = "/api/v1"
LOGIN_PATH = f"{API}/auth/login/"
PLANS, TRANSACTIONS = "cancellation_plans", "order_transactions"
ORDER_KEYS = {"pk": lambda item: item["pk"], "modified_date": lambda item: parse_datetime(item["modified_date"])}


class FakeOmnitron(FakeServer):
    """Fake Omnitron on 127.0.0.1; see the module docstring and the API contract."""

    name = "fake-omnitron"

    def __init__(
        self,
        users: dict[str, str] | None = None,
        channels: dict[int, str] | None = None,
        port: int = 0,
        *,
        token_max_uses: int | None = None,
        clock: Callable[[], datetime] | None = None,
        log_requests: bool = False,
    ):
        super().__init__(port, log_requests=log_requests)
        self.users = dict(users or {"omnitron": "omnitron-pass"})
        self.channels = {int(k): v for k, v in (channels or {1: "web", 2: "web", 3: "marketplace"}).items()}
        self.tokens = TokenStore("omnitron", token_max_uses)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.plans: dict[int, dict] = {}
        self.order_transactions: dict[int, dict] = {}
        self.orders: dict[int, dict] = {}
        self.ignored_params: list[tuple[str, str]] = []
        # Every status the flow wrote, in order: an independent record for checkers.
        self.writes: list[dict] = []
        self._documented()
        self._routes = self._api_routes()
        self._add_control_routes()

    # --- data API --------------------------------------------------------------------------------

    def add_plans(self, plans: list[dict]) -> None:
        """Store copies of the plans; their nested orders feed the transactions' channel filters."""
        with self._lock:
            for plan in copy.deepcopy(list(plans)):
                self.plans[int(plan["pk"])] = plan
                self.orders[int(plan["order"]["pk"])] = plan["order"]

    def add_order_transactions(self, transactions: list[dict]) -> None:
        with self._lock:
            for transaction in copy.deepcopy(list(transactions)):
                self.order_transactions[int(transaction["pk"])] = transaction

    def reset_data(self) -> None:
        """Forget every plan, order and transaction, and turn the switches off (tests start each case
        from an empty Omnitron that behaves as the reference says)."""
        with self._lock:
            self.plans.clear()
            self.order_transactions.clear()
            self.orders.clear()
            self.ignored_params.clear()
            self.writes.clear()
            self._documented()

    def _documented(self) -> None:
        self.ordering_param: str | None = "ordering"
        self.ignored_filters: set[str] = set()
        self.plan_statuses = list(PLAN_STATUSES)
        self._omitted: list[tuple[str, list[str], frozenset[int] | None]] = []

    def omit_field(self, resource: str, field: str, pks: list[int] | None = None) -> None:
        """Answer `resource` (PLANS or TRANSACTIONS: lists and retrieves) without `field` (dotted:
        "order.number"), for the items `pks` (every item by default), as an Omnitron whose
        serializer does not show it; its filters still see the field."""
        with self._lock:
            self._omitted.append((resource, field.split("."), None if pks is None else frozenset(pks)))

    def _shown(self, resource: str, item: dict) -> dict:
        """A copy of `item` as answered: without the omitted fields."""
        shown = copy.deepcopy(item)
        for omitted_from, path, pks in self._omitted:
            if omitted_from == resource and (pks is None or item.get("pk") in pks):
                *parents, name = path
                holder: Any = shown
                for part in parents:
                    holder = holder.get(part) if isinstance(holder, dict) else None
                if isinstance(holder, dict):
                    holder.pop(name, None)
        return shown

    @property
    def token_max_uses(self) -> int | None:
        return self.tokens.max_uses

    @token_max_uses.setter
    def token_max_uses(self, value: int | None) -> None:
        """Applies to tokens issued from now on."""
        self.tokens.max_uses = value

    def expire_tokens(self) -> None:
        self.tokens.expire_all()

    # --- request handling ------------------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> Reply:
        if request.path != LOGIN_PATH and request.path.startswith("/api/"):
            denied = self._authenticate(request)
            if denied:
                return denied
        if request.json_error:
            return Reply(400, {"detail": "JSON parse error - invalid request body"})
        return self._routes.dispatch(request)

    def _api_routes(self) -> Router:
        routes = Router()
        routes.add("POST", LOGIN_PATH, self._login)
        routes.add("GET", f"{API}/cancellation_plans/", self._list_plans)
        routes.add("GET", f"{API}/order_transactions/", self._list_transactions)
        routes.add(
            "GET",
            f"{API}/cancellation_plans/cancellation_plan_statuses/",
            lambda r: Reply(
                200, [{"value": status, "label": status.replace("_", " ").title()} for status in self.plan_statuses]
            ),
        )
        routes.add("GET", rf"{API}/cancellation_plans/(?P<pk>\d+)/", lambda r, pk: self._retrieve(PLANS, pk))
        routes.add("GET", rf"{API}/order_transactions/(?P<pk>\d+)/", lambda r, pk: self._retrieve(TRANSACTIONS, pk))
        routes.add("POST", rf"{API}/orders/(?P<order_pk>\d+)/cancellation_approved_order/", self._approve)
        routes.add("POST", rf"{API}/cancellation_plans/(?P<pk>\d+)/update_status/", self._update_status)
        routes.add("POST", rf"{API}/order_transactions/(?P<pk>\d+)/create_mapping/", self._create_mapping)
        return routes

    def _login(self, request: RecordedRequest) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        missing = {f: ["This field is required."] for f in ("username", "password") if not body.get(f)}
        if missing:
            return Reply(400, missing)
        if self.users.get(body["username"]) != body["password"]:
            return Reply(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
        return Reply(200, {"key": self.tokens.issue(body["username"])})

    def _authenticate(self, request: RecordedRequest) -> Reply | None:
        """DRF TokenAuthentication: ``Authorization: Token <key>``, else 401."""
        keyword, _, key = (request.headers.get("Authorization") or "").partition(" ")
        if keyword.lower() != "token" or not key.strip():
            return _unauthorized("Authentication credentials were not provided.")
        if not self.tokens.use(key.strip()):
            return _unauthorized("Invalid token.")
        return None

    # --- lists -----------------------------------------------------------------------------------

    def _list_plans(self, request: RecordedRequest) -> Reply:
        filters = {
            "status": equals(lambda p: p["status"]),
            "plan_type": equals(lambda p: p["plan_type"]),
            "channel_type": equals(lambda p: self.channels.get(p["order"]["channel"])),
            "channel_id__in": int_in("channel_id__in", lambda p: p["order"]["channel"]),
            "order_id": int_equals("order_id", lambda p: p["order"]["pk"]),
            "pk__in": int_in("pk__in", lambda p: p["pk"]),
            **date_filters("modified_date", lambda p: p["modified_date"]),
        }
        with self._lock:  # held while filtering (the channel filters read self.orders) and copying the page
            return self._list(request, PLANS, list(self.plans.values()), filters)

    def _list_transactions(self, request: RecordedRequest) -> Reply:
        filters = {
            "transaction_type": equals(lambda t: t["transaction_type"]),
            "integration_mapping__isnull": is_null(
                "integration_mapping__isnull", lambda t: t.get("integration_mapping")
            ),
            "channel_type": equals(lambda t: self._channel_type_of_order(t.get("order"))),
            "channel_id__in": int_in("channel_id__in", lambda t: self._channel_of_order(t.get("order"))),
            "order_id": int_equals("order_id", lambda t: t.get("order")),
            "pk": int_equals("pk", lambda t: t["pk"]),
            **date_filters("modified_date", lambda t: t["modified_date"]),
        }
        with self._lock:  # held while filtering (the channel filters read self.orders) and copying the page
            return self._list(request, TRANSACTIONS, list(self.order_transactions.values()), filters)

    def _list(self, request: RecordedRequest, resource: str, items: list[dict], filters: dict) -> Reply:
        known = {name: check for name, check in filters.items() if name not in self.ignored_filters}
        paging = frozenset({"limit", "page"} | ({self.ordering_param} if self.ordering_param else set()))
        ordering = request.query.get(self.ordering_param) if self.ordering_param else None
        try:
            found, ignored = apply_filters(items, request.query, known, paging)
            page = paginate(order(found, ordering, ORDER_KEYS), request.query_string, self._absolute(request))
        except QueryError as error:
            return Reply(400, {error.param: [error.message]})
        except InvalidPage:
            return Reply(404, {"detail": "Invalid page."})
        with self._lock:
            self.ignored_params.extend((request.path, name) for name in ignored)
            # Only the page is copied: a fake holding many plans answers each page as fast.
            return Reply(200, {**page, "results": [self._shown(resource, item) for item in page["results"]]})

    def _channel_of_order(self, order_pk: Any) -> int | None:
        order_obj = self.orders.get(order_pk)
        return order_obj["channel"] if order_obj else None

    def _channel_type_of_order(self, order_pk: Any) -> str | None:
        channel = self._channel_of_order(order_pk)
        return None if channel is None else self.channels.get(channel)

    def _absolute(self, request: RecordedRequest) -> str:
        """Like DRF's build_absolute_uri: the Host the client used, so links work for it."""
        return f"http://{request.headers.get('Host') or f'{HOST}:{self.port}'}{request.path}"

    def _retrieve(self, resource: str, pk: str) -> Reply:
        with self._lock:
            found = (self.plans if resource == PLANS else self.order_transactions).get(int(pk))
            return Reply(404, {"detail": "Not found."}) if found is None else Reply(200, self._shown(resource, found))

    # --- writes ----------------------------------------------------------------------------------

    def _approve(self, request: RecordedRequest, order_pk: str) -> Reply:
        plan_pk = _field(request, "cancellation_plan")
        with self._lock:
            if int(order_pk) not in self.orders:
                return Reply(404, {"detail": "Not found."})
            if plan_pk is None:
                return Reply(400, {"cancellation_plan": ["This field is required."]})
            if not str(plan_pk).isdigit():
                return Reply(400, {"cancellation_plan": ["A valid integer is required."]})
            plan = self.plans.get(int(plan_pk))
            if plan is None:
                return Reply(404, {"detail": "Not found."})
            if plan["order"]["pk"] != int(order_pk):
                return Reply(400, {"cancellation_plan": ["Cancellation plan does not belong to this order."]})
            self._set_status(plan, "approved")
            return Reply(200, copy.deepcopy(plan))

    def _update_status(self, request: RecordedRequest, pk: str) -> Reply:
        status = _field(request, "status")
        with self._lock:
            plan = self.plans.get(int(pk))
            if plan is None:
                return Reply(404, {"detail": "Not found."})
            if status is None:
                return Reply(400, {"status": ["This field is required."]})
            if status not in self.plan_statuses:
                return Reply(400, {"status": [f'"{status}" is not a valid choice.']})
            self._set_status(plan, status)
            return Reply(200, copy.deepcopy(plan))

    def _create_mapping(self, request: RecordedRequest, pk: str) -> Reply:
        code = _field(request, "code")
        with self._lock:
            transaction = self.order_transactions.get(int(pk))
            if transaction is None:
                return Reply(404, {"detail": "Not found."})
            if code in (None, ""):
                return Reply(400, {"code": ["This field is required."]})
            transaction["integration_mapping"] = {"code": str(code)}
            return Reply(201, copy.deepcopy(transaction))

    def _set_status(self, plan: dict, status: str) -> None:
        plan["status"] = status
        plan["modified_date"] = iso(self.clock())
        self.writes.append({"plan": plan["pk"], "status": status, "at": time.time()})

    # --- control API -----------------------------------------------------------------------------

    def _add_control_routes(self) -> None:
        control = self.control_routes
        control.add("GET", "/_fake/plans", lambda r: Reply(200, self._snapshot(self.plans)))
        control.add("GET", "/_fake/writes", lambda r: Reply(200, list(self.writes)))
        control.add("POST", "/_fake/plans", lambda r: self._done(self.add_plans, {"plans": _as_list(r.body)}))
        control.add("GET", "/_fake/order_transactions", lambda r: Reply(200, self._snapshot(self.order_transactions)))
        control.add(
            "POST",
            "/_fake/order_transactions",
            lambda r: self._done(self.add_order_transactions, {"transactions": _as_list(r.body)}),
        )
        control.add("GET", "/_fake/ignored_params", lambda r: Reply(200, [list(pair) for pair in self.ignored_params]))

    def _snapshot(self, table: dict[int, dict]) -> list[dict]:
        with self._lock:
            return copy.deepcopy([table[pk] for pk in sorted(table)])


def _field(request: RecordedRequest, name: str) -> Any:
    return request.body.get(name) if isinstance(request.body, dict) else None


def _as_list(body: Any) -> list:
    return body if isinstance(body, list) else [body]


def _unauthorized(detail: str) -> Reply:
    return Reply(401, {"detail": detail}, headers={"WWW-Authenticate": "Token"})
