"""The one plan pipeline on its own (no Airflow, no HTTP): each step's record, the response
evaluation, the Omnitron write a relation leads to, and where a plan resumes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from fakes.data import make_plan
from order_cancel.clients.erp import ErpAnswer
from order_cancel.flows.loading import load_flow
from order_cancel.flows.models import FlowConfig
from order_cancel.pipeline.plan import RECORDS, PlanProgress, Stage, Step, WorkItem
from order_cancel.pipeline.steps import PlanPipeline
from tests.fake_clients import FakeClients, FakeErpClient, FakeOmnitronClient
from tests.flow_runner import BASE_FLOW, merged

ENRICH = """\
import json
plan = json.loads(input_text)
plan["reason_code"] = "R-" + str(plan["pk"])
session.putAttribute(flowFile, "integration_code", "IC-" + str(plan["pk"]))
log.info("enriched")
outputStream.write(json.dumps(plan))
"""
MAPPING = [{"operation": "shift", "spec": {"pk": "cancellationId", "reason_code": "reason"}}]


def make_flow(tmp_path: Path, files: dict[str, str] | None = None, **overrides) -> FlowConfig:
    for relative, text in (files or {}).items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(textwrap.dedent(text), encoding="utf-8")
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(merged(BASE_FLOW, overrides)), encoding="utf-8")
    return load_flow(path)


def answering(status: int | None, text: str = "", error: str | None = None):
    return lambda body: ErpAnswer(status_code=status, text=text, error=error)


@pytest.fixture
def enriching(tmp_path) -> FlowConfig:
    return make_flow(tmp_path, {"scripts/enrich.py": ENRICH}, script="scripts/enrich.py", mapping=MAPPING)


def start(item: WorkItem) -> PlanProgress:
    return PlanProgress(ref=item.ref)


# -- each step's record ---------------------------------------------------------------------------


def test_the_transform_records_the_script_and_the_mapping_each_with_what_it_added(enriching):
    item = WorkItem.of(make_plan(7))

    script, mapping = PlanPipeline.build(enriching).transform(item)

    assert script.step is Step.SCRIPT and mapping.step is Step.MAPPING
    assert script.output["reason_code"] == "R-7" and script.logs == [("info", "enriched")]
    assert script.attributes["integration_code"] == "IC-7" and script.attributes["plan_pk"] == "7"
    assert mapping.output == {"cancellationId": 7, "reason": "R-7"}
    assert mapping.attributes == script.attributes, "the mapping sets no attribute"
    assert script.ref == mapping.ref == item.ref and script.seconds >= 0 and script.started_at.endswith("+00:00")


def test_a_raising_script_is_a_failed_record_that_no_retry_mends(tmp_path):
    flow = make_flow(
        tmp_path,
        {"scripts/t.py": "session.putAttribute(flowFile, 'seen', 'yes')\nraise KeyError('x')\n"},
        script="scripts/t.py",
    )

    [record] = PlanPipeline.build(flow).transform(WorkItem.of(make_plan(1)))

    assert record.failed and not record.retryable
    assert record.error.startswith("KeyError: 'x' (") and record.error.endswith("t.py:2)")
    assert record.attributes["seen"] == "yes" and record.attributes["log.script.error"] == record.error


def test_a_script_output_that_is_not_json_keeps_the_text_in_its_record(tmp_path):
    flow = make_flow(
        tmp_path, {"scripts/t.py": "outputStream.write('a')\noutputStream.write('b')\n"}, script="scripts/t.py"
    )
    [record] = PlanPipeline.build(flow).transform(WorkItem.of(make_plan(1)))
    assert record.error.startswith("PlanDataError: the script's output is not JSON") and record.output == "ab"


@pytest.mark.parametrize(
    ("answers", "relation", "sends", "logins"),
    [
        ([answering(201, '{"id": 1}')], "continue", 1, 0),
        ([answering(422, '{"error": "shipped"}')], "failure", 1, 0),
        ([answering(503)], "do_nothing", 1, 0),
        ([answering(None, error="timeout")], "do_nothing", 1, 0),
        ([answering(401), answering(201)], "continue", 2, 1),
        ([answering(401)] * 3, "do_nothing", 3, 2),
    ],
    ids=["accepted", "refused", "down", "timeout", "auth-fail-then-accepted", "auth-fail-for-good"],
)
def test_the_erp_write_records_its_request_answer_and_relation(tmp_path, answers, relation, sends, logins):
    flow = make_flow(tmp_path)
    replies = iter(answers)
    erp = FakeErpClient(lambda body: next(replies)(body))
    item = WorkItem.of(make_plan(3))
    progress = PlanPipeline.build(flow).run_stage(Stage.WRITE_ERP, start(item), FakeClients(erp=erp), item)

    delivery = progress.delivery
    assert delivery.relation == relation and delivery.sends == sends and erp.logins == logins
    assert delivery.idempotency_key == item.ref.idempotency_key("acme_cancel")
    assert delivery.request["headers"] == {"Idempotency-Key": delivery.idempotency_key}
    assert delivery.request_data["pk"] == 3 and delivery.attributes["relation"] == relation
    if relation == "do_nothing" and sends == 3:
        assert delivery.logs[-1][1].startswith("the ERP refused authentication 3 times")


def test_a_response_script_sees_the_answer_and_the_orders_rejected_plans(tmp_path):
    script = (
        "relation = 'continue' if get_attribute('rejected_count') == '0' else 'failure'\n"
        "session.putAttribute(flowFile, 'relation', relation)\n"
    )
    flow = make_flow(
        tmp_path, {"scripts/r.py": script}, write_erp={"custom_response": True, "response_script": "scripts/r.py"}
    )
    item = WorkItem.of(make_plan(3))
    pipeline = PlanPipeline.build(flow)

    clean = pipeline.run_stage(Stage.WRITE_ERP, start(item), FakeClients(FakeOmnitronClient(rejected=0)), item)
    rejected_before = pipeline.run_stage(
        Stage.WRITE_ERP, start(item), FakeClients(FakeOmnitronClient(rejected=2)), item
    )

    assert clean.delivery.relation == "continue" and rejected_before.delivery.relation == "failure"
    assert rejected_before.delivery.attributes["rejected_count"] == "2"


@pytest.mark.parametrize(
    ("get_data", "next_state", "relation", "outcome", "written"),
    [
        (
            {},
            "approved",
            "continue",
            "approved",
            ("api/v1/orders/103/cancellation_approved_order/", {"cancellation_plan": 3}),
        ),
        (
            {},
            "completed",
            "continue",
            "status set to completed",
            ("api/v1/cancellation_plans/3/update_status/", {"status": "completed"}),
        ),
        ({}, "approved", "failure", "rejected", ("api/v1/cancellation_plans/3/update_status/", {"status": "rejected"})),
        ({}, "approved", "do_nothing", "untouched (retried by a later run)", None),
        ({"cancel_status": "completed"}, "approved", "continue", "delivered (completed flow: nothing written)", None),
    ],
)
def test_the_omnitron_write_follows_the_relation(tmp_path, get_data, next_state, relation, outcome, written):
    flow = make_flow(tmp_path, get_data=get_data, write_omnitron={"next_state": next_state})
    status = {"continue": 201, "failure": 422, "do_nothing": 503}[relation]
    omnitron = FakeOmnitronClient()
    clients = FakeClients(omnitron, FakeErpClient(answering(status)))
    item = WorkItem.of(make_plan(3, order_pk=103))
    pipeline = PlanPipeline.build(flow)

    progress = pipeline.advance(item, start(item), clients)

    assert progress.written.outcome == outcome
    assert omnitron.writes == ([written] if written else [])
    assert (progress.written.call is None) == (written is None)


def test_an_omnitron_5xx_is_a_failed_record_a_retry_may_mend(tmp_path):
    flow = make_flow(tmp_path)
    item = WorkItem.of(make_plan(3, order_pk=103))
    progress = PlanPipeline.build(flow).advance(item, start(item), FakeClients(FakeOmnitronClient(failing={3: 1})))
    assert progress.failure.step is Step.WRITE_OMNITRON and progress.failure.retryable
    assert "HTTP 502" in progress.failure.error and progress.delivery.relation == "continue"


# -- resuming -------------------------------------------------------------------------------------


def test_a_plan_resumes_where_it_stopped_and_the_erp_never_gets_it_twice(tmp_path):
    flow = make_flow(tmp_path, {"scripts/post.py": "log.info('posted')\n"}, post_script="scripts/post.py")
    pipeline = PlanPipeline.build(flow)
    erp, omnitron = FakeErpClient(), FakeOmnitronClient(failing={3: 1})
    clients = FakeClients(omnitron, erp)
    item = WorkItem.of(make_plan(3, order_pk=103))

    first = pipeline.advance(item, start(item), clients)
    assert first.failure.step is Step.WRITE_OMNITRON and pipeline.next_stage(first) is Stage.WRITE_OMNITRON
    second = pipeline.advance(item, first, clients)

    assert second.failure is None and pipeline.next_stage(second) is None
    assert erp.sent_pks() == [3], "sent once"
    assert [path for path, _ in omnitron.writes] == ["api/v1/orders/103/cancellation_approved_order/"]
    assert second.posted.ran and [record.step for record in second.records][-2:] == [
        Step.WRITE_OMNITRON,
        Step.POST_SCRIPT,
    ]


@pytest.mark.parametrize(
    ("found", "outcome", "writes"),
    [
        ("waiting", "approved", 1),
        ("approved", "already written (found approved in Omnitron)", 0),
        ("cancelled", "changed in Omnitron to cancelled meanwhile (not written)", 0),
    ],
)
def test_a_resumed_write_reads_the_plan_first_and_writes_only_a_plan_still_as_fetched(tmp_path, found, outcome, writes):
    pipeline = PlanPipeline.build(make_flow(tmp_path))
    omnitron = FakeOmnitronClient()
    clients = FakeClients(omnitron, FakeErpClient())
    item = WorkItem.of(make_plan(3, order_pk=103))
    delivered = pipeline.advance(item, start(item), clients, until=Stage.WRITE_ERP)
    omnitron.statuses[3] = found  # what a lost try left, or what someone else did meanwhile

    progress = pipeline.run_stage(Stage.WRITE_OMNITRON, delivered, clients, resumed=True)

    assert progress.failure is None and progress.written.outcome == outcome
    assert omnitron.reads == [3] and len(omnitron.writes) == writes
    assert progress.written.found == (None if found == "waiting" else found)


def test_a_first_write_pays_no_read_and_a_write_after_a_failed_one_reads_first(tmp_path):
    pipeline = PlanPipeline.build(make_flow(tmp_path))
    omnitron = FakeOmnitronClient(failing={3: 1})
    clients = FakeClients(omnitron, FakeErpClient())
    item = WorkItem.of(make_plan(3, order_pk=103))

    failed = pipeline.advance(item, start(item), clients)
    assert omnitron.reads == [], "a first attempt reads nothing"
    done = pipeline.advance(item, failed, clients)

    assert omnitron.reads == [3], "the 502 may have come after the write took effect"
    assert done.written.outcome == "approved" and len(omnitron.writes) == 1


def test_a_plan_whose_script_failed_runs_again_from_the_start(tmp_path):
    flag = tmp_path / "broken"
    flag.touch()
    script = f"import os\nif os.path.exists({str(flag)!r}):\n    raise ValueError('not yet')\n"
    flow = make_flow(tmp_path, {"scripts/t.py": script}, script="scripts/t.py")
    pipeline, clients = PlanPipeline.build(flow), FakeClients()
    item = WorkItem.of(make_plan(3))

    failed = pipeline.advance(item, start(item), clients)
    flag.unlink()
    done = pipeline.advance(item, failed, clients)

    assert pipeline.next_stage(failed) is Stage.TRANSFORM
    assert [record.step for record in done.records] == [Step.SCRIPT, Step.SCRIPT, Step.WRITE_ERP, Step.WRITE_OMNITRON]
    assert done.written.outcome == "approved"


def test_advance_stops_after_the_stage_asked_for(tmp_path):
    item = WorkItem.of(make_plan(3))
    progress = PlanPipeline.build(make_flow(tmp_path)).advance(item, start(item), FakeClients(), until=Stage.WRITE_ERP)
    assert progress.delivery is not None and progress.written is None


def test_records_are_json_ready_and_hold_no_credential(enriching):
    erp = FakeErpClient()
    item = WorkItem.of(make_plan(3))
    progress = PlanPipeline.build(enriching).advance(item, start(item), FakeClients(erp=erp))

    text = RECORDS.dump_json(progress.records).decode()

    assert RECORDS.validate_json(text) == progress.records
    request = json.loads(text)[2]["request"]
    assert set(request["headers"]) == {"Idempotency-Key"}, "the credentials are added when sending, never recorded"
    assert request["auth"] == "token login: token in header Authorization" and "Bearer" not in text


def test_a_dry_run_records_the_request_and_sends_nothing(enriching):
    erp, omnitron = FakeErpClient(), FakeOmnitronClient()
    item = WorkItem.of(make_plan(3))
    progress = PlanPipeline.build(enriching, dry_run=True).advance(item, start(item), FakeClients(omnitron, erp))
    assert erp.sent == [] and omnitron.writes == []
    assert progress.delivery.relation == "dry_run" and progress.delivery.request["json"]["cancellationId"] == 3
    assert progress.written.outcome == "dry run (nothing written)"


@pytest.mark.parametrize(
    ("answers", "undecided"),
    [
        ([answering(201)], False),
        ([answering(422)], False),
        ([answering(503)], True),
        ([answering(None, error="timeout")], True),
    ],
    ids=["accepted", "refused", "down", "timeout"],
)
def test_a_plan_the_erp_did_not_decide_on_is_undecided(tmp_path, answers, undecided):
    """What a completed flow keeps pending for its following runs."""
    flow = make_flow(tmp_path)
    replies = iter(answers)
    item = WorkItem.of(make_plan(3))
    clients = FakeClients(erp=FakeErpClient(lambda body: next(replies)(body)))
    progress = PlanPipeline.build(flow).run_stage(Stage.WRITE_ERP, start(item), clients, item)
    assert progress.undecided is undecided


def test_a_plan_stopped_by_a_killed_task_is_undecided_one_failed_by_its_script_is_not(tmp_path):
    flow = make_flow(tmp_path, {"scripts/t.py": "raise KeyError('x')\n"}, script="scripts/t.py")
    item = WorkItem.of(make_plan(1))
    assert start(item).undecided, "no record at all: its task never got to an answer"
    failed = start(item).add(*PlanPipeline.build(flow).transform(item))
    assert not failed.undecided, "a script error fails the same way again"
