"""The demo: the preflight of every flow of include/flows, then each runs once through real Airflow
(SQLite, dag.test()) against the fake Omnitron and ERP on 127.0.0.1, then it prints what happened
to each plan.

Run it with `bin/demo`. The fakes listen on fixed ports (the example flows name the CRM URL), and
a few ERP answers are scripted so that every relation shows up.
"""

from __future__ import annotations

import os
import shutil
import sys

from devtools.airflow_env import ROOT, connection_json, use_local_airflow

DEMO_HOME = ROOT / ".airflow" / "demo"
OMNITRON_LOGIN, ERP_LOGIN = ("omnitron", "omnitron-pass"), ("erp", "erp-pass")


def prepare_airflow() -> None:
    shutil.rmtree(DEMO_HOME, ignore_errors=True)  # each demo starts from an empty metadata DB
    # Task logs at INFO would bury the report; warnings and errors (a failed plan) still show.
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    use_local_airflow(DEMO_HOME)
    os.environ["ORDER_CANCEL_FLOWS_DIR"] = str(ROOT / "include" / "flows")


def start_fakes():
    from fakes import DEMO_ERP_PORT, DEMO_OMNITRON_PORT, FakeErp, FakeOmnitron, demo_dataset

    omnitron = FakeOmnitron(users=dict([OMNITRON_LOGIN]), port=DEMO_OMNITRON_PORT).start()
    erp = FakeErp(auth="token", username=ERP_LOGIN[0], password=ERP_LOGIN[1], port=DEMO_ERP_PORT).start()
    plans, transactions = demo_dataset(24)
    omnitron.add_plans(plans)
    omnitron.add_order_transactions(transactions)
    # Show every relation: the ERP rejects plan 4, is down for plan 11, once refuses our token on
    # plan 14, and already has plan 16 (a duplicate, which the response script accepts).
    erp.respond(match={"cancellationId": 4}, status=422, body={"status": "rejected", "error": "order already shipped"})
    erp.respond(match={"cancellationId": 11}, status=503, body={"error": "maintenance"})
    erp.respond(match={"cancellationId": 14}, status=401, body={"error": "token expired"}, times=1)
    erp.respond(match={"cancellationId": 16}, status=409, body={"status": "duplicate"})
    os.environ["AIRFLOW_CONN_OMNITRON_DEMO"] = connection_json(omnitron.url, *OMNITRON_LOGIN)
    os.environ["AIRFLOW_CONN_ERP_DEMO"] = connection_json(erp.url, *ERP_LOGIN)
    return omnitron, erp


def preflight_flows() -> bool:
    """`python -m order_cancel preflight` of each flow, as a team runs it before the first real run;
    True when no assumption is broken."""
    from order_cancel.cli import main as order_cancel
    from order_cancel.flows.loading import load_flows

    flows, _ = load_flows()
    codes = []
    for flow_id in sorted(flow.flow_id for flow in flows):
        print(f"$ python -m order_cancel preflight {flow_id}", flush=True)
        codes.append(order_cancel(["preflight", flow_id]))
        print()
    return not any(codes)


def run_flows() -> list[tuple[str, str, list[dict]]]:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils import db
    from airflow.utils.session import create_session

    from order_cancel.airflow.run_data import SUMMARY_KEY, SUMMARY_TASK

    db.initdb()
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    for path, error in bag.import_errors.items():
        print(f"Broken flow files reported by {path}:\n{error}", file=sys.stderr)
    outcomes = []
    for dag_id in sorted(bag.dags):
        print(f"Running {dag_id} ...", flush=True)
        dag_run = bag.dags[dag_id].test()
        with create_session() as session:
            row = (
                session.query(XComModel)
                .filter_by(dag_id=dag_id, run_id=dag_run.run_id, task_id=SUMMARY_TASK, key=SUMMARY_KEY)
                .first()
            )
            outcomes.append((dag_id, str(dag_run.state), XComModel.deserialize_value(row) if row else []))
    return outcomes


def print_report(outcomes: list[tuple[str, str, list[dict]]], omnitron) -> None:
    header = ("flow", "plan", "order", "relation", "omnitron outcome", "plan status now", "error")
    table = [header]
    for dag_id, _, rows in outcomes:
        for row in rows:
            status = omnitron.plans.get(row["plan"], {}).get("status", "-")
            table.append((dag_id, row["plan"], row["order"], row["relation"], row["omnitron"], status, row["error"]))
    cells = [[("-" if value is None else str(value)) for value in line] for line in table]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    print()
    for index, line in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print()
    for dag_id, state, rows in outcomes:
        print(f"{dag_id}: run {state}, {len(rows)} plan(s)")


def print_ledger() -> None:
    from order_cancel.ledger.location import from_environment
    from order_cancel.ledger.store import Ledger, Search

    settings = from_environment()
    attempts = Ledger.open(settings.url.render_as_string()).find(Search(limit=None))
    print(f"Plan ledger (every attempt at every plan): {settings.url.database}, {len(attempts)} attempt(s)")
    print(
        "A plan's history, e.g. the one the ERP was down for:\n"
        f"  AIRFLOW_HOME={DEMO_HOME.relative_to(ROOT)} .venv/bin/python -m order_cancel history --order 429453011"
    )


def main() -> int:
    prepare_airflow()
    omnitron, erp = start_fakes()
    try:
        preflights_hold = preflight_flows()
        outcomes = run_flows()
        print_report(outcomes, omnitron)
        crm_calls = [request for request in erp.requests if request.path == "/api/crm/notify"]
        print(f"CRM notifications sent by the post script: {len(crm_calls)}")
        print(f"Airflow home of this demo (SQLite, logs): {DEMO_HOME}")
        print_ledger()
    finally:
        omnitron.stop()
        erp.stop()
    return 0 if preflights_hold and outcomes and all(state == "success" for _, state, _ in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
