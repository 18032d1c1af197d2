"""What a run does after its plans, called by the summary task: the alarms (a webhook or an e-mail
when the error rate or the run time crosses the flow's limits), the run's note in the UI (through
Airflow's REST API), and the plan ledger's retention."""

from __future__ import annotations

import html
import json
import logging
from typing import Any

import requests
from airflow.providers.http.notifications.http import HttpNotifier
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseHook, Variable
from airflow.sdk.exceptions import AirflowNotFoundException

from order_cancel.airflow import run_data
from order_cancel.airflow.ledger import forget_old_attempts
from order_cancel.airflow.rest_api import AIRFLOW_API_CONN_ID, AirflowApi
from order_cancel.flows.models import AlarmSettings, FlowConfig
from order_cancel.pipeline.report import RunReport, crossed, recent_run_times

log = logging.getLogger(__name__)


def after_run(context: Any, flow: FlowConfig, report: RunReport, *, dry_run: bool) -> None:
    """Alarms (not for a dry run), the run's note, the ledger's retention."""
    alarms = _raise_alarms(context, flow, report) if flow.alarms and not dry_run else []
    _leave_note(context, flow, report.note(alarms))
    forget_old_attempts()


def _raise_alarms(context: Any, flow: FlowConfig, report: RunReport) -> list[str]:
    settings = flow.alarms
    assert settings is not None
    key = run_data.run_seconds_variable(flow.flow_id)
    recent = recent_run_times(Variable.get(key, default=None), report.seconds, settings.average_over_runs)
    Variable.set(key, json.dumps(recent))
    alarms = crossed(settings, report, recent)
    if not alarms:
        return []
    payload = report.payload(flow.flow_id, context["run_id"], alarms)
    for alarm in alarms:
        log.warning("Alarm: %s", alarm)
    for notifier in _notifiers(flow.flow_id, settings, payload):
        try:
            # notify(), not the notifier's __call__: that would render plan data as Jinja templates.
            notifier.notify(context)
        except Exception as exc:
            log.error("Alarm not delivered by %s: %s", type(notifier).__name__, exc)
    return alarms


def _leave_note(context: Any, flow: FlowConfig, note: str) -> None:
    """The run's summary as its note in the UI, through Airflow's REST API (see rest_api)."""
    try:
        conn = BaseHook.get_connection(AIRFLOW_API_CONN_ID)
    except AirflowNotFoundException:
        log.info("No run note: the %r connection is not set", AIRFLOW_API_CONN_ID)
        return
    try:
        AirflowApi(conn).set_note(flow.flow_id, context["run_id"], note)
    except requests.RequestException as exc:
        log.warning("The run note was not set: %s", exc)


def _notifiers(flow_id: str, settings: AlarmSettings, payload: dict[str, Any]) -> list[Any]:
    notifiers: list[Any] = []
    if settings.webhook:
        notifiers.append(
            HttpNotifier(http_conn_id=settings.webhook.conn_id, endpoint=settings.webhook.endpoint, json=payload)
        )
    if settings.email:
        notifiers.append(
            SmtpNotifier(
                to=settings.email.to,
                subject=f"Order cancel flow {flow_id}: {'; '.join(payload['alarms'])}",
                html_content=f"<pre>{html.escape(json.dumps(payload, indent=2, ensure_ascii=False))}</pre>",
                smtp_conn_id=settings.email.conn_id,
            )
        )
    return notifiers
