"""The batch runner and the run summary on their own (no Airflow, no HTTP): each plan isolated, each
plan's progress kept as soon as the ERP decided and as soon as Omnitron answered, a try lost in the
middle of a phase resumed with only its plans in flight done again, and the summary rows."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from fakes.data import make_plan
from order_cancel.clients.erp import ErpAnswer
from order_cancel.pipeline.batch import BatchCheckpoint, BatchRunner
from order_cancel.pipeline.plan import PlanProgress, PlanRef, Stage, Step, WorkItem
from order_cancel.pipeline.steps import PlanPipeline
from order_cancel.pipeline.summary import summarize
from tests.fake_clients import FakeClients, FakeErpClient, FakeOmnitronClient, LostWorker
from tests.unit.pipeline.test_pipeline import make_flow


class Saves:
    """The groups of plans a batch kept, in order, as its journal holds them."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.groups: list[dict[str, PlanProgress]] = []
        self.seconds = seconds
        self.writing = self.most_at_once = 0

    def __call__(self, plans: dict[str, PlanProgress]) -> None:
        self.writing += 1
        self.most_at_once = max(self.most_at_once, self.writing)
        time.sleep(self.seconds)  # a write to the task state store is a round trip to the API server
        self.groups.append(dict(plans))
        self.writing -= 1

    def checkpoint(self) -> BatchCheckpoint:
        merged: dict[str, PlanProgress] = {}
        for group in self.groups:
            merged.update(group)
        return BatchCheckpoint(plans=merged)


def items(*pks: int) -> list[WorkItem]:
    return [WorkItem.of(make_plan(pk, order_pk=100 + pk)) for pk in pks]


def runner(flow, omnitron: FakeOmnitronClient, erp: FakeErpClient) -> BatchRunner:
    return BatchRunner(PlanPipeline.build(flow), FakeClients(omnitron, erp), concurrency=4)


def test_each_plan_is_kept_after_the_erps_decision_and_after_omnitrons_answer(tmp_path):
    erp, omnitron, saves = FakeErpClient(), FakeOmnitronClient(), Saves()

    plans = runner(make_flow(tmp_path), omnitron, erp).run(items(1, 2, 3), BatchCheckpoint(), saves)

    assert [plan.progress.written.outcome for plan in plans] == ["approved"] * 3
    assert erp.sent_pks() == [1, 2, 3] and len(omnitron.writes) == 3 and omnitron.reads == []
    kept = [(pk, progress.records[-1].step.stage) for group in saves.groups for pk, progress in group.items()]
    for pk in "123":
        assert [stage for plan, stage in kept if plan == pk] == [Stage.WRITE_ERP, Stage.WRITE_OMNITRON]
    assert all(progress.written for progress in saves.checkpoint().plans.values()), "all kept once run returns"


def test_plans_that_finish_while_a_group_is_written_are_kept_together(tmp_path):
    saves = Saves(seconds=0.02)
    plans = runner(make_flow(tmp_path), FakeOmnitronClient(), FakeErpClient()).run(
        items(*range(1, 41)), BatchCheckpoint(), saves
    )
    assert all(plan.progress.written for plan in plans)
    assert saves.checkpoint().plans.keys() == {str(pk) for pk in range(1, 41)}
    assert sum(len(group) for group in saves.groups) == 80 and len(saves.groups) < 80
    assert saves.most_at_once == 1, "one write at a time: the Task SDK's in-process calls are not thread-safe"


def test_a_batch_lost_in_its_erp_phase_sends_again_only_the_plan_in_flight(tmp_path):
    def answer(body):
        if body["pk"] == 3 and not lost_once:
            lost_once.append(3)
            raise LostWorker("the worker died while plan 3's answer was on its way")
        return ErpAnswer(status_code=201)

    lost_once: list[int] = []
    erp, omnitron, saves = FakeErpClient(answer), FakeOmnitronClient(), Saves()
    batch = runner(make_flow(tmp_path), omnitron, erp)
    with pytest.raises(LostWorker):
        batch.run(items(1, 2, 3, 4, 5), BatchCheckpoint(), saves)

    resumed = batch.run(items(1, 2, 3, 4, 5), saves.checkpoint(), saves, resumed=True)

    assert erp.sent_pks() == [1, 2, 3, 3, 4, 5], "only plan 3, in flight when the worker died, is sent again"
    assert all(plan.progress.written.outcome == "approved" for plan in resumed)


def test_a_batch_lost_in_its_omnitron_phase_writes_no_plan_twice(tmp_path):
    erp, omnitron, saves = FakeErpClient(), FakeOmnitronClient(lost={2}), Saves()
    batch = runner(make_flow(tmp_path), omnitron, erp)
    with pytest.raises(LostWorker):
        batch.run(items(1, 2, 3), BatchCheckpoint(), saves)

    resumed = batch.run(items(1, 2, 3), saves.checkpoint(), saves, resumed=True)

    assert len(omnitron.writes) == 3, "each plan written once: plan 2 by the lost try"
    assert 2 in omnitron.reads, "a plan not kept as written is read first"
    outcomes = {plan.progress.ref.plan_pk: plan.progress.written.outcome for plan in resumed}
    assert outcomes[2] == "already written (found approved in Omnitron)"
    assert set(outcomes.values()) <= {"approved", "already written (found approved in Omnitron)"}
    assert erp.sent_pks() == [1, 2, 3]


def test_a_failed_plan_fails_alone_and_a_second_try_runs_only_what_is_left(tmp_path):
    erp, omnitron, saves = FakeErpClient(), FakeOmnitronClient(failing={2: 1}), Saves()
    batch = runner(make_flow(tmp_path), omnitron, erp)

    first = batch.run(items(1, 2, 3), BatchCheckpoint(), saves)
    assert [plan.progress.failure is not None for plan in first] == [False, True, False]
    second = batch.run(items(1, 2, 3), saves.checkpoint(), saves, resumed=True)

    assert all(plan.progress.failure is None for plan in second)
    assert erp.sent_pks() == [1, 2, 3], "no plan was sent twice"
    assert second[0].fresh == [], "plan 1 was done"
    assert [record.step.stage for record in second[1].fresh] == [Stage.WRITE_OMNITRON]
    assert sorted(path for path, _ in omnitron.writes) == sorted(
        f"api/v1/orders/{100 + pk}/cancellation_approved_order/" for pk in (1, 2, 3)
    )


def test_a_failed_post_script_runs_again_alone(tmp_path):
    flag = tmp_path / "crm_down"
    flag.touch()
    script = (
        f"import os\nif get_attribute('plan_pk') == '2' and os.path.exists({str(flag)!r}):\n"
        "    raise RuntimeError('CRM down')\n"
    )
    flow = make_flow(tmp_path, {"scripts/post.py": script}, post_script="scripts/post.py")
    erp, omnitron, saves = FakeErpClient(), FakeOmnitronClient(), Saves()
    batch = runner(flow, omnitron, erp)

    first = batch.run(items(1, 2), BatchCheckpoint(), saves)
    flag.unlink()
    second = batch.run(items(1, 2), saves.checkpoint(), saves, resumed=True)

    assert first[1].progress.failure.step.stage is Stage.POST_SCRIPT
    assert second[1].progress.posted.ran and [record.step.stage for record in second[1].fresh] == [Stage.POST_SCRIPT]
    assert len(omnitron.writes) == 2 and erp.sent_pks() == [1, 2]


def test_the_summary_names_each_plans_relation_outcome_and_failed_stage(tmp_path):
    erp = FakeErpClient(lambda body: ErpAnswer(status_code=422 if body["pk"] == 2 else 201))
    omnitron = FakeOmnitronClient(failing={3: 5})
    plans = runner(make_flow(tmp_path), omnitron, erp).run(items(1, 2, 3), BatchCheckpoint(), Saves())
    never_ran = PlanProgress(ref=PlanRef(plan_pk=4, order_number="429453004"))

    summary = summarize([plan.progress for plan in plans] + [never_ran])

    assert [(row["plan"], row["relation"], row["omnitron"]) for row in summary.rows] == [
        (1, "continue", "approved"),
        (2, "failure", "rejected"),
        (3, "continue", None),
        (4, None, None),
    ]
    assert summary.rows[2]["error"].startswith("write_omnitron: OmnitronError: Omnitron POST")
    assert summary.rows[3]["error"] == "did not finish (see the plan's task instances)"
    assert [row["plan"] for row in summary.failed] == [3, 4]


class DictStateStore:
    """The task state store's get/set, in memory (the end-to-end tests use Airflow's own)."""

    def __init__(self):
        self.values: dict = {}

    def get(self, key):
        return self.values.get(key)

    def set(self, key, value):
        self.values[key] = value


def checkpoint_of(count: int, version: str) -> BatchCheckpoint:
    plans = {
        str(pk): PlanProgress(ref=PlanRef(plan_pk=pk, order_number=f"4294{pk:05d}", modified_date=version(pk)))
        for pk in range(count)
    }
    return BatchCheckpoint(plans=plans)


def test_a_checkpoint_that_compresses_well_is_one_value_of_the_store():
    from order_cancel.airflow.run_data import BATCH_STATE
    from order_cancel.airflow.state_codec import load_state, save_state

    checkpoint = checkpoint_of(2000, lambda pk: "2026-03-01")
    store = DictStateStore()
    save_state(store, BATCH_STATE, checkpoint)

    assert list(store.values) == [BATCH_STATE] and store.get(BATCH_STATE)["encoding"] == "zlib+base64"
    assert len(json.dumps(store.get(BATCH_STATE))) < 64 * 1024
    assert load_state(store, BATCH_STATE, BatchCheckpoint) == checkpoint


def test_a_big_checkpoint_is_stored_compressed_in_few_pieces_each_under_the_store_limit():
    from order_cancel.airflow.run_data import BATCH_STATE
    from order_cancel.airflow.state_codec import load_state, save_state

    checkpoint = checkpoint_of(3000, lambda pk: hashlib.sha256(str(pk).encode()).hexdigest())
    store = DictStateStore()
    save_state(store, BATCH_STATE, checkpoint)
    save_state(store, BATCH_STATE, checkpoint)  # a second save goes to the other slot

    index = store.get(BATCH_STATE)
    assert index["encoding"] == "zlib+base64" and index["slot"] == 1 and index["pieces"] > 1
    assert index["pieces"] < len(checkpoint.model_dump_json()) / 30_000 / 2, "compressed: far fewer pieces"
    assert all(len(json.dumps(value)) < 64 * 1024 for value in store.values.values())
    assert load_state(store, BATCH_STATE, BatchCheckpoint) == checkpoint


def test_the_journal_keeps_what_each_plan_added_and_reads_each_plan_whole(tmp_path):
    from order_cancel.airflow.run_data import BatchJournal

    store, saves = DictStateStore(), Saves()
    plans = runner(make_flow(tmp_path), FakeOmnitronClient(), FakeErpClient()).run(
        items(1, 2), BatchCheckpoint(), saves
    )
    journal = BatchJournal(store)
    for group in saves.groups:
        journal.keep(group)

    stored = [BatchCheckpoint.model_validate_json(value["value"]) for value in store.values.values()]
    plan_1 = [[record.step for record in group.plans["1"].records] for group in stored if "1" in group.plans]
    assert plan_1[-1] == [Step.WRITE_OMNITRON], "a group holds only what the plan added since it was kept"
    read = BatchJournal(store).read()
    assert {key: progress.records for key, progress in read.plans.items()} == {
        "1": plans[0].progress.records,
        "2": plans[1].progress.records,
    }
