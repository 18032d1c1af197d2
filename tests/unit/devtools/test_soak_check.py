"""The soak's checker: each way money can move twice, or not at all, is reported as a violation."""

from __future__ import annotations

from devtools.soak_check import Records, SoakFlow, check

FLOW = SoakFlow("soak_refunds", "waiting", 1)


def booking(plan: int | None, key: str, at: float) -> dict:
    return {"key": key, "path": FLOW.erp_path, "body": None if plan is None else {"pk": plan}, "at": at}


def plan(pk: int, status: str) -> dict:
    return {"pk": pk, "status": status, "order": {"channel": FLOW.channel}}


def test_a_clean_record_has_no_violation_and_is_drained():
    records = Records(
        bookings=[booking(1, "k1", 1.0)],
        writes=[{"plan": 1, "status": "completed", "at": 2.0}],
        plans={1: plan(1, "completed")},
    )
    verdict = check(records, [FLOW], final=True)
    assert verdict.violations == [] and verdict.drained and (verdict.booked, verdict.written) == (1, 1)


def test_doubles_early_writes_and_unnamed_bookings_are_violations():
    records = Records(
        bookings=[booking(1, "k1", 1.0), booking(1, "k2", 3.0), booking(2, "k3", 5.0), booking(None, "k4", 6.0)],
        writes=[
            {"plan": 1, "status": "completed", "at": 2.0},
            {"plan": 1, "status": "completed", "at": 4.0},
            {"plan": 2, "status": "completed", "at": 4.5},
            {"plan": 3, "status": "completed", "at": 4.5},
        ],
        plans={4: plan(4, "waiting")},
    )
    verdict = check(records, [FLOW], final=True)
    assert verdict.violations == [
        "the ERP booked a request that names no plan (key k4)",
        "plan 1: booked 2 times by the ERP (keys {'k1': 1, 'k2': 1})",
        "plan 1: written to Omnitron 2 times (['completed', 'completed'])",
        "plan 2: written to Omnitron before the ERP booked it",
        "plan 3: written to Omnitron (completed) without an ERP booking",
    ]
    assert not verdict.drained and verdict.undelivered == [4]
