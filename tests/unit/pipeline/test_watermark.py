"""The completed-status watermark's pure rules (the end-to-end behaviour is in test_completed_and_transactions)."""

import datetime as dt

import pytest

from order_cancel.pipeline.watermark import Watermark, Window, run_window


def plan(pk, modified):
    return {"pk": pk, "modified_date": modified}


def test_advancing_keeps_the_pks_taken_at_the_last_date():
    start = Watermark("2026-03-01T12:00:00Z")
    plans = [
        plan(1, "2026-03-01T12:01:00Z"),
        plan(2, "2026-03-01T12:02:00.000000Z"),
        plan(3, "2026-03-01T15:02:00+03:00"),
    ]

    advanced = start.advanced_over(plans)

    assert advanced == Watermark("2026-03-01T12:02:00Z", frozenset({2, 3}))
    assert advanced.already_taken(plan(3, "2026-03-01T12:02:00Z"))
    assert not advanced.already_taken(plan(4, "2026-03-01T12:02:00Z"))
    assert not advanced.already_taken(plan(2, "2026-03-01T12:05:00Z")), "a changed plan is new again"


def test_advancing_at_the_same_date_adds_to_the_taken_pks():
    start = Watermark("2026-03-01T12:02:00Z", frozenset({2}))
    assert start.advanced_over([plan(5, "2026-03-01T12:02:00Z")]).plan_pks == {2, 5}
    assert start.advanced_over([]) == start


def test_the_watermark_never_moves_back():
    old, new = Watermark("2026-03-01T12:00:00Z", frozenset({1})), Watermark("2026-03-02T00:00:00Z", frozenset({9}))
    assert old.later(new) == new and new.later(old) == new
    assert old.later(Watermark("2026-03-01T12:00:00Z", frozenset({4}))).plan_pks == {1, 4}
    assert old.later(None) == old


def test_round_trip_through_the_variable_text():
    mark = Watermark("2026-03-01T12:00:00Z", frozenset({3, 1}))
    assert Watermark.loads(mark.dumps()) == mark
    assert mark.dumps() == '{"modified_date": "2026-03-01T12:00:00Z", "plan_pks": [1, 3]}'


def test_which_runs_are_window_runs():
    interval = (dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    assert run_window("scheduled", {}, interval) is None
    assert run_window("manual", {}, interval) is None
    assert run_window("backfill", {}, interval) == Window("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z")
    conf = {"window_start": "2026-02-01T00:00:00+03:00", "window_end": "2026-02-02"}
    assert run_window("manual", conf, interval) == Window("2026-01-31T21:00:00Z", "2026-02-02T00:00:00Z")
    with pytest.raises(ValueError, match="window_end"):
        run_window("manual", {"window_start": "2026-02-01"}, interval)
