"""The fault matrix: the faults a production integration meets, end to end through Airflow against
the fakes. Each test asserts the final state of every plan and what Omnitron and the ERP received:
nothing is reported to Omnitron as done unless the ERP accepted it, and nothing is booked twice."""

from __future__ import annotations

import pytest

from fakes import make_plan
from tests.conftest import every_layout
from tests.flow_runner import ROOT

APPROVE = "/api/v1/orders/{order}/cancellation_approved_order/"
PLANS = "/api/v1/cancellation_plans/"
# Retries without waiting, so that Airflow's retry path runs inside the test's time.
RETRYING = {"retries": 2, "retry_delay_seconds": 0}
EXAMPLES = ROOT / "include" / "flows"


def sent(erp) -> list[int]:
    return sorted(r.body["pk"] for r in erp.requests if r.path == "/api/cancellations")


def statuses(omnitron, *pks) -> dict[int, str]:
    return {pk: omnitron.plans[pk]["status"] for pk in pks}


def writes(omnitron) -> list[str]:
    return [r.path for r in omnitron.requests if r.method == "POST" and "auth/login" not in r.path]


@pytest.fixture
def three_plans(omnitron):
    omnitron.add_plans([make_plan(pk, order_pk=100 + pk) for pk in (1, 2, 3)])


@every_layout
# -- Omnitron ------------------------------------------------------------------------------------
def test_omnitron_5xx_on_the_list_is_retried_then_succeeds(flows, omnitron, erp_servers, three_plans):
    omnitron.add_fault("GET", PLANS, status=503, times=2)
    flows.write(**RETRYING)

    run = flows.run()

    assert run.state == "success"
    assert len([r for r in omnitron.requests if r.path == PLANS]) == 3
    assert statuses(omnitron, 1, 2, 3) == {1: "approved", 2: "approved", 3: "approved"}


@every_layout
@pytest.mark.parametrize("fault", [{"status": 500}, {"delay": 1.5}], ids=["5xx", "timeout"])
def test_omnitron_list_failing_for_good_fails_the_run_without_touching_a_plan(
    flows, omnitron, erp_servers, three_plans, fault
):
    omnitron.add_fault("GET", PLANS, times=None, **fault)
    flows.write(**RETRYING, omnitron={"timeout_seconds": 0.5})

    run = flows.run()

    assert run.state == "failed"
    assert run.task("fetch_plans").state == "failed"
    assert len([r for r in omnitron.requests if r.path == PLANS]) == 3, "one try and two retries"
    assert sent(erp_servers["token"]) == [] and writes(omnitron) == []
    assert statuses(omnitron, 1, 2, 3) == {1: "waiting", 2: "waiting", 3: "waiting"}


@pytest.mark.parametrize(
    "raw_body",
    [
        b'{"count": 3, "next": null, "results": [{"pk": 1',
        b"<html>502 Bad Gateway</html>",
        b'{"count": 3, "results": "\xff\xfe"}',
    ],
    ids=["truncated", "html", "not-utf8"],
)
def test_a_malformed_page_fails_the_fetch_cleanly(flows, omnitron, erp_servers, three_plans, raw_body):
    omnitron.add_fault("GET", PLANS, status=200, raw_body=raw_body, times=None)
    flows.write()

    run = flows.run()

    assert run.state == "failed" and run.task("fetch_plans").state == "failed"
    assert sent(erp_servers["token"]) == [] and writes(omnitron) == []


@every_layout
def test_an_omnitron_token_expiring_mid_run_is_renewed(flows, omnitron, erp_servers, three_plans):
    omnitron.token_max_uses = 3
    flows.write()

    run = flows.run()

    assert run.state == "success"
    logins = [r for r in omnitron.requests if r.path == "/api/v1/auth/login/"]
    assert len(logins) >= 2
    assert statuses(omnitron, 1, 2, 3) == {1: "approved", 2: "approved", 3: "approved"}
    omnitron.token_max_uses = None


@every_layout
def test_a_5xx_on_the_update_is_retried_without_calling_the_erp_again(flows, omnitron, erp_servers, three_plans):
    erp = erp_servers["token"]
    omnitron.add_fault("POST", APPROVE.format(order=102), status=502, times=2)
    flows.write(**RETRYING)

    run = flows.run()

    assert run.state == "success"
    assert sent(erp) == [1, 2, 3], "the ERP got plan 2 once, although its Omnitron update ran three times"
    assert writes(omnitron).count(APPROVE.format(order=102)) == 3
    assert statuses(omnitron, 1, 2, 3) == {1: "approved", 2: "approved", 3: "approved"}


@every_layout
def test_an_update_whose_answer_was_lost_after_it_took_effect_is_not_written_again(
    flows, omnitron, erp_servers, three_plans
):
    omnitron.add_fault("POST", APPROVE.format(order=102), apply=True, drop_connection=True)
    flows.write(**RETRYING)

    run = flows.run()

    assert run.state == "success"
    assert writes(omnitron).count(APPROVE.format(order=102)) == 1, "Omnitron approved plan 2 once"
    assert sorted(write["plan"] for write in omnitron.writes) == [1, 2, 3]
    assert [r.path for r in omnitron.requests if r.method == "GET" and r.path != PLANS] == [f"{PLANS}2/"]
    assert run.summary[2]["omnitron"] == "already written (found approved in Omnitron)"
    assert run.summary[1]["omnitron"] == run.summary[3]["omnitron"] == "approved"
    assert sent(erp_servers["token"]) == [1, 2, 3]


@every_layout
# -- ERP -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer",
    [{"drop_connection": True}, {"delay": 1.5}, {"status": 503}, {"status": 429, "headers": {"Retry-After": "120"}}],
    ids=["connection-dropped", "timeout", "5xx", "429-retry-after"],
)
def test_an_erp_that_does_not_accept_leaves_the_plan_for_a_later_run(flows, omnitron, erp_servers, three_plans, answer):
    erp = erp_servers["token"]
    erp.respond(match={"pk": 2}, **answer)
    flows.write(erp={"timeout_seconds": 0.5})

    run = flows.run()

    assert run.state == "success"
    assert run.summary[2]["relation"] == "do_nothing"
    assert statuses(omnitron, 1, 2, 3) == {1: "approved", 2: "waiting", 3: "approved"}
    assert APPROVE.format(order=102) not in writes(omnitron)


@every_layout
def test_an_erp_refusing_connections_leaves_every_plan_untouched(
    flows, omnitron, erp_servers, three_plans, monkeypatch
):
    closed = erp_servers["none"]
    url = closed.url
    closed.stop()  # nothing listens on that port any more
    try:
        monkeypatch.setenv("AIRFLOW_CONN_ERP_DOWN", f'{{"conn_type": "http", "host": "{url}"}}')
        flows.write(erp={"conn_id": "erp_down", "login": None})

        run = flows.run()

        assert run.state == "success"
        assert {row["relation"] for row in run.summary.values()} == {"do_nothing"}
        assert writes(omnitron) == []
        assert all(run.final(pk)["error"] == "ConnectionError" for pk in (1, 2, 3))
    finally:
        closed.start()


@every_layout
def test_a_non_json_erp_answer_is_kept_as_text(flows, omnitron, erp_servers, three_plans):
    erp = erp_servers["token"]
    erp.respond(match={"pk": 1}, status=200, raw_body=b"OK booked", headers={"Content-Type": "text/plain"})
    flows.write()

    run = flows.run()

    assert run.summary[1]["relation"] == "continue"
    assert run.final(1)["response_data"] == "OK booked"


@every_layout
def test_a_huge_erp_answer_is_cut_in_memory_and_in_xcom(flows, omnitron, erp_servers, three_plans):
    erp = erp_servers["token"]
    erp.respond(match={"pk": 1}, status=201, raw_body=b'{"id": "ERP-1", "log": "' + b"x" * 5_000_000 + b'"}')
    flows.write()

    run = flows.run()

    delivered = run.final(1)
    assert delivered["relation"] == "continue"
    assert len(delivered["response_data"]) <= 256 * 1024
    assert omnitron.plans[1]["status"] == "approved"


@every_layout
def test_a_retried_erp_write_carries_the_same_idempotency_key_and_books_once(
    flows, omnitron, erp_servers, three_plans, monkeypatch
):
    """The ERP booked plan 2, then the task died before it could record that (as when a worker is
    killed mid-write); Airflow retries the task, which sends plan 2 again with the same key."""
    from order_cancel.clients.erp import ErpClient

    erp = erp_servers["token"]
    real_send, crashed = ErpClient.send, []

    def send_then_die_once(self, method, url, body, headers=None):
        answer = real_send(self, method, url, body, headers)
        if body["pk"] == 2 and not crashed:
            crashed.append(answer.status_code)
            raise ConnectionResetError("worker lost after the ERP answered")
        return answer

    monkeypatch.setattr(ErpClient, "send", send_then_die_once)
    flows.write(**RETRYING)

    run = flows.run()

    assert run.state == "success" and crashed == [201]
    plan_2 = [r for r in erp.requests if r.path == "/api/cancellations" and r.body["pk"] == 2]
    assert len(plan_2) == 2 and plan_2[0].headers["Idempotency-Key"] == plan_2[1].headers["Idempotency-Key"]
    assert len(erp.bookings) == 3, "three plans, three bookings: the ERP recognised the replay"
    assert statuses(omnitron, 1, 2, 3) == {1: "approved", 2: "approved", 3: "approved"}


@every_layout
def test_a_later_run_resending_a_plan_uses_the_same_key(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    omnitron.add_plans([make_plan(1, order_pk=101)])
    erp.respond(match={"pk": 1}, status=201, drop_connection=True, times=1)  # booked? we never heard back
    flows.write()
    flows.run()
    flows.run()

    keys = [r.headers["Idempotency-Key"] for r in erp.requests if r.path == "/api/cancellations"]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert omnitron.plans[1]["status"] == "approved"


@every_layout
# -- Input ---------------------------------------------------------------------------------------
def test_a_plan_missing_fields_fails_alone(flows, omnitron, erp_servers, three_plans):
    broken = make_plan(4, order_pk=104)
    del broken["cancellationplanorderitem_set"]
    omnitron.add_plans([broken])
    flows.write_file("scripts/nifi.py", (EXAMPLES / "scripts/nifi_style_transform.py").read_text(encoding="utf-8"))
    flows.write(script="scripts/nifi.py")

    run = flows.run()

    assert run.state == "failed"
    assert run.summary[4]["error"] == "transform: PlanDataError: the script transferred the plan to REL_FAILURE"
    assert statuses(omnitron, 1, 2, 3, 4) == {1: "approved", 2: "approved", 3: "approved", 4: "waiting"}
    assert sorted(
        r.body["cancellation_id"] for r in erp_servers["token"].requests if r.path == "/api/cancellations"
    ) == [1, 2, 3]


def test_turkish_text_travels_unchanged(flows, omnitron, erp_servers):
    erp = erp_servers["token"]
    plan = make_plan(1, order_pk=101)
    plan["reason"]["subject"] = "Yanlış ürün aldım; çok üzgünüm — İade ☹"
    omnitron.add_plans([plan])
    flows.write()

    run = flows.run()

    [request] = [r for r in erp.requests if r.path == "/api/cancellations"]
    assert request.body["reason"]["subject"] == "Yanlış ürün aldım; çok üzgünüm — İade ☹"
    assert run.state == "success"


@every_layout
def test_a_script_that_loops_forever_is_stopped_and_fails_its_plan(flows, omnitron, erp_servers, three_plans):
    flows.write_file("scripts/slow.py", ("if get_attribute('plan_pk') == '3':\n    while True:\n        pass\n"))
    flows.write(script="scripts/slow.py", script_timeout_seconds=1)

    run = flows.run()

    assert run.state == "failed"
    assert "ScriptTimeout" in run.summary[3]["error"]
    assert sent(erp_servers["token"]) == [1, 2]
    assert statuses(omnitron, 1, 2, 3) == {1: "approved", 2: "approved", 3: "waiting"}


@every_layout
def test_a_jolt_spec_that_fails_on_one_plan_fails_only_that_plan(flows, omnitron, erp_servers, three_plans):
    attack = make_plan(4, order_pk=104)
    attack["order"]["extra_field"] = {"erp_line": "999999999"}
    omnitron.add_plans([attack])
    mapping = [
        {
            "operation": "shift",
            "spec": {
                "pk": "pk",
                "order": {"extra_field": {"erp_line": "lines[@(0)].line"}},
            },
        }
    ]
    flows.write(mapping=mapping)

    run = flows.run()

    assert run.state == "failed"
    assert "exceeds max_array_index" in run.summary[4]["error"]
    assert sent(erp_servers["token"]) == [1, 2, 3]
    assert omnitron.plans[4]["status"] == "waiting"
