"""Unit tests of the fake Omnitron and fake ERP, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from fakes import FakeErp, FakeOmnitron, make_order_transaction, make_plan
from fakes.data import demo_dataset

PLANS = "/api/v1/cancellation_plans/"
TRANSACTIONS = "/api/v1/order_transactions/"
FROZEN = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def sample_plans() -> list[dict]:
    """Ten plans (orders 1001..1010), modified in pk order, with uncorrelated attributes.

    status: 3,6,9 waiting; 1,4,7,10 confirmed; 2,5,8 completed. refund: 4, 8.
    channel: 1 -> 1,6,7; 2 -> 2,3,8,9; 3 (marketplace) -> 4,5,10.
    """
    statuses = ["waiting", "confirmed", "completed"]
    return [
        make_plan(
            pk, status=statuses[pk % 3], plan_type="refund" if pk % 4 == 0 else "cancel", channel=(pk // 2) % 3 + 1
        )
        for pk in range(1, 11)
    ]


@pytest.fixture
def omnitron():
    fake = FakeOmnitron(clock=lambda: FROZEN)
    fake.add_plans(sample_plans())
    fake.add_order_transactions(
        [
            make_order_transaction(501, 1001, amount="10.50", modified_date="2023-03-01T00:00:00.000001Z"),
            make_order_transaction(502, 1004, amount=20, modified_date="2023-03-02T00:00:00.000001Z"),
            make_order_transaction(503, 1002, amount=30, modified_date="2023-03-03T00:00:00.000001Z"),
        ]
    )
    with fake:
        yield fake


@pytest.fixture
def session(omnitron):
    """A session logged in to the fake Omnitron."""
    http = requests.Session()
    answer = http.post(
        omnitron.url + "/api/v1/auth/login/", json={"username": "omnitron", "password": "omnitron-pass"}, timeout=5
    )
    http.headers["Authorization"] = f"Token {answer.json()['key']}"
    return http


def get(omnitron, session, path=PLANS, **params):
    return session.get(omnitron.url + path, params=params, timeout=5)


def pks(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["pk"] for item in response.json()["results"]]


# --- data --------------------------------------------------------------------------------------


def test_make_plan_is_deterministic_and_shaped_like_the_seed():
    plan = make_plan(
        7, order_pk=3, order_number="429452907", status="completed", channel=2, items=3, refund_amount="1905.84"
    )
    assert plan == make_plan(
        7, order_pk=3, order_number="429452907", status="completed", channel=2, items=3, refund_amount="1905.84"
    )
    assert plan["order"]["pk"] == 3 and plan["order"]["number"] == "429452907"
    assert plan["order"]["channel"] == 2 and plan["order"]["currency"] == "try"
    assert plan["refund_amount"] == "1905.84"
    assert len(plan["cancellationplanorderitem_set"]) == 3
    assert plan["cancellationplanorderitem_set"][0]["order_item"]["product"]["sku"]
    assert plan["modified_date"].endswith("Z") and "." in plan["modified_date"]
    assert make_plan(1)["reason"]["subject"] == "Yanlış ürün aldım."
    assert make_plan(1)["order"]["pk"] == 1001


def test_demo_dataset_mixes_statuses_types_and_channels():
    plans, transactions = demo_dataset(12)
    assert {p["status"] for p in plans} >= {"waiting", "confirmed", "completed"}
    assert {p["plan_type"] for p in plans} == {"cancel", "refund"}
    assert {p["order"]["channel"] for p in plans} == {1, 2, 3}
    assert transactions and all(t["integration_mapping"] is None for t in transactions)


# --- auth --------------------------------------------------------------------------------------


def test_login_good_bad_and_missing(omnitron):
    url = omnitron.url + "/api/v1/auth/login/"
    good = requests.post(url, json={"username": "omnitron", "password": "omnitron-pass"}, timeout=5)
    assert good.status_code == 200 and good.json()["key"]
    bad = requests.post(url, json={"username": "omnitron", "password": "nope"}, timeout=5)
    assert bad.status_code == 400 and "non_field_errors" in bad.json()
    missing = requests.post(url, json={"username": "omnitron"}, timeout=5)
    assert missing.status_code == 400 and "password" in missing.json()


def test_api_needs_a_valid_token(omnitron):
    anonymous = requests.get(omnitron.url + PLANS, timeout=5)
    assert anonymous.status_code == 401 and "detail" in anonymous.json()
    assert anonymous.headers["WWW-Authenticate"] == "Token"
    forged = requests.get(omnitron.url + PLANS, headers={"Authorization": "Token forged"}, timeout=5)
    assert forged.status_code == 401 and forged.json() == {"detail": "Invalid token."}


def test_expire_tokens_and_token_max_uses(omnitron, session):
    assert get(omnitron, session).status_code == 200
    omnitron.expire_tokens()
    assert get(omnitron, session).status_code == 401
    omnitron.token_max_uses = 2
    fresh = requests.Session()
    key = fresh.post(
        omnitron.url + "/api/v1/auth/login/", json={"username": "omnitron", "password": "omnitron-pass"}, timeout=5
    ).json()["key"]
    fresh.headers["Authorization"] = f"Token {key}"
    assert [get(omnitron, fresh).status_code for _ in range(3)] == [200, 200, 401]
    assert omnitron.tokens.issued == 2


# --- cancellation plan lists -------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"status": "confirmed"}, [1, 4, 7, 10]),
        ({"plan_type": "refund"}, [4, 8]),
        ({"status": "completed", "plan_type": "cancel"}, [2, 5]),
        ({"channel_type": "marketplace"}, [4, 5, 10]),
        ({"channel_type": "web", "status": "confirmed"}, [1, 7]),
        ({"channel_type": "pos"}, []),
        ({"channel_id__in": "1,2"}, [1, 2, 3, 6, 7, 8, 9]),
        ({"channel_id__in": "3"}, [4, 5, 10]),
        ({"channel_id__in": "2", "plan_type": "refund", "status": "waiting"}, []),
        ({"channel_id__in": ""}, list(range(1, 11))),
        ({"order_id": "1004"}, [4]),
        ({"modified_date__gt": make_plan(8)["modified_date"]}, [9, 10]),
        ({"modified_date__gte": make_plan(8)["modified_date"]}, [8, 9, 10]),
        ({"modified_date__lt": make_plan(2)["modified_date"]}, [1]),
        ({"modified_date__lte": "2023-02-07T08:02:00.008642+00:00"}, [1, 2]),
    ],
)
def test_plan_filters(omnitron, session, params, expected):
    assert pks(get(omnitron, session, limit=100, **params)) == expected


def test_invalid_filter_values_are_400(omnitron, session):
    assert get(omnitron, session, channel_id__in="1,x").json() == {"channel_id__in": ["Enter a whole number."]}
    assert get(omnitron, session, modified_date__gt="yesterday").status_code == 400


def test_ordering_with_pk_tie_break(omnitron, session):
    omnitron.plans[5]["modified_date"] = omnitron.plans[2]["modified_date"]
    assert pks(get(omnitron, session, ordering="-pk", limit=3)) == [10, 9, 8]
    assert pks(get(omnitron, session, ordering="modified_date", limit=4)) == [1, 2, 5, 3]
    assert pks(get(omnitron, session, ordering="-modified_date", limit=100))[-3:] == [2, 5, 1]
    assert pks(get(omnitron, session, ordering="bogus", limit=2)) == [1, 2]


def test_pagination_follows_next_links(omnitron, session):
    first = get(omnitron, session, limit=4, status="").json()
    assert first["count"] == 10 and first["previous"] is None
    assert first["next"].startswith(omnitron.url + PLANS + "?") and "page=2" in first["next"]
    seen, url = [], omnitron.url + PLANS + "?limit=4"
    while url:
        page = session.get(url, timeout=5).json()
        seen += [plan["pk"] for plan in page["results"]]
        url = page["next"]
    assert seen == list(range(1, 11))
    third = get(omnitron, session, limit=4, page=3).json()
    assert third["next"] is None and "page=2" in third["previous"]
    assert "page" not in get(omnitron, session, limit=4, page=2).json()["previous"]
    assert get(omnitron, session, limit=4, page=4).status_code == 404
    assert len(get(omnitron, session).json()["results"]) == 10  # default limit


def test_unknown_parameters_are_ignored_but_recorded(omnitron, session):
    assert pks(get(omnitron, session, channel__in="3", limit=2)) == [1, 2]
    assert (PLANS, "channel__in") in omnitron.ignored_params
    assert omnitron.requests[-1].query == {"channel__in": "3", "limit": "2"}


# --- order transactions ------------------------------------------------------------------------


def test_order_transaction_filters(omnitron, session):
    assert pks(get(omnitron, session, TRANSACTIONS, transaction_type="return")) == [501, 502, 503]
    assert pks(get(omnitron, session, TRANSACTIONS, channel_type="web")) == [501, 503]
    assert pks(get(omnitron, session, TRANSACTIONS, channel_id__in="2,3")) == [502, 503]
    assert pks(get(omnitron, session, TRANSACTIONS, ordering="-modified_date", limit=1)) == [503]
    assert get(omnitron, session, TRANSACTIONS, limit=2).json()["next"].endswith("page=2")
    assert pks(get(omnitron, session, TRANSACTIONS, integration_mapping__isnull="false")) == []


def test_create_mapping(omnitron, session):
    url = omnitron.url + TRANSACTIONS + "502/create_mapping/"
    answer = session.post(url, json={"code": "7"}, timeout=5)
    assert answer.status_code == 201 and answer.json()["integration_mapping"] == {"code": "7"}
    assert omnitron.order_transactions[502]["integration_mapping"] == {"code": "7"}
    assert pks(get(omnitron, session, TRANSACTIONS, integration_mapping__isnull="true")) == [501, 503]
    assert pks(get(omnitron, session, TRANSACTIONS, integration_mapping__isnull="false")) == [502]
    assert (
        session.post(omnitron.url + TRANSACTIONS + "999/create_mapping/", json={"code": "1"}, timeout=5).status_code
        == 404
    )
    assert session.post(url, json={}, timeout=5).status_code == 400


# --- writes ------------------------------------------------------------------------------------


def test_cancellation_approved_order(omnitron, session):
    def approve(order_pk, body):
        return session.post(
            f"{omnitron.url}/api/v1/orders/{order_pk}/cancellation_approved_order/", json=body, timeout=5
        )

    answer = approve(1004, {"cancellation_plan": 4})
    assert answer.status_code == 200 and answer.json()["status"] == "approved"
    assert omnitron.plans[4]["status"] == "approved"
    assert omnitron.plans[4]["modified_date"] == "2024-05-01T12:00:00.123456Z"
    assert approve(9999, {"cancellation_plan": 4}).status_code == 404
    assert approve(1004, {"cancellation_plan": 999}).status_code == 404
    assert approve(1004, {"cancellation_plan": 5}).status_code == 400
    assert approve(1004, {}).status_code == 400


def test_update_status(omnitron, session):
    def update(pk, body):
        return session.post(f"{omnitron.url}{PLANS}{pk}/update_status/", json=body, timeout=5)

    answer = update(2, {"status": "confirmation_waiting"})
    assert answer.status_code == 200 and answer.json()["status"] == "confirmation_waiting"
    assert omnitron.plans[2]["modified_date"] == "2024-05-01T12:00:00.123456Z"
    assert update(2, {"status": "rejected"}).json()["status"] == "rejected"
    assert update(2, {"status": "lost"}).status_code == 400
    assert update(999, {"status": "confirmed"}).status_code == 404
    malformed = session.post(f"{omnitron.url}{PLANS}2/update_status/", data=b"{oops", timeout=5)
    assert malformed.status_code == 400


# --- recording ---------------------------------------------------------------------------------


def test_requests_are_recorded(omnitron, session):
    session.post(f"{omnitron.url}{PLANS}3/update_status/", json={"status": "confirmed"}, timeout=5)
    get(omnitron, session, status="waiting")
    login, update, listing = omnitron.requests
    assert login.path == "/api/v1/auth/login/" and login.body["username"] == "omnitron"
    assert update.method == "POST" and update.body == {"status": "confirmed"}
    assert json.loads(update.raw_body) == {"status": "confirmed"}
    assert update.headers["authorization"].startswith("Token ")
    assert update.headers.get("AUTHORIZATION") == update.headers["Authorization"]
    assert listing.query == {"status": "waiting"} and listing.body is None
    assert omnitron.calls("get") == [listing]
    assert omnitron.calls(path_prefix="/api/v1/cancellation_plans/3/") == [update]
    omnitron.clear_requests()
    assert omnitron.requests == []


# --- fault injection ---------------------------------------------------------------------------


def test_fault_status_and_body_then_normal(omnitron, session):
    omnitron.add_fault("GET", r"/cancellation_plans/$", status=503, body={"detail": "busy"}, times=2)
    assert [get(omnitron, session).status_code for _ in range(3)] == [503, 503, 200]
    assert get(omnitron, session, TRANSACTIONS).status_code == 200
    assert len(omnitron.calls("GET")) == 4  # faulted requests are recorded too


def test_fault_forever_any_method_and_clear(omnitron, session):
    omnitron.add_fault("*", "update_status", status=502, times=None)
    for _ in range(3):
        assert (
            session.post(f"{omnitron.url}{PLANS}1/update_status/", json={"status": "confirmed"}, timeout=5).status_code
            == 502
        )
    omnitron.clear_faults()
    assert (
        session.post(f"{omnitron.url}{PLANS}1/update_status/", json={"status": "confirmed"}, timeout=5).status_code
        == 200
    )


def test_fault_delay_causes_client_timeout(omnitron, session):
    omnitron.add_fault("GET", PLANS, status=200, body={}, delay=0.5)
    with pytest.raises(requests.Timeout):
        session.get(omnitron.url + PLANS, timeout=0.1)


def test_fault_drop_connection(omnitron, session):
    omnitron.add_fault("POST", "login", drop_connection=True)
    with pytest.raises(requests.ConnectionError):
        requests.post(omnitron.url + "/api/v1/auth/login/", json={}, timeout=5)
    assert get(omnitron, session).status_code == 200


def test_fault_raw_body_sends_broken_json(omnitron, session):
    omnitron.add_fault("GET", PLANS, status=200, raw_body='{"count": 3, "resu')
    answer = get(omnitron, session)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        answer.json()


def test_stop_frees_the_port_and_closes_kept_alive_connections():
    fake = FakeOmnitron().start()
    url, pooled = fake.url, requests.Session()
    assert pooled.get(url + PLANS, timeout=5).status_code == 401
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + PLANS, timeout=1)
    with pytest.raises(requests.ConnectionError):
        pooled.get(url + PLANS, timeout=1)
    fake.stop()  # idempotent


# --- ERP ---------------------------------------------------------------------------------------


@pytest.fixture
def make_erp():
    started = []

    def factory(**kwargs) -> FakeErp:
        erp = FakeErp(**kwargs).start()
        started.append(erp)
        return erp

    yield factory
    for erp in started:
        erp.stop()


def test_erp_accepts_any_path_and_method(make_erp):
    erp = make_erp()
    answers = [
        requests.request(method, erp.url + path, json={"pk": 1}, timeout=5)
        for method, path in [
            ("POST", "/api/cancellations"),
            ("PUT", "/api/crm/notify"),
            ("PATCH", "/x"),
            ("GET", "/api/cancellations"),
        ]
    ]
    assert [a.status_code for a in answers] == [201] * 4
    assert [a.json()["id"] for a in answers] == ["ERP-1", "ERP-2", "ERP-3", "ERP-4"]
    assert answers[0].json()["status"] == "accepted"
    assert [(r.method, r.path) for r in erp.calls(path_prefix="/api/")] == [
        ("POST", "/api/cancellations"),
        ("PUT", "/api/crm/notify"),
        ("GET", "/api/cancellations"),
    ]


def test_erp_token_auth(make_erp):
    erp = make_erp(auth="token")
    login, cancel = erp.url + "/api/auth/login", erp.url + "/api/cancellations"
    assert requests.post(cancel, json={}, timeout=5).json() == {"error": "unauthorized"}
    assert requests.post(login, json={"username": "erp", "password": "bad"}, timeout=5).status_code == 401
    answer = requests.post(login, json={"username": "erp", "password": "erp-pass", "client": "x"}, timeout=5)
    assert answer.status_code == 200 and answer.json()["token_type"] == "Bearer"
    headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    assert requests.post(cancel, json={}, headers=headers, timeout=5).status_code == 201
    erp.expire_tokens()
    assert requests.post(cancel, json={}, headers=headers, timeout=5).status_code == 401


def test_erp_token_path_header_and_no_prefix(make_erp):
    erp = make_erp(auth="token", token_path="data.token", header_name="X-Auth", token_prefix=None)
    token = requests.post(
        erp.url + "/api/auth/login", json={"username": "erp", "password": "erp-pass"}, timeout=5
    ).json()["data"]["token"]
    assert requests.get(erp.url + "/q", headers={"X-Auth": token}, timeout=5).status_code == 201
    assert requests.get(erp.url + "/q", headers={"X-Auth": f"Bearer {token}"}, timeout=5).status_code == 401


def test_erp_basic_auth(make_erp):
    erp = make_erp(auth="basic")
    assert requests.post(erp.url + "/c", auth=("erp", "erp-pass"), timeout=5).status_code == 201
    assert requests.post(erp.url + "/c", auth=("erp", "wrong"), timeout=5).status_code == 401
    assert requests.post(erp.url + "/c", timeout=5).status_code == 401


@pytest.mark.parametrize(
    "header_name, value, status",
    [
        ("Authorization", "static-secret", 201),
        ("Authorization", "Bearer static-secret", 201),
        ("Authorization", "Bearer other", 401),
        ("X-Api-Key", "static-secret", 201),
    ],
)
def test_erp_header_auth(make_erp, header_name, value, status):
    erp = make_erp(auth="header", header_name=header_name)
    assert requests.post(erp.url + "/c", headers={header_name: value}, timeout=5).status_code == status


def test_erp_scripted_responses_match_body_fields(make_erp):
    erp = make_erp()
    erp.respond(match={"pk": 12}, status=409, body={"error": "duplicate"})
    erp.respond(match={"pk": 13, "kind": "refund"}, status=200, body={"ok": True}, times=1)
    assert requests.post(erp.url + "/c", json={"pk": 12}, timeout=5).status_code == 409
    assert requests.post(erp.url + "/c", json={"pk": "12"}, timeout=5).status_code == 409
    assert requests.post(erp.url + "/c", json={"pk": 13, "kind": "refund"}, timeout=5).json() == {"ok": True}
    assert requests.post(erp.url + "/c", json={"pk": 13, "kind": "refund"}, timeout=5).status_code == 201
    assert requests.post(erp.url + "/c", json={"pk": 14}, timeout=5).status_code == 201
    erp.respond(match={"pk": 12}, status=202, path="/other")
    erp.respond(status=500, body={"newest": True}, path="/c", method="PUT")
    assert requests.post(erp.url + "/c", json={"pk": 12}, timeout=5).status_code == 409
    assert requests.put(erp.url + "/c", json={"pk": 12}, timeout=5).json() == {"newest": True}
    erp.clear_responses()
    assert requests.post(erp.url + "/c", json={"pk": 12}, timeout=5).status_code == 201


def test_erp_scripted_responses_match_get_query(make_erp):
    erp = make_erp()
    erp.respond(match={"pk": 12}, status=404, raw_body=b"not json", headers={"Content-Type": "text/plain"})
    answer = requests.get(erp.url + "/api/cancellations", params={"pk": 12, "x": "y"}, timeout=5)
    assert answer.status_code == 404 and answer.text == "not json"
    assert answer.headers["Content-Type"] == "text/plain"
    assert requests.get(erp.url + "/api/cancellations", params={"pk": 1}, timeout=5).status_code == 201


def test_erp_scripted_delay_and_drop(make_erp):
    erp = make_erp()
    erp.respond(match={"pk": 1}, delay=0.5)
    erp.respond(match={"pk": 2}, drop_connection=True)
    with pytest.raises(requests.Timeout):
        requests.post(erp.url + "/c", json={"pk": 1}, timeout=0.1)
    with pytest.raises(requests.ConnectionError):
        requests.post(erp.url + "/c", json={"pk": 2}, timeout=5)


def test_erp_books_nothing_from_a_client_that_hung_up_mid_body(make_erp):
    # A worker killed while it sends: the headers arrived, the body did not.
    erp = make_erp()
    body = json.dumps({"pk": 7}).encode()
    head = f"POST /api/cancellations HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", erp.port), timeout=5) as client:
        client.sendall(head + body[:5])
        client.shutdown(socket.SHUT_WR)
        assert client.recv(1024) == b""  # no answer: the request never reached the ERP
    assert erp.booking_log() == []
    assert requests.post(erp.url + "/api/cancellations", json={"pk": 7}, timeout=5).status_code == 201
    assert erp.booked_bodies() == [{"pk": 7}]


def test_erp_faults_come_before_auth(make_erp):
    erp = make_erp(auth="token")
    erp.add_fault("POST", "/api/auth/login", status=503)
    assert (
        requests.post(
            erp.url + "/api/auth/login", json={"username": "erp", "password": "erp-pass"}, timeout=5
        ).status_code
        == 503
    )


def seconds_taken(url: str, body: dict) -> float:
    started = time.monotonic()
    requests.post(url, json=body, timeout=5)
    return time.monotonic() - started


def test_erp_latency_holds_every_answer_until_switched_off(make_erp):
    erp = make_erp(auth="token", latency_ms=300)
    assert seconds_taken(erp.url + "/api/auth/login", {"username": "erp", "password": "erp-pass"}) >= 0.3
    assert seconds_taken(erp.url + "/api/cancellations", {"pk": 1}) >= 0.3  # a 401 (no token) waits too
    assert requests.post(erp.url + "/_fake/latency", json={"latency_ms": 0}, timeout=5).status_code == 200
    assert seconds_taken(erp.url + "/api/cancellations", {"pk": 1}) < 0.3
    assert requests.post(erp.url + "/_fake/latency", json={"latency_ms": -1}, timeout=5).status_code == 400


# --- control API -------------------------------------------------------------------------------


def test_omnitron_control_api(omnitron, session):
    control = omnitron.url + "/_fake"
    get(omnitron, session)
    recorded = requests.get(control + "/requests", timeout=5).json()
    assert [r["path"] for r in recorded] == ["/api/v1/auth/login/", PLANS]
    assert requests.delete(control + "/requests", timeout=5).status_code == 200
    assert omnitron.requests == []
    assert requests.post(control + "/plans", json=[make_plan(42, channel=3)], timeout=5).status_code == 200
    assert 42 in [p["pk"] for p in requests.get(control + "/plans", timeout=5).json()]
    assert (
        requests.post(
            control + "/faults", json={"method": "GET", "path_regex": "cancellation", "status": 500}, timeout=5
        ).status_code
        == 200
    )
    assert get(omnitron, session).status_code == 500
    assert requests.post(control + "/faults", json={"bogus": 1}, timeout=5).status_code == 400
    requests.post(control + "/expire_tokens", timeout=5)
    assert get(omnitron, session).status_code == 401
    assert [r.path for r in omnitron.requests] == [PLANS, PLANS]  # control calls are not recorded


def test_erp_control_api(make_erp):
    erp = make_erp(auth="token")
    control = erp.url + "/_fake"
    assert (
        requests.post(
            control + "/responses", json={"match": {"pk": 5}, "status": 422, "body": {"e": 1}}, timeout=5
        ).status_code
        == 200
    )
    token = requests.post(
        erp.url + "/api/auth/login", json={"username": "erp", "password": "erp-pass"}, timeout=5
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.post(erp.url + "/c", json={"pk": 5}, headers=headers, timeout=5).status_code == 422
    requests.post(control + "/expire_tokens", timeout=5)
    assert requests.post(erp.url + "/c", json={"pk": 5}, headers=headers, timeout=5).status_code == 401
    assert len(requests.get(control + "/requests", timeout=5).json()) == 3
    requests.delete(control + "/responses", timeout=5)
    assert requests.get(control + "/health", timeout=5).json() == {"ok": True}


def test_main_runs_both_fakes_until_sigterm():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fakes",
            "--omnitron-port",
            "0",
            "--erp-port",
            "0",
            "--plans",
            "5",
            "--erp-auth",
            "basic",
            "--erp-latency-ms",
            "150",
        ],
        cwd=Path(__file__).resolve().parents[3],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        omnitron_line, erp_line = process.stdout.readline(), process.stdout.readline()
        omnitron_url = omnitron_line.split()[2]
        assert "5 plans" in omnitron_line and "basic auth erp / erp-pass, answers after 150 ms" in erp_line
        assert len(requests.get(omnitron_url + "/_fake/plans", timeout=5).json()) == 5
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
