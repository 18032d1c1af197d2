"""The completed-status watermark: which completed plans a run takes, and where the next run starts.

A completed flow asks Omnitron for plans modified since the watermark (`modified_date__gte`), in
modification order. The watermark is the modification date of the last plan taken plus the pks
already taken at exactly that date, so plans that share a date are neither taken twice nor lost
when a page or the per-run cap falls between them. The Airflow adapters keep it in a Variable per
flow and move it at the end of a scheduled (or plain manual) run, over every plan the run fetched.

A backfill run, or a manual run whose conf names a window, takes the plans modified inside its
window instead and leaves the watermark alone.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

WINDOW_START_CONF, WINDOW_END_CONF = "window_start", "window_end"


def parse_time(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Watermark:
    modified_date: str
    plan_pks: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def loads(cls, text: str) -> Watermark:
        data = json.loads(text)
        return cls(data["modified_date"], frozenset(data.get("plan_pks", [])))

    def dumps(self) -> str:
        return json.dumps({"modified_date": self.modified_date, "plan_pks": sorted(self.plan_pks)})

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
        return Watermark(iso(last), frozenset(at_last))

    def later(self, other: Watermark | None) -> Watermark:
        """The further of two watermarks: clearing an old run's task must never move it back."""
        if other is None:
            return self
        mine, theirs = parse_time(self.modified_date), parse_time(other.modified_date)
        if mine == theirs:
            return Watermark(self.modified_date, self.plan_pks | other.plan_pks)
        return self if mine > theirs else other


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
