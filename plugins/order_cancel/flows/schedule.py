"""A flow's schedule as Airflow runs it: an Airflow preset, a five-field cron, or a Quartz cron.

NiFi's CRON-driven scheduling (and so the Integrator) uses Quartz crons: a seconds field first,
`?` for "no specific value", an optional year last, and days of the week numbered 1 (Sunday) to 7.
Airflow's cron timetables read five fields (croniter would read a sixth field as seconds, last, and
fire every second). A Quartz cron whose seconds field is 0 is translated to the five-field cron that
fires at the same minutes; any other is refused with the five-field form to write instead.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from croniter import CroniterBadDateError, croniter

PRESETS = frozenset({"@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@annually"})
# The largest value of each five-field position (minute, hour, day of month, month, day of week):
# Quartz's "5/15" (from 5, every 15) is cron's "5-59/15".
_FIELD_MAX = ("59", "23", "31", "12", "6")
_DAY_OF_WEEK = 4
_QUARTZ_ONLY = re.compile(r"[LW#]")
# A cron naming a day no month has ('0 9 30 2 *') is valid to croniter, yet its DAG would load and
# never run. Every real schedule fires within this many years: February 29th comes at least every 8.
FIRES_WITHIN_YEARS = 8


class ScheduleError(ValueError):
    """A schedule Airflow cannot run; the message says what to write instead where it can."""


@dataclass(frozen=True)
class Schedule:
    """`expression` is what Airflow runs; `note` says how it was derived from the flow file's text."""

    expression: str | None
    note: str | None = None


def airflow_schedule(text: str | None) -> Schedule:
    """The schedule of a flow file's `schedule` field, or ScheduleError with a sentence."""
    if text is None or text in PRESETS:
        return Schedule(text)
    fields = text.split()
    if len(fields) == 5:
        return Schedule(_checked(text, text))
    if len(fields) in (6, 7):
        cron = _from_quartz(text, fields)
        return Schedule(cron, f"the Quartz cron {text!r} runs as the five-field cron {cron!r}")
    raise ScheduleError(
        f"{text!r} is not a schedule: write a five-field cron (minute hour day-of-month month day-of-week, "
        f"e.g. '*/5 * * * *') or one of {', '.join(sorted(PRESETS))}"
    )


def _checked(cron: str, original: str) -> str:
    if not croniter.is_valid(cron):
        raise ScheduleError(f"{original!r} is not a valid cron expression (minute hour day-of-month month day-of-week)")
    try:
        croniter(cron, dt.datetime.now(dt.UTC), max_years_between_matches=FIRES_WITHIN_YEARS).get_next(dt.datetime)
    except CroniterBadDateError:
        raise ScheduleError(
            f"{original!r} never fires: no day in the next {FIRES_WITHIN_YEARS} years matches it (e.g. February 30th)"
        ) from None
    return cron


def _from_quartz(text: str, fields: list[str]) -> str:
    seconds, rest, year = fields[0], fields[1:6], fields[6] if len(fields) == 7 else "*"
    cron = " ".join(_quartz_field(value, position) for position, value in enumerate(rest))
    if seconds not in ("0", "00"):
        raise ScheduleError(
            f"{text!r} is a Quartz cron that fires at second {seconds!r}; Airflow schedules whole minutes: "
            f"write the five-field cron {cron!r}"
        )
    if year not in ("*", "?"):
        raise ScheduleError(f"{text!r} names a year ({year!r}); Airflow crons have no year field: write {cron!r}")
    if not croniter.is_valid(cron) and _QUARTZ_ONLY.search(cron):
        raise ScheduleError(f"{text!r} uses Quartz's L, W or # in a way a five-field cron cannot express")
    return _checked(cron, text)


def _quartz_field(value: str, position: int) -> str:
    value = "*" if value == "?" else value
    if position == _DAY_OF_WEEK:
        # Quartz counts days of the week from 1 (Sunday); cron from 0 (Sunday).
        value = re.sub(r"(?<![#/\d])\d+", lambda match: str(int(match.group()) - 1), value)
    return ",".join(_open_step(part, _FIELD_MAX[position]) for part in value.split(","))


def _open_step(part: str, maximum: str) -> str:
    start, slash, step = part.partition("/")
    if slash and start.isdigit():
        return f"*/{step}" if start == "0" else f"{start}-{maximum}/{step}"
    return part
