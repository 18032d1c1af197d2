"""Secrets stay in Airflow connections: after runs that log in to both sides (and one that fails to),
no password or token appears in the task logs, XComs, rendered fields, exception messages, anywhere
else in the metadata database, or in the plan ledger."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

from fakes import make_plan
from tests.conftest import ERP_PASSWORD, LEDGER_ENV, OMNITRON_PASSWORD

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
