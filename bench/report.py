"""The benchmark's results as markdown tables (printed, and written next to results.json)."""

from __future__ import annotations

from typing import Any


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def seconds(value: float) -> str:
    return f"{value:.2f}"


def ratio(value: float) -> str:
    return f"{value:.1f}x"


def parse_section(rows: list[dict[str, Any]]) -> list[str]:
    header = ["flow files", "DAGs", "order_cancel_flows.py s", "ms/flow", "cold s", "order_cancel_flow_errors.py s"]
    body = [
        [
            str(row["flow_files"]),
            str(row["dags"]),
            seconds(row["parse_s"]),
            f"{1000 * row['parse_s'] / row['flow_files']:.1f}",
            seconds(row["cold_parse_s"]),
            seconds(row["errors_file_s"]),
        ]
        for row in rows
    ]
    return [
        "## a) DAG parse time (DagBag(dag_folder=dags).dagbag_stats)",
        "",
        *table(header, body),
        "",
        "cold s: the flows file parsed alone in a fresh process, imports included, as a DAG processor parses",
        "each file in a fresh process; the other columns come after those imports. The errors file",
        "validates the same flow files again on every parse.",
    ]


def runs_section(rows: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> list[str]:
    header = [
        "mode",
        "plans",
        "run s",
        "peak RSS MB",
        "TIs",
        "TIs/plan",
        "ms/TI",
        "in tasks s",
        "no-op floor s",
        "vs no-op",
        "HTTP floor s",
        "vs HTTP",
        "script+mapping ms/plan",
    ]
    body = [
        [
            row["mode"],
            str(row["plans"]),
            seconds(row["run_s"]),
            f"{row['peak_rss_mb']:.0f}",
            str(row["task_instances"]),
            f"{row['tis_per_plan']:.2f}",
            f"{row['ms_per_ti']:.0f}",
            seconds(row["details"]["run"]["in_tasks_s"]),
            seconds(row["noop_s"]),
            ratio(row["vs_noop"]),
            seconds(row["http_s"]),
            ratio(row["vs_http"]),
            f"{row['transform_ms_per_plan']:.2f}",
        ]
        for row in rows
    ]
    body += [[row["mode"], str(row["plans"]), f"skipped: {row['note']}"] + [""] * (len(header) - 3) for row in skipped]
    return [
        "## b-e) One flow run with dag.test() against the fakes",
        "",
        *table(header, body),
        "",
        "run s: dag.test() wall time; in tasks s: the sum of the task instances' own durations (the rest is",
        "dag.test()'s work between them: its scheduling loop and state writes); no-op floor: a DAG of the",
        "same shape whose tasks do nothing; HTTP floor: the same Omnitron and ERP calls in a plain requests loop.",
    ]


def tasks_section(rows: list[dict[str, Any]]) -> list[str]:
    """Mean duration of each task's instances, for every run and its no-op twin: which task grows with N."""
    runs = [
        (f"{row['mode']}, {row['plans']} plans", row["details"][kind], kind) for row in rows for kind in ("run", "noop")
    ]
    if not runs:
        return []
    task_ids = list(dict.fromkeys(task_id for _, details, _ in runs for task_id in details["mean_ti_ms"]))
    header = ["run", "DAG", *task_ids, "list mapped over, MB"]
    body = [
        [
            label,
            "flow" if kind == "run" else "no-op",
            *(
                f"{details['mean_ti_ms'][task_id]:.0f}" if task_id in details["mean_ti_ms"] else "-"
                for task_id in task_ids
            ),
            f"{details['return_value_mb'].get('fetch_plans', 0):.2f}",
        ]
        for label, details, kind in runs
    ]
    return [
        "",
        "Mean task instance duration per task, ms (the first task also carries dag.test()'s one-time set-up):",
        "",
        *table(header, body),
    ]


def marginal_section(marginal: dict[str, dict[str, float]]) -> list[str]:
    if not marginal:
        return []
    lines = [
        "",
        "Cost of one more plan and of one more task instance (slope from the smallest to the largest run):",
        "",
    ]
    for mode, cost in marginal.items():
        lines.append(
            f"- {mode}, {cost['from_plans']} -> {cost['to_plans']} plans: {cost['ms_per_plan']:.0f} ms per plan "
            f"(no-op floor {cost['noop_ms_per_plan']:.0f}), {cost['ms_per_ti']:.0f} ms per TI "
            f"(no-op floor {cost['noop_ms_per_ti']:.0f})"
        )
    return lines


def goal_section(rows: list[dict[str, Any]]) -> list[str]:
    rows = [row for row in rows if "goal_s" in row]
    if not rows:
        return []
    lines = [
        "",
        "Batch mode against the issue's goal for 500 plans: 2 x the HTTP floor + one batch's Airflow",
        "overhead (the same DAG with one batch of no-op tasks, dag.test() set-up included), each the",
        "median of rounds measured alternately in this run:",
        "",
    ]
    for row in rows:
        verdict = "met" if row["goal_met"] else "not met"
        rounds = row["goal_rounds"]
        lines.append(
            f"- {row['mode']}, {row['plans']} plans: {seconds(row['goal_run_s'])} s; goal 2 x "
            f"{seconds(row['goal_http_s'])} + {seconds(row['one_batch_noop_s'])} = {seconds(row['goal_s'])} s: "
            f"{verdict} ({row['goal_run_s'] / row['goal_s']:.2f} of the goal)"
        )
        for name, key in (("run", "run_s"), ("HTTP floor", "http_s"), ("one batch no-op", "noop_s")):
            lines.append(f"  - {name}, s: {', '.join(seconds(value) for value in rounds[key])}")
    return lines


def baseline_section(rows: list[dict[str, Any]], baseline: str | None) -> list[str]:
    rows = [row for row in rows if "vs_baseline" in row]
    if not rows:
        return []
    lines = ["", f"Against the code of {baseline}, the same run alternately with each code (medians):", ""]
    for row in rows:
        runs = ", ".join(seconds(value) for value in row["current_runs_s"])
        theirs = ", ".join(seconds(value) for value in row["baseline_runs_s"])
        lines.append(
            f"- {row['mode']}, {row['plans']} plans: {seconds(row['current_s'])} s ({runs}) against "
            f"{seconds(row['baseline_s'])} s ({theirs}): {row['vs_baseline']:.2f}x"
        )
    return lines


def single_goal_section(rows: list[dict[str, Any]]) -> list[str]:
    rows = [row for row in rows if "vs_per_step" in row]
    return [
        line
        for row in rows
        for line in (
            "",
            f"The one-task-per-plan layout against the issue's goals for {row['plans']} plans, measured in this run:",
            "",
            f"- {seconds(row['run_s'])} s, {row['vs_per_step']:.2f}x the per-step layout's "
            f"{seconds(row['per_step_s'])} s (goal: at most 0.45x): {'met' if row['single_goal_met'] else 'not met'}",
            f"- {ratio(row['vs_noop'])} its no-op floor of one mapped task per plan, {seconds(row['noop_s'])} s "
            "(no goal here: Airflow's per-task cost is judged on the Celery stack, bench.celery_throughput)",
        )
    ]


def transform_section(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    largest = rows[-1]["details"]["transform"]
    return [
        "",
        f"Script + mapping over {rows[-1]['plans']} plans: script {largest['script_ms_per_plan']:.2f} ms (run in "
        f"the script's own process, the trip there and back included), mapping {largest['mapping_ms_per_plan']:.2f} "
        "ms per plan; starting the script's process, which a task's (or a batch thread's) first script run does: "
        f"{largest.get('script_process_ms', 0):.0f} ms; building the flow's steps (compile the scripts, build the "
        f"Jolt chain), which every per-plan task does: {largest['build_ms']:.2f} ms.",
    ]


def markdown(results: dict[str, Any]) -> str:
    machine, code = results["machine"], results["code"]
    uncommitted = f" + {len(code['uncommitted'])} uncommitted file(s)" if code["uncommitted"] else ""
    lines = [
        "# Order Cancel Flow benchmark",
        "",
        f"{results['date']} · `{results['command']}` · code {code['commit']}{uncommitted} · "
        f"{machine['nproc']} CPUs ({machine['cpu']}), "
        f"{machine['memory_gb']} GB · Python {machine['python']} · Airflow {machine['airflow']} · "
        f"total {seconds(results['total_s'])} s · load average {results['load_average']['before']:.1f} before, "
        f"{results['load_average']['after']:.1f} after",
        "",
        *parse_section(results["parse"]),
        "",
        *runs_section(results["runs"], results["skipped"]),
        *tasks_section(results["runs"]),
        *goal_section(results["runs"]),
        *baseline_section(results["runs"], results.get("baseline")),
        *single_goal_section(results["runs"]),
        *marginal_section(results["marginal"]),
        *transform_section(results["runs"]),
    ]
    return "\n".join(lines) + "\n"
