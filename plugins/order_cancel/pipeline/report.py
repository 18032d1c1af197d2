"""Run report and alarms: what a run did, in a few lines for the DAG run's note, and whether it
crossed the flow's alarm thresholds (error rate, average flow time).

Pure functions; the operator sends the alarms through Airflow notifiers and sets the note.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from order_cancel.flows.models import AlarmSettings
from order_cancel.pipeline.plan import plan_label

FAILURE_RELATION = "failure"


@dataclass(frozen=True)
class RunReport:
    rows: list[dict[str, Any]]
    seconds: float

    @property
    def relations(self) -> Counter:
        return Counter("error" if row["error"] else row["relation"] for row in self.rows)

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Plans that ended in the relation `failure` or in an error, with the reason."""
        return [row for row in self.rows if row["error"] or row["relation"] == FAILURE_RELATION]

    @property
    def error_rate(self) -> float:
        return len(self.failures) / len(self.rows) if self.rows else 0.0

    def note(self, alarms: list[str]) -> str:
        """Markdown for the run's note in the Airflow UI."""
        counts = ", ".join(f"{relation} {count}" for relation, count in sorted(self.relations.items())) or "none"
        lines = [f"**{len(self.rows)} plan(s)** in {self.seconds:.0f} s: {counts}"]
        lines += [f"- {plan_label(row['plan'], row['order'])}: {_reason(row)}" for row in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"- ... and {len(self.failures) - 20} more")
        lines += [f"**Alarm:** {alarm}" for alarm in alarms]
        return "\n".join(lines)

    def payload(self, flow_id: str, run_id: str, alarms: list[str]) -> dict[str, Any]:
        return {
            "flow_id": flow_id,
            "run_id": run_id,
            "alarms": alarms,
            "plans": len(self.rows),
            "relations": dict(self.relations),
            "failures": [{"plan": row["plan"], "order": row["order"], "reason": _reason(row)} for row in self.failures],
            "run_seconds": round(self.seconds, 3),
        }


def _reason(row: dict[str, Any]) -> str:
    return row["error"] or f"the ERP refused it ({row['omnitron']})"


def crossed(settings: AlarmSettings, report: RunReport, recent_seconds: list[float]) -> list[str]:
    """The alarms a run raises; `recent_seconds` are the durations of the latest runs, this one included."""
    alarms = []
    if settings.error_rate is not None and report.rows and report.error_rate >= settings.error_rate:
        alarms.append(
            f"error rate {report.error_rate:.0%} ({len(report.failures)} of {len(report.rows)} plans) "
            f"reached the threshold of {settings.error_rate:.0%}"
        )
    if settings.average_flow_time_seconds is not None and recent_seconds:
        average = sum(recent_seconds) / len(recent_seconds)
        if average > settings.average_flow_time_seconds:
            alarms.append(
                f"average flow time {average:.1f} s over the last {len(recent_seconds)} run(s) "
                f"is above {settings.average_flow_time_seconds:g} s"
            )
    return alarms


def recent_run_times(stored: str | None, seconds: float, keep: int) -> list[float]:
    """The durations of the latest `keep` runs, this one last (kept in a Variable between runs)."""
    history = json.loads(stored) if stored else []
    return [*history, round(seconds, 3)][-keep:]
