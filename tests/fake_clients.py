"""In-memory stand-ins for the Omnitron and ERP clients, for fast tests of the pipeline without HTTP
or Airflow. They answer what a test scripts and record every call, as the clients' callers see them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from order_cancel.clients.erp import ErpAnswer
from order_cancel.clients.omnitron import OmnitronError, Written


class FakeErpClient:
    """Answers each send with `answer(body)` (default 201); records sends and logins."""

    auth_description = "token login: token in header Authorization"

    def __init__(self, answer: Callable[[Any], ErpAnswer] | None = None):
        self.answer = answer or (lambda body: ErpAnswer(status_code=201, text='{"id": "ERP-1"}'))
        self.sent: list[tuple[str, str, Any, dict[str, str]]] = []
        self.logins = 0
        self._lock = threading.Lock()

    def login(self) -> None:
        with self._lock:
            self.logins += 1

    def request_for(self, method: str, url: str, body: Any, headers: dict[str, str]) -> dict[str, Any]:
        return {"method": method, "url": f"http://erp.test{url}", "headers": dict(headers), "json": body}

    def send(self, method: str, url: str, body: Any, headers: dict[str, str] | None = None) -> ErpAnswer:
        with self._lock:
            self.sent.append((method, url, body, dict(headers or {})))
        return self.answer(body)

    def sent_pks(self) -> list[Any]:
        return sorted(body["pk"] for _, _, body, _ in self.sent)


class LostWorker(BaseException):
    """The worker died here: nothing after this line of the try runs (no step catches it)."""


class FakeOmnitronClient:
    """Records every write and each plan's status (every plan starts `waiting`); `failing` names plan
    pks whose writes answer a 5xx (that many times), `lost` those whose next write takes effect and
    then loses its worker (`LostWorker`)."""

    def __init__(self, rejected: int = 0, failing: dict[Any, int] | None = None, lost: set[Any] | None = None):
        self.rejected = rejected
        self.failing = dict(failing or {})
        self.lost = set(lost or ())
        self.writes: list[tuple[str, dict[str, Any]]] = []
        self.statuses: dict[Any, str] = {}
        self.reads: list[Any] = []
        self._lock = threading.Lock()

    def rejected_count(self, order_pk: int | None) -> int:
        return self.rejected

    def plan_status(self, plan_pk: int) -> str:
        with self._lock:
            self.reads.append(plan_pk)
            return self.statuses.get(plan_pk, "waiting")

    def _write(self, plan_pk: Any, path: str, body: dict[str, Any], status: str | None = None) -> Written:
        with self._lock:
            if self.failing.get(plan_pk, 0) > 0:
                self.failing[plan_pk] -= 1
                raise OmnitronError(f"Omnitron POST /{path} answered HTTP 502: bad gateway", 502)
            self.writes.append((path, body))
            if status is not None:
                self.statuses[plan_pk] = status
            if plan_pk in self.lost:
                self.lost.discard(plan_pk)
                raise LostWorker(f"lost after writing plan {plan_pk}")
        return Written("POST", "/" + path, body, None)

    def approve(self, order_pk: int, plan_pk: int) -> Written:
        path = f"api/v1/orders/{order_pk}/cancellation_approved_order/"
        return self._write(plan_pk, path, {"cancellation_plan": plan_pk}, "approved")

    def update_status(self, plan_pk: int, status: str) -> Written:
        return self._write(plan_pk, f"api/v1/cancellation_plans/{plan_pk}/update_status/", {"status": status}, status)

    def reject(self, plan_pk: int) -> Written:
        return self.update_status(plan_pk, "rejected")

    def create_mapping(self, transaction_pk: int, code: str) -> Written:
        return self._write(None, f"api/v1/order_transactions/{transaction_pk}/create_mapping/", {"code": code})


class FakeClients:
    """What a pipeline stage asks for its clients (PlanClients)."""

    def __init__(self, omnitron: FakeOmnitronClient | None = None, erp: FakeErpClient | None = None):
        self._omnitron = omnitron or FakeOmnitronClient()
        self._erp = erp or FakeErpClient()

    def omnitron(self) -> Any:
        return self._omnitron

    def erp(self) -> Any:
        return self._erp
