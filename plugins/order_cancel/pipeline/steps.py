"""The one pipeline of a plan: Script Step, Mapping Step, Write Data to ERP with the response
evaluation (`erp_write`), Write Data to Omnitron (`omnitron_write`), Post Script.

Every layout runs it: the per-step tasks one stage each (`run_stage`), the batch runner a whole
plan (`advance`), the test panels and the CLI the parts they show. A step never raises for a plan's
failure: it returns its record with the error, and says whether a retry may mend it (`recording`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from order_cancel.clients.erp import ErpClient
from order_cancel.clients.omnitron import OmnitronClient
from order_cancel.flows.models import FlowConfig
from order_cancel.pipeline.erp_write import ErpWrite
from order_cancel.pipeline.evaluation import Relation
from order_cancel.pipeline.omnitron_write import write_outcome
from order_cancel.pipeline.plan import (
    ErpRecord,
    MappingRecord,
    PlanProgress,
    PostScriptRecord,
    ScriptRecord,
    Stage,
    Step,
    StepRecord,
    WorkItem,
)
from order_cancel.pipeline.recording import PlanDataError, failed, recorded
from order_cancel.runtime.jolt import JoltMapping, load_spec_file
from order_cancel.runtime.scripts import Script


class PlanClients(Protocol):
    """Where a plan's steps get their clients (one per thread where a batch runs threads)."""

    def omnitron(self) -> OmnitronClient: ...

    def erp(self) -> ErpClient: ...


def flow_stages(flow: FlowConfig) -> list[Stage]:
    """The stages a flow's plans go through (the post script only where the flow has one)."""
    return [Stage.TRANSFORM, Stage.WRITE_ERP, Stage.WRITE_OMNITRON] + ([Stage.POST_SCRIPT] if flow.post_script else [])


def plan_attributes(flow: FlowConfig, item: WorkItem) -> dict[str, str]:
    """The attributes every script of the plan starts with (NiFi attributes are strings)."""
    ref, plan = item.ref, item.plan
    order = plan["order"] if isinstance(plan.get("order"), dict) else {}
    attributes = {
        "channel_type": flow.get_data.channel_type,
        "cancel_status": flow.get_data.cancel_status.value,
        "plan_pk": ref.plan_pk,
        "plan_type": plan.get("plan_type"),
        "plan_status": plan.get("status"),
        "order_pk": ref.order_pk,
        "order_number": ref.order_number,
        "channel_id": order.get("channel"),
        "transaction_pk": ref.transaction_pk,
    }
    return {**flow.attributes, **{key: str(value) for key, value in attributes.items() if value is not None}}


@dataclass(frozen=True)
class PlanPipeline:
    """What the steps of one flow need, built once per task: compiled scripts and the Jolt chain."""

    flow: FlowConfig
    script: Script | None
    mapping: JoltMapping | None
    erp: ErpWrite
    post_script: Script | None
    timeout: float
    """The time limit of each script run."""

    @classmethod
    def build(cls, flow: FlowConfig, *, dry_run: bool = False, script_timeout: float | None = None) -> PlanPipeline:
        """Compiles the flow's scripts and builds its mapping; raises ScriptError or MappingError.
        `script_timeout` can only shorten the flow's own limit (the test panels do)."""
        timeout = min(script_timeout or flow.script_timeout_seconds, flow.script_timeout_seconds)
        return cls(
            flow=flow,
            script=Script.from_file(flow.script) if flow.script else None,
            mapping=_mapping(flow),
            erp=ErpWrite.build(flow, timeout, dry_run=dry_run),
            post_script=Script.from_file(flow.post_script) if flow.post_script else None,
            timeout=timeout,
        )

    # -- Script Step and Mapping Step ---------------------------------------------------------
    def transform(self, item: WorkItem, extra_attributes: dict[str, str] | None = None) -> list[StepRecord]:
        """The script's and the mapping's records, up to the first that failed. `extra_attributes`
        come on top of the plan's own, as if an earlier step had set them (the test panels)."""
        records: list[StepRecord] = []
        attributes, data = {**plan_attributes(self.flow, item), **(extra_attributes or {})}, item.plan
        if item.problem is not None:
            blank = ScriptRecord(ref=item.ref, attributes=attributes)
            problem = PlanDataError(item.problem, attributes, [])
            return [recorded(blank, lambda: failed(blank, problem))]
        if self.script is not None:
            script = recorded(
                ScriptRecord(ref=item.ref, attributes=attributes), lambda: self._run_script(item, attributes)
            )
            records.append(script)
            if script.failed:
                return records
            attributes, data = script.attributes, script.output
        if self.mapping is not None:
            mapping = self.mapping
            records.append(
                recorded(
                    MappingRecord(ref=item.ref, attributes=attributes),
                    lambda: MappingRecord(ref=item.ref, attributes=attributes, output=mapping.apply(data)),
                )
            )
        return records

    def _run_script(self, item: WorkItem, attributes: dict[str, str]) -> ScriptRecord:
        assert self.script is not None
        run = self.script.run(json.dumps(item.plan, ensure_ascii=False), attributes, timeout=self.timeout)
        if run.transferred == "failure":
            transferred = ScriptRecord(ref=item.ref, transferred=run.transferred)
            return failed(
                transferred, PlanDataError("the script transferred the plan to REL_FAILURE", run.attributes, run.logs)
            )
        try:
            output = json.loads(run.output_text)
        except ValueError as exc:
            message = f"the script's output is not JSON ({exc}): {run.output_text[:200]!r}"
            return failed(
                ScriptRecord(ref=item.ref, output=run.output_text), PlanDataError(message, run.attributes, run.logs)
            )
        return ScriptRecord(
            ref=item.ref, attributes=run.attributes, logs=run.logs, transferred=run.transferred, output=output
        )

    @staticmethod
    def body(progress: PlanProgress, item: WorkItem | None) -> Any:
        """The ERP request body: what the mapping (else the script) made of the plan, else the plan."""
        for step in (Step.MAPPING, Step.SCRIPT):
            record = progress.latest(step)
            if record is not None and not record.failed:
                return record.output
        return _needed(item, Stage.WRITE_ERP).plan

    # -- Post Script Step ----------------------------------------------------------------------
    def post(self, delivery: ErpRecord) -> PostScriptRecord:
        """Runs after a successful Omnitron write of an accepted plan; its output is not used."""
        post_script, blank = self.post_script, PostScriptRecord(ref=delivery.ref, attributes=delivery.attributes)

        def run() -> PostScriptRecord:
            if post_script is None or delivery.relation != Relation.CONTINUE.value:
                return blank
            variables = {"request_data": delivery.request_data, "response_data": delivery.response_data}
            run = post_script.run(
                json.dumps(variables, ensure_ascii=False),
                delivery.attributes,
                variables=variables,
                timeout=self.timeout,
            )
            return PostScriptRecord(ref=delivery.ref, attributes=run.attributes, logs=run.logs, ran=True)

        return recorded(blank, run)

    # -- a plan's stages -----------------------------------------------------------------------
    @property
    def stages(self) -> list[Stage]:
        return flow_stages(self.flow)

    def run_stage(
        self,
        stage: Stage,
        progress: PlanProgress,
        clients: PlanClients,
        item: WorkItem | None = None,
        *,
        resumed: bool = False,
    ) -> PlanProgress:
        """One stage of one plan, its input taken from the progress so far. The plan itself (`item`)
        is needed by the transform, and by the ERP write of a flow with neither script nor mapping.
        `resumed`: an earlier attempt of this task may have been lost in this stage (a retry, a
        clear, a resumed batch), so what it may have written is checked first."""
        ref = progress.ref
        if stage is Stage.TRANSFORM:
            return progress.add(*self.transform(_needed(item, stage)))
        if stage is Stage.WRITE_ERP:

            def rejected_count() -> int:
                return clients.omnitron().rejected_count(ref.order_pk)

            # A flow with neither script nor mapping has no transform record: the plan's own attributes.
            attributes = progress.attributes if progress.records else plan_attributes(self.flow, _needed(item, stage))
            body = self.body(progress, item)
            plan = item.plan if item else None
            return progress.add(self.erp.deliver(clients.erp(), ref, body, attributes, rejected_count, plan))
        delivery = progress.delivery
        if delivery is None:
            raise ValueError(f"{ref.label}: {stage.value} needs the ERP's decision first")
        if stage is Stage.WRITE_OMNITRON:
            check_first = resumed or progress.write_attempted
            return progress.add(write_outcome(self.flow, clients.omnitron(), delivery, check_first=check_first))
        return progress.add(self.post(delivery))

    def next_stage(self, progress: PlanProgress) -> Stage | None:
        """Where a plan resumes. The ERP is never sent a plan it has decided on; a plan whose
        script or mapping failed runs again from the start, with the same input."""
        if progress.delivery is None:
            transformed = [record for record in progress.records if record.step.stage is Stage.TRANSFORM]
            return Stage.WRITE_ERP if transformed and not transformed[-1].failed else Stage.TRANSFORM
        if progress.written is None:
            return Stage.WRITE_OMNITRON
        if Stage.POST_SCRIPT in self.stages and progress.posted is None:
            return Stage.POST_SCRIPT
        return None

    def advance(
        self,
        item: WorkItem,
        progress: PlanProgress,
        clients: PlanClients,
        *,
        until: Stage | None = None,
        after_stage: Callable[[Stage, PlanProgress], None] | None = None,
        resumed: bool = False,
    ) -> PlanProgress:
        """Runs the plan's stages from where it stands, up to `until` (included), or until one fails;
        `after_stage` sees the progress after each stage (to keep it); `resumed` as in `run_stage`."""
        start = self.next_stage(progress)
        if start is None:
            return progress
        for stage in self.stages[self.stages.index(start) :]:
            done = len(progress.records)
            progress = self.run_stage(stage, progress, clients, item, resumed=resumed)
            if after_stage is not None:
                after_stage(stage, progress)
            if any(record.failed for record in progress.records[done:]) or stage is until:
                break
        return progress


def _needed(item: WorkItem | None, stage: Stage) -> WorkItem:
    if item is None:
        raise ValueError(f"the {stage.value} stage needs the plan itself")
    return item


def _mapping(flow: FlowConfig) -> JoltMapping | None:
    if flow.mapping is None:
        return None
    if isinstance(flow.mapping, Path):
        return JoltMapping(load_spec_file(flow.mapping), source=str(flow.mapping))
    return JoltMapping(flow.mapping, source=f"{flow.source}: mapping")
