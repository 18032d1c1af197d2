"""The soak's checker: what the fakes recorded, and nothing of the project's own (no ledger, no XCom).

    bookings  the fake ERP's booking log: every plan it accepted, with its Idempotency-Key and time
    writes    the fake Omnitron's write log: every status a call set, with its time
    plans     the fake Omnitron's plans now

An order cancel flow moves money, so each of these is a violation:

* a booking that names no plan (a request the ERP should never have accepted);
* a plan booked more than once by the ERP (under different keys, or the same ERP path twice);
* a plan written to Omnitron more than once, or written before (or without) an ERP booking;
* at the end (`final`): a waiting plan that no flow would take again. Plans still waiting (a booked
  one among them: its Omnitron write is still to come, by its task's retry or a later run) and
  completed plans no run delivered yet are counted: `drained` says whether none is left.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SoakFlow:
    flow_id: str
    status: str
    channel: int

    @property
    def erp_path(self) -> str:
        return f"/api/{self.flow_id}"


@dataclass
class Records:
    bookings: list[dict]
    writes: list[dict]
    plans: dict[int, dict]


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    booked: int = 0
    written: int = 0
    waiting: int = 0
    undelivered_completed: int = 0
    undelivered: list[int] = field(default_factory=list)
    """The plans not delivered yet (waiting, or completed and never booked)."""

    @property
    def drained(self) -> bool:
        return self.waiting == 0 and self.undelivered_completed == 0


def plan_of(booking: dict) -> int | None:
    body = booking.get("body")
    if not isinstance(body, dict):
        return None
    plan = body.get("cancellationId", body.get("pk"))
    return None if plan is None else int(plan)


def check(records: Records, flows: list[SoakFlow], *, final: bool) -> Verdict:
    by_path = {flow.erp_path: flow for flow in flows}
    bookings: dict[int, list[dict]] = defaultdict(list)
    unnamed = []
    for booking in records.bookings:
        if booking["path"] in by_path:
            plan = plan_of(booking)
            if plan is None:
                unnamed.append(f"the ERP booked a request that names no plan (key {booking['key']})")
            else:
                bookings[plan].append(booking)
    writes: dict[int, list[dict]] = defaultdict(list)
    for write in records.writes:
        writes[int(write["plan"])].append(write)
    verdict = Verdict(booked=len(bookings), written=len(writes), violations=unnamed)
    verdict.violations += _doubles(bookings, writes)
    verdict.violations += _unbooked_writes(bookings, writes)
    if final:
        _final(records, flows, bookings, writes, verdict)
    return verdict


def _doubles(bookings: dict[int, list[dict]], writes: dict[int, list[dict]]) -> list[str]:
    found = []
    for plan, booked in sorted(bookings.items()):
        keys = Counter(booking["key"] for booking in booked)
        if len(booked) > 1:
            found.append(f"plan {plan}: booked {len(booked)} times by the ERP (keys {dict(keys)})")
    for plan, written in sorted(writes.items()):
        if len(written) > 1:
            found.append(f"plan {plan}: written to Omnitron {len(written)} times ({[w['status'] for w in written]})")
    return found


def _unbooked_writes(bookings: dict[int, list[dict]], writes: dict[int, list[dict]]) -> list[str]:
    found = []
    for plan, written in sorted(writes.items()):
        first_booking = min((booking["at"] for booking in bookings.get(plan, [])), default=None)
        if first_booking is None:
            found.append(f"plan {plan}: written to Omnitron ({written[0]['status']}) without an ERP booking")
        elif written[0]["at"] < first_booking:
            found.append(f"plan {plan}: written to Omnitron before the ERP booked it")
    return found


def _final(
    records: Records,
    flows: list[SoakFlow],
    bookings: dict[int, list[dict]],
    writes: dict[int, list[dict]],
    verdict: Verdict,
) -> None:
    channels = {(flow.status, flow.channel) for flow in flows}
    for pk, plan in sorted(records.plans.items()):
        status, channel = plan["status"], plan["order"]["channel"]
        if status == "waiting":
            verdict.waiting += 1
            verdict.undelivered.append(pk)
            if ("waiting", channel) not in channels:
                verdict.violations.append(f"plan {pk}: waiting in channel {channel}, which no flow takes")
        if status == "completed" and ("completed", channel) in channels and pk not in bookings:
            verdict.undelivered_completed += 1
            verdict.undelivered.append(pk)


def summary_rows(verdict: Verdict, extra: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        *((name, str(value)) for name, value in extra.items()),
        ("ERP bookings", str(verdict.booked)),
        ("Omnitron writes", str(verdict.written)),
        ("still waiting / completed undelivered", f"{verdict.waiting} / {verdict.undelivered_completed}"),
        ("violations", str(len(verdict.violations))),
    ]
