"""Secrets stay in Airflow connections: after runs that log in to both sides (and one that fails to),
no password or token appears in the task logs, XComs, rendered fields, exception messages, anywhere
else in the metadata database, or in the plan ledger. Credentials in an ERP URL (its user info, an
`apikey=` parameter) are masked wherever the URL is kept."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
import yaml

from fakes import make_plan
from order_cancel.clients.erp import ErpClient
from order_cancel.clients.http import masked
from order_cancel.flows.loading import load_flow
from order_cancel.ledger.attempts import TaskTry, attempt_of
from order_cancel.pipeline.plan import RECORDS, PlanProgress, Stage, WorkItem
from order_cancel.pipeline.steps import PlanPipeline
from tests.conftest import ERP_PASSWORD, LEDGER_ENV, OMNITRON_PASSWORD
from tests.fake_clients import FakeClients
from tests.flow_runner import BASE_FLOW, merged

# The fakes issue tokens as "<kind>-<n>-<24 hex digits>".
TOKEN = re.compile(r"(omnitron|erp)-\d+-[0-9a-f]{24}")


def database_text(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def airflow_log_files_text() -> str:
    logs = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    return "\n".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()) if logs.exists() else ""


def test_no_password_or_token_is_left_anywhere(flows, omnitron, erp_servers, capfd, monkeypatch):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2)])
    erp.respond(match={"pk": 2}, status=401, body={"error": "expired"}, times=1)  # a re-login mid-run
    flows.write(write_erp={"custom_response": True}, post_script=None)
    assert flows.run().state == "success"
    monkeypatch.setenv(
        "AIRFLOW_CONN_OMNITRON_TEST",
        json.dumps(
            {"conn_type": "http", "host": omnitron.url, "login": "omnitron", "password": f"{OMNITRON_PASSWORD}-typo"}
        ),
    )
    failed = flows.run()
    assert failed.task("login").state == "failed"

    output = capfd.readouterr()
    places = {
        "task logs and console": output.out + output.err,
        "log files": airflow_log_files_text(),
        "metadata database (XCom, rendered fields, task instances, ...)": database_text(
            Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
        ),
        "plan ledger": database_text(Path(json.loads(os.environ[LEDGER_ENV])["host"])),
    }
    assert "429452102" in places["plan ledger"], "the ledger holds the run's plans"
    assert "refused the credentials of user 'omnitron'" in places["task logs and console"], "the login error is clear"
    for place, text in places.items():
        for secret in (OMNITRON_PASSWORD, ERP_PASSWORD):
            assert secret not in text, f"a password is in the {place}"
        assert not TOKEN.search(text), f"a token ({TOKEN.search(text).group(0)}) is in the {place}"
    assert len([r for r in erp.requests if r.path == "/api/auth/login"]) == 2, "the test did exercise two ERP logins"


def test_tls_verification_is_on_unless_the_connection_turns_it_off():
    from types import SimpleNamespace

    from order_cancel.clients.connection import base_url, tls_verify

    def conn(extra, **fields):
        defaults = {
            "conn_id": "c",
            "host": "https://omnitron.example",
            "port": None,
            "schema": None,
            "conn_type": "http",
        }
        return SimpleNamespace(extra_dejson=extra, **{**defaults, **fields})

    assert tls_verify(conn({})) is True
    assert tls_verify(conn({"verify": False})) is False
    assert tls_verify(conn({"verify": "false"})) is False
    assert tls_verify(conn({"verify": "/etc/ssl/acme-ca.pem"})) == "/etc/ssl/acme-ca.pem"
    assert base_url(conn({})) == "https://omnitron.example/"
    assert base_url(conn({}, host="127.0.0.1", port=8081)) == "http://127.0.0.1:8081/"
    assert base_url(conn({}, host="http://127.0.0.1/erp/", port=8082)) == "http://127.0.0.1:8082/erp/"


# -- credentials in URLs ----------------------------------------------------------------------------

URL_SECRET = "url-secret-42"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"https://erp:{URL_SECRET}@erp.example/api/x?order=5", "https://***@erp.example/api/x?order=5"),
        (f"/api/x?apikey={URL_SECRET}&id=1", "/api/x?apikey=***&id=1"),
        (f"/x?X-Amz-Signature={URL_SECRET}&access_token={URL_SECRET}#f", "/x?X-Amz-Signature=***&access_token=***#f"),
        (f"/x?client_secret={URL_SECRET}&password=&apiKey=a%20b", "/x?client_secret=***&password=***&apiKey=***"),
        (f"/x?sig={URL_SECRET}&author=me&design=2", "/x?sig=***&author=me&design=2"),
        (
            f"Max retries exceeded with url: /x?token={URL_SECRET} (Caused by NewConnectionError)",
            "Max retries exceeded with url: /x?token=*** (Caused by NewConnectionError)",
        ),
    ],
)
def test_credentials_in_a_url_are_masked(text, kept):
    assert masked(text) == kept


def erp_write_of(tmp_path: Path, base_url: str, *, dry_run: bool = False):
    """One plan through the ERP write with the real ERP client: its progress, its step records as
    JSON and its ledger row."""
    path = tmp_path / "flow.yaml"
    flow = merged(BASE_FLOW, {"erp": {"login": None}, "write_erp": {"url": f"/api/cancellations?apikey={URL_SECRET}"}})
    path.write_text(yaml.safe_dump(flow), encoding="utf-8")
    item = WorkItem.of(make_plan(3))
    erp = ErpClient(base_url, None, None, None, timeout=5)
    pipeline = PlanPipeline.build(load_flow(path), dry_run=dry_run)
    progress = pipeline.run_stage(Stage.WRITE_ERP, PlanProgress(ref=item.ref), FakeClients(erp=erp), item)  # type: ignore[arg-type]
    where = TaskTry(flow_id="acme_cancel", run_id="r", task_id="plan", map_index=0, try_number=1)
    return progress, RECORDS.dump_json(progress.records).decode(), attempt_of(where, progress, progress.records)


@pytest.mark.parametrize("dry_run", [False, True], ids=["sent", "dry-run"])
def test_credentials_in_the_erp_url_reach_neither_the_ledger_nor_the_records(tmp_path, erp_servers, dry_run):
    erp = erp_servers["none"]
    base_url = erp.url.replace("://", f"://erp:{URL_SECRET}@") + "/"

    progress, records, attempt = erp_write_of(tmp_path, base_url, dry_run=dry_run)

    assert len(erp.requests) == (0 if dry_run else 1)
    if not dry_run:
        assert erp.requests[0].query == {"apikey": URL_SECRET}, "the ERP still gets the credential"
        assert progress.delivery.relation == "continue"
    assert attempt.erp_request and "apikey=***" in attempt.erp_request and "://***@127.0.0.1" in attempt.erp_request
    for place, text in {"ledger row": attempt.model_dump_json(), "step records (XCom, logs)": records}.items():
        assert URL_SECRET not in text, f"the URL's credential is in the {place}"


def test_credentials_in_the_url_of_an_erp_that_does_not_answer_are_masked(tmp_path):
    progress, records, attempt = erp_write_of(tmp_path, f"http://erp:{URL_SECRET}@127.0.0.1:9/")

    assert progress.delivery.relation == "do_nothing" and "ConnectionError" in records
    assert URL_SECRET not in records and URL_SECRET not in attempt.model_dump_json()
