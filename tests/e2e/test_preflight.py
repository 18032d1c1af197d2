"""`python -m order_cancel preflight FLOW_ID`, run as users run it (a subprocess) against the fakes on
127.0.0.1: every assumption holds against the fakes as the reference describes Omnitron, each
switch that makes the fake Omnitron (or ERP) answer otherwise breaks the right one (exit 1), and
no run writes anything: the only requests that are not GETs are the logins."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable

import pytest

from devtools.airflow_env import connection_json
from fakes.data import demo_dataset
from fakes.omnitron import PLANS, TRANSACTIONS
from tests.conftest import ERP_PASSWORD, ERP_USER, OMNITRON_PASSWORD, OMNITRON_USER
from tests.e2e.test_cli import FLOWS, cli, write, write_flow

LOGINS = ("/api/v1/auth/login/", "/api/auth/login")
ERP_LOGIN = {"type": "token", "url": "/api/auth/login", "token_path": "access_token", "prefix": "Bearer"}
# One flow per kind of list: plan statuses, the completed watermark, order transactions.
FLOWS_OF_EACH_KIND = {
    "acme_waiting": {
        "get_data": {"channel_type": "web", "cancel_status": "waiting", "channel_ids": [1, 2], "page_size": 4},
        "write_erp": {"url": "/api/cancellations", "query_check": {"url": "/api/cancellations/{pk}"}},
    },
    "acme_completed": {"get_data": {"channel_type": "web", "cancel_status": "completed"}},
    "acme_transactions": {
        "get_data": {"channel_type": "web", "cancel_type": "refund", "cancel_status": "order_transaction"},
    },
}
COMMON = {
    "script": "scripts/enrich_plan.py",
    "mapping": "mappings/erp_cancel.json",
    "erp": {"conn_id": "erp_test", "login": ERP_LOGIN},
}
ASSUMPTIONS = [
    "Omnitron login answers a token",
    "calls carry 'Authorization: Token <key>'",
    "lists answer count, next and results",
    "limit sets the page size",
    "ordering=modified_date sorts lists",
    "filter order_id honoured",
    "filter pk__in honoured",
]
PLAN_ASSUMPTIONS = [
    "plans have the fields the flow reads",
    "a plan can be read by its pk",
    "the rejected_count query answers a count",
]
EXPECTED = {
    "acme_waiting": [
        *ASSUMPTIONS,
        "filter status=waiting honoured",
        "filter channel_type=web honoured",
        "filter channel_id__in=1,2 honoured",
        *PLAN_ASSUMPTIONS,
        "Omnitron knows the statuses waiting, approved, rejected",
        "script and mapping run on the first 5 plans",
        "ERP login answers a token",
        "the query check finds no plan that cannot exist",
    ],
    "acme_completed": [
        *ASSUMPTIONS,
        "filter status=completed honoured",
        "filter channel_type=web honoured",
        "filter modified_date__gte honoured",
        "filter modified_date__lt honoured",
        "filter modified_date__lte honoured",
        *PLAN_ASSUMPTIONS,
        "Omnitron knows the statuses completed, rejected",
        "script and mapping run on the first 5 plans",
        "ERP login answers a token",
    ],
    "acme_transactions": [
        *ASSUMPTIONS,
        "filter plan_type=refund honoured",
        *PLAN_ASSUMPTIONS,
        "Omnitron knows the statuses rejected",
        "transaction filter transaction_type honoured",
        "transaction filter channel_type honoured",
        "transaction filter pk honoured",
        "transaction filter integration_mapping__isnull honoured",
        "transactions lead to their order ('order')",
        "a transaction can be read by its pk",
        "script and mapping run on the first 5 plans",
        "ERP login answers a token",
    ],
}


@pytest.fixture
def preflight(tmp_path, omnitron, erp_servers) -> Callable[..., tuple[int, dict[str, tuple[str, str]], str]]:
    """Runs the preflight of one of FLOWS_OF_EACH_KIND against the fakes loaded with the demo data;
    answers the exit code, each assumption's (verdict, evidence), and the whole output."""
    plans, transactions = demo_dataset(24)
    omnitron.add_plans(plans)
    omnitron.add_order_transactions(transactions)
    folder = tmp_path / "flows"
    for kind in ("scripts", "mappings"):
        shutil.copytree(FLOWS / kind, folder / kind)
    for flow_id, fields in FLOWS_OF_EACH_KIND.items():
        write_flow(folder, flow_id, **COMMON, **fields)
    connections = {
        "AIRFLOW_CONN_OMNITRON_TEST": connection_json(omnitron.url, OMNITRON_USER, OMNITRON_PASSWORD),
        "AIRFLOW_CONN_ERP_TEST": connection_json(erp_servers["token"].url, ERP_USER, ERP_PASSWORD),
    }

    def run(flow_id: str, *arguments: str, env: dict[str, str] | None = None):
        environment = {"ORDER_CANCEL_FLOWS_DIR": str(folder), **connections, **(env or {})}
        result = cli("preflight", flow_id, *arguments, env=environment)
        output = result.stdout + result.stderr
        return result.returncode, table(result.stdout) if result.stdout else {}, output

    return run


def table(stdout: str) -> dict[str, tuple[str, str]]:
    header, *rows, _ = stdout.splitlines()
    assert [cell.strip() for cell in header.split(" | ")] == ["assumption", "verdict", "evidence"]
    cells = [[cell.strip() for cell in row.split(" | ", 2)] for row in rows]
    return {assumption: (verdict, evidence) for assumption, verdict, evidence in cells}


@pytest.fixture
def nothing_written(omnitron, erp_servers):
    """After the test: the fakes received no request but reads and logins."""
    yield
    requests = omnitron.requests + [request for server in erp_servers.values() for request in server.requests]
    assert [(r.method, r.path) for r in requests if r.method != "GET" and r.path not in LOGINS] == []


@pytest.mark.parametrize("flow_id", list(FLOWS_OF_EACH_KIND))
def test_every_assumption_holds_against_the_fakes(preflight, flow_id, nothing_written, omnitron, erp_servers):
    code, findings, output = preflight(flow_id)

    assert code == 0, output
    assert list(findings) == EXPECTED[flow_id]
    assert {verdict for verdict, _ in findings.values()} == {"holds"}, output
    assert (
        output.splitlines()[-1]
        == f"{flow_id}: {len(findings)} holds, 0 broken, 0 could not check (nothing was written)"
    )
    # Secrets never printed: neither the passwords nor the tokens the logins got.
    tokens = {
        r.headers.get("Authorization", "").split(" ")[-1] for r in omnitron.requests + erp_servers["token"].requests
    }
    for secret in {OMNITRON_PASSWORD, ERP_PASSWORD} | (tokens - {""}):
        assert secret not in output


def test_the_evidence_of_a_flow_whose_assumptions_hold(preflight, nothing_written):
    _, findings, _ = preflight("acme_waiting")

    assert findings["limit sets the page size"][1] == "limit=5 over 24 plans gave pages of [5, 5, 5]"
    assert findings["filter status=waiting honoured"][1] == (
        "status=preflight-no-such-value, which nothing has, lists nothing; the 6 plan(s) listed match it"
    )
    assert findings["script and mapping run on the first 5 plans"][1].endswith(": transformed, nothing sent")
    assert findings["the query check finds no plan that cannot exist"][1].endswith(
        "/api/cancellations/0 (every field 0) answered 404: not found, so plans are sent"
    )


def test_the_script_runs_on_as_many_plans_as_asked(preflight, nothing_written):
    _, findings, _ = preflight("acme_waiting", "--plans", "2")

    verdict, evidence = findings["script and mapping run on the first 2 plans"]
    assert verdict == "holds"
    assert evidence == "plan 1 · order 429453001, plan 4 · order 429453004: transformed, nothing sent"


# Each switch of the fakes, the flow, the assumption it breaks, and words of the evidence. A switch
# may answer connections for the flow instead (a wrong password).
BROKEN = {
    "ordering_ignored": (
        lambda omnitron, erp: setattr(omnitron, "ordering_param", None),
        "acme_completed",
        "ordering=modified_date sorts lists",
        "ordering=-modified_date listed plan 1 (modified 2023-02-07T08:01:00.004321Z) before plan 2 "
        "(modified 2023-02-07T08:02:00.008642Z); nor does sort=modified_date",
    ),
    "ordering_by_sort": (
        lambda omnitron, erp: setattr(omnitron, "ordering_param", "sort"),
        "acme_waiting",
        "ordering=modified_date sorts lists",
        "; sort=modified_date does (ORDERING_PARAM in clients/omnitron.py)",
    ),
    "status_filter_ignored": (
        lambda omnitron, erp: omnitron.ignored_filters.add("status"),
        "acme_waiting",
        "filter status=waiting honoured",
        "plan 2 was listed but does not match it",
    ),
    "channel_type_filter_ignored": (
        lambda omnitron, erp: omnitron.ignored_filters.add("channel_type"),
        "acme_waiting",
        "filter channel_type=web honoured",
        "channel_type=preflight-no-such-value, which nothing has, still lists 24 plan(s): the filter is ignored",
    ),
    "order_id_filter_ignored": (
        lambda omnitron, erp: omnitron.ignored_filters.add("order_id"),
        "acme_transactions",
        "filter order_id honoured",
        "order_id=0, which nothing has, still lists 24 plan(s)",
    ),
    "watermark_filter_ignored": (
        lambda omnitron, erp: omnitron.ignored_filters.add("modified_date__gte"),
        "acme_completed",
        "filter modified_date__gte honoured",
        "modified_date__gte=2999-01-01T00:00:00Z, which nothing has, still lists 24 plan(s)",
    ),
    "transaction_type_filter_ignored": (
        lambda omnitron, erp: omnitron.ignored_filters.add("transaction_type"),
        "acme_transactions",
        "transaction filter transaction_type honoured",
        "transaction_type=preflight-no-such-value, which nothing has, still lists 6 transaction(s)",
    ),
    "mapping_filter_ignored": (
        lambda omnitron, erp: omnitron.ignored_filters.add("integration_mapping__isnull"),
        "acme_transactions",
        "transaction filter integration_mapping__isnull honoured",
        "6 unmapped and 6 mapped of 6 transactions",
    ),
    "plan_field_omitted": (
        lambda omnitron, erp: omnitron.omit_field(PLANS, "order.number"),
        "acme_waiting",
        "plans have the fields the flow reads",
        "plan 1 has no order.number",
    ),
    "transaction_order_omitted": (
        lambda omnitron, erp: omnitron.omit_field(TRANSACTIONS, "order"),
        "acme_transactions",
        "transactions lead to their order ('order')",
        "transaction 5007 shows pk, amount, transaction_type, integration_mapping, modified_date: "
        "no order pk in 'order'",
    ),
    "status_unknown": (
        lambda omnitron, erp: omnitron.plan_statuses.remove("approved"),
        "acme_waiting",
        "Omnitron knows the statuses waiting, approved, rejected",
        "lists waiting, confirmed, completed, confirmation_waiting, rejected: not approved",
    ),
    "token_refused": (
        lambda omnitron, erp: omnitron.add_fault(
            "GET", r"^/api/v1/", status=401, body={"detail": "Invalid token."}, times=None
        ),
        "acme_waiting",
        "calls carry 'Authorization: Token <key>'",
        "Omnitron GET /api/v1/cancellation_plans/ answered HTTP 401",
    ),
    "page_without_count": (
        lambda omnitron, erp: omnitron.add_fault(
            "GET", r"^/api/v1/cancellation_plans/$", status=200, body={"next": None, "results": []}, times=None
        ),
        "acme_waiting",
        "lists answer count, next and results",
        "page 1 of GET /api/v1/cancellation_plans/ has only ['next', 'results']",
    ),
    "page_without_results": (
        lambda omnitron, erp: omnitron.add_fault(
            "GET", r"^/api/v1/cancellation_plans/$", status=200, body=[{"pk": 1}], times=None
        ),
        "acme_waiting",
        "lists answer count, next and results",
        "Omnitron GET /api/v1/cancellation_plans/ answered a page without a results list",
    ),
    "limit_ignored": (
        lambda omnitron, erp: omnitron.add_fault(
            "GET",
            r"^/api/v1/cancellation_plans/$",
            status=200,
            body={"count": 24, "next": None, "results": [{"pk": pk} for pk in range(1, 25)]},
            times=None,
        ),
        "acme_waiting",
        "limit sets the page size",
        "limit=5 over 24 plans gave pages of [24], not [5, 5, 5]",
    ),
    "retrieve_refused": (
        lambda omnitron, erp: omnitron.add_fault(
            "GET", r"^/api/v1/cancellation_plans/\d+/$", status=404, body={"detail": "Not found."}, times=None
        ),
        "acme_waiting",
        "a plan can be read by its pk",
        "Omnitron GET /api/v1/cancellation_plans/1/ answered HTTP 404",
    ),
    "erp_login_refused": (
        lambda omnitron, erp: {"AIRFLOW_CONN_ERP_TEST": connection_json(erp.url, ERP_USER, "wrong-password")},
        "acme_waiting",
        "ERP login answers a token",
        "/api/auth/login refused user 'erp' (HTTP 401)",
    ),
    "query_check_finds_everything": (
        lambda omnitron, erp: erp.respond(
            path=r"/api/cancellations/.*", method="GET", status=200, body={"id": "ERP-1"}
        ),
        "acme_waiting",
        "the query check finds no plan that cannot exist",
        "/api/cancellations/0 (every field 0) answered 200, read as 'the ERP has it': no plan would ever be sent",
    ),
    "query_check_without_decision": (
        lambda omnitron, erp: erp.respond(path=r"/api/cancellations/.*", method="GET", status=503),
        "acme_waiting",
        "the query check finds no plan that cannot exist",
        "answered 503: no decision, so every plan would wait for a later run",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_switch_breaks_its_assumption(preflight, case, omnitron, erp_servers, nothing_written):
    switch, flow_id, assumption, words = BROKEN[case]
    connections = switch(omnitron, erp_servers["token"])

    code, findings, output = preflight(flow_id, env=connections)

    assert code == 1, output
    verdict, evidence = findings[assumption]
    assert verdict == "broken", output
    assert words in evidence
    assert f"{flow_id}: " in output.splitlines()[-1] and "(nothing was written)" in output.splitlines()[-1]


def test_a_transaction_without_its_order_breaks_the_script_row_too(preflight, omnitron, nothing_written):
    omnitron.omit_field(TRANSACTIONS, "order", pks=[5011])

    code, findings, _ = preflight("acme_transactions")

    assert code == 1
    assert findings["transactions lead to their order ('order')"][0] == "broken"
    verdict, evidence = findings["script and mapping run on the first 5 plans"]
    assert verdict == "broken"
    assert evidence.startswith(
        "order transaction 5011: script: PlanDataError: order transaction 5011: its field 'order', the pk of its "
        "order, is missing: its cancellation plans cannot be found"
    )


def test_a_script_that_fails_on_a_real_plan_names_it(preflight, tmp_path, nothing_written):
    script = "if get_attribute('plan_pk') == '4':\n    raise KeyError('erp_code')\noutputStream.write(input_text)\n"
    write(tmp_path / "flows" / "scripts" / "enrich_plan.py", script)

    code, findings, _ = preflight("acme_waiting")

    assert code == 1
    assert findings["script and mapping run on the first 5 plans"] == (
        "broken",
        f"plan 4 · order 429453004: script: KeyError: 'erp_code' ({tmp_path}/flows/scripts/enrich_plan.py:2)",
    )


def test_a_wrong_omnitron_password_leaves_the_rest_of_omnitron_unchecked(preflight, omnitron, nothing_written):
    wrong = connection_json(omnitron.url, OMNITRON_USER, "wrong-password")

    code, findings, output = preflight("acme_waiting", env={"AIRFLOW_CONN_OMNITRON_TEST": wrong})

    assert code == 1
    assert findings["Omnitron login answers a token"] == (
        "broken",
        f"Omnitron login at {omnitron.url}/ refused the credentials of user 'omnitron' (HTTP 400)",
    )
    assert findings["the other Omnitron assumptions"] == ("could not check", "nothing can be read without a login")
    assert findings["script and mapping run on the first 5 plans"] == (
        "could not check",
        "no plan to try: no Omnitron login",
    )
    assert findings["ERP login answers a token"][0] == "holds"
    assert "wrong-password" not in output


def test_an_omnitron_that_does_not_answer_is_broken(preflight):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"

    code, findings, _ = preflight("acme_waiting", env={"AIRFLOW_CONN_OMNITRON_TEST": connection_json(url, "a", "b")})

    assert code == 1
    assert findings["Omnitron login answers a token"] == (
        "broken",
        f"Omnitron POST failed: ConnectionError at {url}/api/v1/auth/login/ (connection refused)",
    )


def test_a_flow_or_a_connection_that_is_not_there_is_one_line(preflight):
    assert preflight("acme_nowhere")[::2] == (2, "error: no flow 'acme_nowhere' in the flows folder\n")
    assert preflight("acme_waiting", env={"AIRFLOW_CONN_ERP_TEST": ""})[::2] == (
        2,
        "error: connection 'erp_test' is not set: export AIRFLOW_CONN_ERP_TEST as for Airflow\n",
    )
