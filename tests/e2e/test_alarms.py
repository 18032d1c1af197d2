"""Alarms, as the Integrator has them: a run's error rate and the flow's average run time, sent
through the http provider's notifier to a webhook on 127.0.0.1; and the run report behind them."""

from __future__ import annotations

import json

from fakes import make_plan
from fakes.smtp import FakeSmtp
from order_cancel.flows.models import AlarmSettings
from order_cancel.pipeline.report import RunReport, crossed, recent_run_times
from tests.conftest import every_layout
from tests.flow_runner import variable

WEBHOOK = {"conn_id": "alerts", "endpoint": "/hooks/order-cancel"}


def hooks(receiver):
    return [r for r in receiver.requests if r.path == "/hooks/order-cancel"]


@every_layout
def test_an_error_rate_above_the_threshold_posts_the_alarm_to_the_webhook(flows, omnitron, erp_servers, monkeypatch):
    receiver = erp_servers["none"]
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2, 3, 4)])
    erp_servers["token"].respond(match={"pk": 2}, status=400, body={"error": "order shipped"})
    flows.write_file("scripts/s.py", "if get_attribute('plan_pk') == '3':\n    raise ValueError('no reason code')\n")
    flows.write(script="scripts/s.py", alarms={"error_rate": 0.5, "webhook": WEBHOOK})

    run = flows.run()

    assert run.state == "failed"
    [alarm] = hooks(receiver)
    assert alarm.method == "POST"
    assert alarm.body["flow_id"] == "acme_cancel" and alarm.body["run_id"] == run.run_id
    assert alarm.body["alarms"] == ["error rate 50% (2 of 4 plans) reached the threshold of 50%"]
    assert alarm.body["relations"] == {"continue": 2, "failure": 1, "error": 1}
    reasons = {failure["plan"]: failure["reason"] for failure in alarm.body["failures"]}
    assert reasons[2] == "the ERP refused it (rejected)"
    assert reasons[3].startswith("transform: ValueError: no reason code")


def test_an_alarm_is_mailed_where_smtp_is_configured(flows, omnitron, erp_servers, monkeypatch):
    smtp = FakeSmtp().start()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_SMTP_ALERTS",
            json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "airflow@acme.example"},
                }
            ),
        )
        omnitron.add_plans([make_plan(1, order_pk=101)])
        erp_servers["token"].respond(match={"pk": 1}, status=422, body={"error": "order shipped"})
        flows.write(alarms={"error_rate": 0.5, "email": {"to": ["ops@acme.example"], "conn_id": "smtp_alerts"}})

        assert flows.run().state == "success"

        [mail] = smtp.mails
        assert mail.recipients == ["ops@acme.example"] and mail.sender == "airflow@acme.example"
        assert (
            mail.message["Subject"]
            == "Order cancel flow acme_cancel: error rate 100% (1 of 1 plans) reached the threshold of 50%"
        )
        body = next(part for part in mail.message.walk() if part.get_content_type() == "text/html").get_payload(
            decode=True
        )
        assert b"the ERP refused it (rejected)" in body
    finally:
        smtp.stop()


def test_a_run_below_the_thresholds_sends_nothing(flows, omnitron, erp_servers, monkeypatch):
    receiver = erp_servers["none"]
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2)])
    flows.write(alarms={"error_rate": 0.5, "average_flow_time_seconds": 3600, "webhook": WEBHOOK})

    assert flows.run().state == "success"
    assert hooks(receiver) == []
    assert len(json.loads(variable("order_cancel.acme_cancel.run_seconds"))) == 1


def test_an_average_flow_time_above_the_threshold_raises_an_alarm(flows, omnitron, erp_servers, monkeypatch):
    receiver = erp_servers["none"]
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
    omnitron.add_plans([make_plan(1, order_pk=101)])
    flows.write(alarms={"average_flow_time_seconds": 0.001, "average_over_runs": 3, "webhook": WEBHOOK})

    flows.run()
    flows.run()

    assert len(hooks(receiver)) == 2
    assert hooks(receiver)[-1].body["alarms"][0].startswith("average flow time")
    assert "over the last 2 run(s)" in hooks(receiver)[-1].body["alarms"][0]


def test_the_run_report_and_thresholds():
    rows = [
        {"plan": 1, "order": "A", "relation": "continue", "omnitron": "approved", "error": None},
        {"plan": 2, "order": "B", "relation": "failure", "omnitron": "rejected", "error": None},
        {"plan": 3, "order": "C", "relation": None, "omnitron": None, "error": "transform: KeyError: 'x'"},
        {"plan": 4, "order": "D", "relation": "do_nothing", "omnitron": "untouched", "error": None},
    ]
    report = RunReport(rows, seconds=12.4)

    assert report.error_rate == 0.5
    assert report.note([]).splitlines() == [
        "**4 plan(s)** in 12 s: continue 1, do_nothing 1, error 1, failure 1",
        "- plan 2 · order B: the ERP refused it (rejected)",
        "- plan 3 · order C: transform: KeyError: 'x'",
    ]
    assert crossed(AlarmSettings(error_rate=0.6), report, [12.4]) == []
    assert crossed(AlarmSettings(average_flow_time_seconds=10), report, [5.0, 20.0]) == [
        "average flow time 12.5 s over the last 2 run(s) is above 10 s"
    ]
    assert recent_run_times("[1, 2, 3]", 4.0, keep=3) == [2, 3, 4.0]
    assert recent_run_times(None, 4.0, keep=3) == [4.0]
