"""The completed-status watermark: which completed plans a run takes, and where the next run starts.

A completed flow asks Omnitron for plans modified since the watermark (`modified_date__gte`), in
modification order. The watermark is the modification date of the last plan taken plus the pks
already taken at exactly that date, so plans that share a date are neither taken twice nor lost
when a page or the per-run cap falls between them. The Airflow adapters keep it in a Variable per
flow and move it at the end of a scheduled (or plain manual) run, over every plan the run fetched.

A completed plan the ERP could not decide on (`do_nothing`: the ERP was down, the request timed
out) is behind the watermark once its run ends. The watermark keeps it as pending, with the time it
was first left, and the following runs fetch it again by pk until the ERP decides, or until the
flow's `get_data.retry_pending_for` has passed (then `reconcile` reports it).

A backfill run, or a manual run whose conf names a window, takes the plans modified inside its
window instead and leaves the watermark alone.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

WINDOW_START_CONF, WINDOW_END_CONF = "window_start", "window_end"


def parse_time(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def modification_order(plan: dict[str, Any]) -> tuple[dt.datetime, int]:
    """The order a completed flow takes plans in: by modification date, then pk."""
    return parse_time(plan["modified_date"]), plan["pk"]


@dataclass(frozen=True)
class Watermark:
    modified_date: str
    plan_pks: frozenset[int] = field(default_factory=frozenset)
    pending: dict[int, str] = field(default_factory=dict)
    """Plans left for later behind the watermark: pk -> when a run first left it (ISO-8601)."""

    @classmethod
    def loads(cls, text: str) -> Watermark:
        data = json.loads(text)
        pending = {int(pk): since for pk, since in data.get("pending", {}).items()}
        return cls(data["modified_date"], frozenset(data.get("plan_pks", [])), pending)

    def dumps(self) -> str:
        data: dict[str, object] = {"modified_date": self.modified_date, "plan_pks": sorted(self.plan_pks)}
        if self.pending:
            data["pending"] = {str(pk): self.pending[pk] for pk in sorted(self.pending)}
        return json.dumps(data)

    def already_taken(self, plan: dict[str, Any]) -> bool:
        """A plan at exactly the watermark's date that an earlier run took already."""
        return plan.get("pk") in self.plan_pks and parse_time(plan["modified_date"]) == parse_time(self.modified_date)

    def advanced_over(self, plans: list[dict[str, Any]]) -> Watermark:
        """The watermark after a run that took `plans` (in modification order)."""
        if not plans:
            return self
        last = max(parse_time(plan["modified_date"]) for plan in plans)
        at_last = {plan["pk"] for plan in plans if parse_time(plan["modified_date"]) == last}
        if last == parse_time(self.modified_date):
            at_last |= self.plan_pks
        return replace(self, modified_date=iso(last), plan_pks=frozenset(at_last))

    def later(self, other: Watermark | None) -> Watermark:
        """The further of two positions, with this watermark's pending plans: clearing an old run's
        task must never move the position back."""
        if other is None:
            return self
        mine, theirs = parse_time(self.modified_date), parse_time(other.modified_date)
        if mine == theirs:
            return replace(self, plan_pks=self.plan_pks | other.plan_pks)
        return self if mine > theirs else replace(other, pending=self.pending)

    def expired(self, now: dt.datetime, limit: dt.timedelta) -> list[int]:
        """The pending plans first left longer than `limit` ago: no run fetches them again."""
        return sorted(pk for pk, since in self.pending.items() if now - parse_time(since) > limit)

    def without_pending(self, pks: Iterable[int]) -> Watermark:
        gone = set(pks)
        return replace(self, pending={pk: since for pk, since in self.pending.items() if pk not in gone})

    def after_run(self, taken: Iterable[int], left: Iterable[int], now: dt.datetime) -> Watermark:
        """The pending plans once a run has taken `taken`, of which `left` were left for later again
        (each keeps the time it was first left)."""
        taken_now, left_now = set(taken), set(left)
        kept = {pk: since for pk, since in self.pending.items() if pk not in taken_now}
        return replace(self, pending=kept | {pk: self.pending.get(pk, iso(now)) for pk in sorted(left_now)})


@dataclass(frozen=True)
class Window:
    """Plans modified in [start, end): a backfill's data interval or a manual run's conf."""

    start: str
    end: str


def run_window(run_type: str, conf: dict[str, Any], interval: tuple[Any, Any]) -> Window | None:
    """The window a run is limited to, or None for a run that follows the watermark."""
    if conf.get(WINDOW_START_CONF) or conf.get(WINDOW_END_CONF):
        try:
            start, end = parse_time(str(conf[WINDOW_START_CONF])), parse_time(str(conf[WINDOW_END_CONF]))
        except (KeyError, ValueError) as exc:
            needed = f"both {WINDOW_START_CONF} and {WINDOW_END_CONF} as ISO-8601 times"
            raise ValueError(f"a window run needs {needed} in its conf ({exc})") from None
        return Window(iso(start), iso(end))
    if run_type == "backfill" and all(interval):
        return Window(iso(interval[0]), iso(interval[1]))
    return None
