"""The batch runner and the run summary on their own (no Airflow, no HTTP): each plan isolated, the
checkpoint kept after the ERP phase, a second try that runs only what is left, and the summary rows."""

from __future__ import annotations

import json

from fakes.data import make_plan
from order_cancel.clients.erp import ErpAnswer
from order_cancel.pipeline.batch import BatchCheckpoint, BatchRunner
from order_cancel.pipeline.plan import PlanProgress, PlanRef, Stage, WorkItem
from order_cancel.pipeline.steps import PlanPipeline
from order_cancel.pipeline.summary import summarize
from tests.fake_clients import FakeClients, FakeErpClient, FakeOmnitronClient
from tests.test_pipeline import make_flow


class Saves:
    def __init__(self) -> None:
        self.checkpoints: list[BatchCheckpoint] = []

    def __call__(self, checkpoint: BatchCheckpoint) -> None:
        self.checkpoints.append(checkpoint)


def items(*pks: int) -> list[WorkItem]:
    return [WorkItem.of(make_plan(pk, order_pk=100 + pk)) for pk in pks]


def runner(flow, omnitron: FakeOmnitronClient, erp: FakeErpClient) -> BatchRunner:
    return BatchRunner(PlanPipeline.build(flow), FakeClients(omnitron, erp), concurrency=4)


def test_a_batch_without_failures_delivers_every_plan_and_keeps_the_erp_phase(tmp_path):
    erp, omnitron, saves = FakeErpClient(), FakeOmnitronClient(), Saves()

    plans = runner(make_flow(tmp_path), omnitron, erp).run(items(1, 2, 3), BatchCheckpoint(), saves)

    assert [plan.progress.written.outcome for plan in plans] == ["approved"] * 3
    assert erp.sent_pks() == [1, 2, 3] and len(omnitron.writes) == 3
    [after_erp] = saves.checkpoints  # nothing failed: no checkpoint after the Omnitron phase
    assert all(progress.delivery and not progress.written for progress in after_erp.plans.values())


def test_a_failed_plan_fails_alone_and_a_second_try_runs_only_what_is_left(tmp_path):
    erp, omnitron, saves = FakeErpClient(), FakeOmnitronClient(failing={2: 1}), Saves()
    batch = runner(make_flow(tmp_path), omnitron, erp)

    first = batch.run(items(1, 2, 3), BatchCheckpoint(), saves)
    assert [plan.progress.failure is not None for plan in first] == [False, True, False]
    checkpoint = saves.checkpoints[-1]
    second = batch.run(items(1, 2, 3), checkpoint, saves)

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
    second = batch.run(items(1, 2), saves.checkpoints[-1], saves)

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


def test_a_big_checkpoint_is_stored_compressed_in_few_pieces_each_under_the_store_limit():
    from order_cancel.airflow.run_data import BATCH_STATE, load_state, save_state

    plans = {
        str(pk): PlanProgress(ref=PlanRef(plan_pk=pk, order_number=f"4294{pk:05d}", modified_date="2026-03-01"))
        for pk in range(2000)
    }
    checkpoint = BatchCheckpoint(plans=plans)
    store = DictStateStore()
    save_state(store, BATCH_STATE, checkpoint)
    save_state(store, BATCH_STATE, checkpoint)  # a second save goes to the other slot

    index = store.get(BATCH_STATE)
    assert index["encoding"] == "zlib+base64" and index["slot"] == 1
    assert index["pieces"] < len(checkpoint.model_dump_json()) / 30_000 / 4, "compressed: far fewer pieces"
    assert all(len(json.dumps(value)) < 64 * 1024 for value in store.values.values())
    assert load_state(store, BATCH_STATE, BatchCheckpoint) == checkpoint
