"""The run summary: one row per plan with its relation and what was written to Omnitron."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PLAN_ERROR_KEY = "plan_error"
SUMMARY_KEY = "plans"
COLUMNS = ("plan", "order", "relation", "omnitron", "error")


@dataclass(frozen=True)
class RunSummary:
    rows: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["error"]]

    def failed_refs(self) -> str:
        return ", ".join(f"plan {row['plan']} ({row['error']})" for row in self.failed)

    def lines(self) -> list[str]:
        table = [COLUMNS] + [tuple(str(row[column] if row[column] is not None else "-") for column in COLUMNS) for row in self.rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
        return [" | ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]


def flatten(values: list[Any]) -> list[Any]:
    """Per-plan values, whether they come one per task (per-plan mode) or as lists, in JSON text
    from a batch's results (batch mode)."""
    flat: list[Any] = []
    for value in values or []:
        value = json.loads(value) if isinstance(value, str) else value
        flat.extend(value if isinstance(value, list) else [value])
    return flat


def summarize(items: list[dict[str, Any]], results: list[dict[str, Any]], errors: list[dict[str, Any]]) -> RunSummary:
    """Join the fetched plans with their step results (in step order) and errors, by plan pk."""
    results_by_plan: dict[Any, dict[str, Any]] = {}
    for result in results:
        if result:
            results_by_plan.setdefault(result["ref"]["plan_pk"], {}).update(result)
    errors_by_plan = {error["ref"]["plan_pk"]: error for error in errors if error}
    rows = []
    for item in items:
        ref = item["ref"]
        result = results_by_plan.get(ref["plan_pk"], {})
        error = errors_by_plan.get(ref["plan_pk"])
        if error:
            reason = f"{error['step'].rsplit('.', 1)[-1]}: {error['error']}"
        elif "omnitron" not in result:
            reason = "did not finish (see the plan's task instances)"
        else:
            reason = None
        rows.append(
            {
                "plan": ref["plan_pk"],
                "order": ref["order_number"],
                "relation": result.get("relation"),
                "omnitron": result.get("omnitron"),
                "error": reason,
            }
        )
    return RunSummary(rows)
