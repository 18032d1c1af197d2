"""Airflow operators of the Order Cancel Flow. They stay thin: hooks build the clients, `plan_steps`
does the work, and an operator wires the two to Airflow (templated input, XCom, logs, failure).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import html
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import requests
from airflow.providers.http.notifications.http import HttpNotifier
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseHook, BaseOperator, Variable
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

from order_cancel.airflow_api import AIRFLOW_API_CONN_ID, AirflowApi
from order_cancel.alarms import RunReport, crossed, recent_run_times, run_times_key
from order_cancel.batch import BatchRunner, Checkpoint, batches, checkpoint_key, per_thread
from order_cancel.config import CancelStatus, FlowConfig
from order_cancel.erp import ErpLoginRefused
from order_cancel.evaluation import EvaluationError
from order_cancel.fetch import fetch_work_items
from order_cancel.hooks import ConnectionSettingsError, ErpHook, OmnitronHook
from order_cancel.mapping import MappingError
from order_cancel.omnitron import OmnitronLoginError
from order_cancel.plan_steps import DRY_RUN, FlowSteps, PlanDataError
from order_cancel.scripting import ScriptError, logged_attributes
from order_cancel.summary import PLAN_ERROR_KEY, SUMMARY_KEY, flatten, summarize
from order_cancel.watermark import Watermark, iso, run_window, variable_key

# Failures that a retry cannot mend: the task fails at once, without retries. Scripts and specs
# (of any kind: syntax, exception, time limit, bad output), refused credentials, a connection that
# is not defined or has no host. Timeouts, 5xx and refused connections keep their retries.
UNMENDABLE = (
    ScriptError,
    MappingError,
    PlanDataError,
    EvaluationError,
    OmnitronLoginError,
    ErpLoginRefused,
    AirflowNotFoundException,
    ConnectionSettingsError,
)

NEXT_WATERMARK_KEY = "next_watermark"
ITEM_KEY_PREFIX = "plan_item."
BATCH_KEY_PREFIX = "plan_batch."
XCOM_RETURN_KEY = BaseXCom.XCOM_RETURN_KEY
PLAN_LABEL = "plan {{ task.step_input.ref.plan_pk }} · order {{ task.step_input.ref.order_number }}"
BATCH_LABEL = (
    "plans {{ task.plan_refs[0].ref.plan_pk }}–{{ task.plan_refs[-1].ref.plan_pk }}"
    " ({{ task.plan_refs | length }})"
)


@contextlib.contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Keeps Python's garbage collector off the objects that existed before the block.

    A task that holds hundreds of plans makes the collector walk its oldest generation, which in an
    Airflow task process holds every imported module: 0.4 s per walk here, once or twice per 500
    plans, more than the HTTP work. Frozen, those objects are skipped (`gc.freeze`); the block's own
    garbage is still collected.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def stored_plans(context: Any, prefix: str) -> Any:
    """The plan (or batch of plans) fetch_plans stored for this map index (see `FetchPlansOperator`)."""
    ti = context["ti"]
    return json.loads(ti.xcom_pull(task_ids="fetch_plans", key=f"{prefix}{ti.map_index}"))


class FlowOperator(BaseOperator):
    """An operator that belongs to one flow file. Subclasses implement `run`; a failure that a
    retry cannot mend (`UNMENDABLE`) fails the task without its retries."""

    ui_color = "#e8f0fe"

    def __init__(self, *, flow: FlowConfig, **kwargs: Any):
        super().__init__(**kwargs)
        self.flow = flow

    def execute(self, context: Any) -> Any:
        try:
            return self.run(context)
        except UNMENDABLE as exc:
            raise AirflowFailException(f"{exc} (not retried: a retry cannot mend this)") from exc

    def run(self, context: Any) -> Any:
        raise NotImplementedError


def _level(name: str) -> int:
    return logging.getLevelNamesMapping().get(name.upper(), logging.INFO)


def is_dry_run(flow: FlowConfig, context: Any) -> bool:
    """A dry run is asked for by the flow file or by the run's conf: {"dry_run": true}."""
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    return flow.dry_run or bool(conf.get(DRY_RUN))


class LoginOperator(FlowOperator):
    """Login Step: checks the Omnitron (and ERP) credentials before any plan is touched.

    The tokens stay in the worker process; nothing of them reaches XCom or the log.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(do_xcom_push=False, **kwargs)

    def run(self, context: Any) -> None:
        OmnitronHook(self.flow.omnitron).get_conn().login()
        self.log.info("Logged in to Omnitron with connection %r", self.flow.omnitron.conn_id)
        if self.flow.erp.login is not None and not is_dry_run(self.flow, context):
            ErpHook(self.flow.erp).get_conn().login()
            self.log.info("ERP login (%s) with connection %r is ready", self.flow.erp.login.type, self.flow.erp.conn_id)


class FetchPlansOperator(FlowOperator):
    """Get Data From Omnitron Step: the plans of this run, for the per-plan (or per-batch) tasks.

    Its return value is what the plan tasks are mapped over: the plans' refs, one per plan (per-plan
    mode) or a list per batch (batch mode). Airflow resolves a mapped task's argument by loading the
    whole upstream list, so that list holds only refs; each whole plan (or batch of plans) waits
    under an XCom key of its own, which only its task instance reads. It is stored as JSON text:
    pushing and pulling a structured value, Airflow walks every nested object (serialization,
    secrets masking); for a batch of 250 plans the pull took 70 ms against 15 ms as text.
    """

    @long_lived_objects_frozen()
    def run(self, context: Any) -> list[dict[str, Any]]:
        omnitron = OmnitronHook(self.flow.omnitron).get_conn()
        window = watermark = None
        if self.flow.get_data.cancel_status is CancelStatus.COMPLETED:
            dag_run = context["dag_run"]
            interval = (context.get("data_interval_start"), context.get("data_interval_end"))
            run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
            window = run_window(str(run_type), dag_run.conf or {}, interval)
            if window is None:
                watermark = self._watermark(context)
        items = fetch_work_items(omnitron, self.flow, window=window, watermark=watermark)
        self.log.info("Fetched %d cancellation plans: %s", len(items), [item["ref"]["plan_pk"] for item in items])
        if window is not None:
            self.log.info("Window run: plans modified from %s until %s; the watermark stays", window.start, window.end)
        elif watermark is not None and not is_dry_run(self.flow, context):
            advanced = watermark.advanced_over([item["plan"] for item in items])
            context["ti"].xcom_push(key=NEXT_WATERMARK_KEY, value=advanced.dumps())
        if self.flow.batch:
            groups, prefix = batches(items, self.flow.batch.size), BATCH_KEY_PREFIX
            mapped_over: list[Any] = [[{"ref": item["ref"]} for item in batch] for batch in groups]
        else:
            groups, prefix = items, ITEM_KEY_PREFIX
            mapped_over = [{"ref": item["ref"]} for item in items]
        for index, group in enumerate(groups):
            context["ti"].xcom_push(key=f"{prefix}{index}", value=json.dumps(group, ensure_ascii=False))
        return mapped_over

    def _watermark(self, context: Any) -> Watermark:
        stored = Variable.get(variable_key(self.flow.flow_id), default=None)
        if stored is not None:
            self.log.info("Watermark %s: %s", variable_key(self.flow.flow_id), stored)
            return Watermark.loads(stored)
        since = (
            self.flow.get_data.completed_since
            or context.get("data_interval_start")
            or context.get("logical_date")
            or dt.datetime.now(dt.timezone.utc)
        )
        self.log.info("No watermark yet: starting from plans modified since %s", since)
        return Watermark(iso(since))


class AdvanceWatermarkOperator(FlowOperator):
    """Moves a completed flow's watermark over the plans this run fetched, once they were processed.

    It runs whatever the plans did: a failed plan keeps its failed task instance (clear it to
    retry), and is not fetched again by later runs. A window run or a dry run leaves it alone.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(trigger_rule="all_done", **kwargs)

    def run(self, context: Any) -> str | None:
        proposed = context["ti"].xcom_pull(task_ids="fetch_plans", key=NEXT_WATERMARK_KEY)
        if proposed is None:
            self.log.info("Nothing to move: no plans were fetched from the watermark in this run")
            return None
        key = variable_key(self.flow.flow_id)
        stored = Variable.get(key, default=None)
        advanced = Watermark.loads(proposed).later(Watermark.loads(stored) if stored else None).dumps()
        Variable.set(key, advanced)
        self.log.info("Watermark %s set to %s", key, advanced)
        return advanced


class PlanStepOperator(FlowOperator):
    """One step of one plan (a mapped task instance, labelled with the plan and its order).

    A failure fails this plan only. Its reason is pushed to XCom for the run summary, and a failure
    that a retry cannot mend (script, mapping, bad data) skips the retries.
    """

    template_fields: Sequence[str] = ("step_input",)

    def __init__(self, *, step_input: Any, **kwargs: Any):
        kwargs.setdefault("map_index_template", PLAN_LABEL)
        super().__init__(**kwargs)
        self.step_input = step_input

    def run_step(self, steps: FlowSteps, step_input: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def load_input(self, context: Any) -> dict[str, Any]:
        return self.step_input

    def run(self, context: Any) -> dict[str, Any]:
        ref = self.step_input["ref"]
        try:
            step_input = self.load_input(context)
            result = self.run_step(FlowSteps.build(self.flow, dry_run=is_dry_run(self.flow, context)), step_input)
        except Exception as exc:
            reason = getattr(exc, "attributes", {}).get("log.script.error") or f"{type(exc).__name__}: {exc}"
            context["ti"].xcom_push(key=PLAN_ERROR_KEY, value={"ref": ref, "step": self.task_id, "error": reason})
            self._log_attributes(getattr(exc, "attributes", {}))
            if isinstance(exc, UNMENDABLE):
                raise AirflowFailException(f"plan {ref['plan_pk']} failed at {self.task_id}: {reason}") from exc
            raise
        for level, message in result.pop("logs", []):
            self.log.log(_level(level), "script: %s", message)
        self._log_attributes(result.get("attributes", {}))
        return result

    def _log_attributes(self, attributes: dict[str, str]) -> None:
        for key, value in logged_attributes(attributes).items():
            self.log.info("%s = %s", key, value)


class TransformPlanOperator(PlanStepOperator):
    """Script Step and Mapping Step: the plan becomes the ERP request body."""

    def load_input(self, context: Any) -> dict[str, Any]:
        """The whole plan, which fetch_plans stored under this map index's own key."""
        return stored_plans(context, ITEM_KEY_PREFIX)

    def run_step(self, steps: FlowSteps, step_input: dict[str, Any]) -> dict[str, Any]:
        return steps.transform(step_input)


class WriteErpOperator(PlanStepOperator):
    """Write Data to ERP Step with the response evaluation (re-login and resend on auth_fail)."""

    def run_step(self, steps: FlowSteps, step_input: dict[str, Any]) -> dict[str, Any]:
        erp = ErpHook(self.flow.erp).get_conn()
        omnitron = OmnitronHook(self.flow.omnitron).get_conn()
        delivery = steps.deliver(erp, step_input, lambda: omnitron.rejected_count(step_input["ref"]["order_pk"]))
        self.log.info(
            "ERP answered %s: relation %s", delivery["status_code"] or delivery["error"], delivery["relation"]
        )
        return delivery


class WriteOmnitronOperator(PlanStepOperator):
    """Write Data to Omnitron Step. A separate task, so that clearing it never re-sends to the ERP."""

    def run_step(self, steps: FlowSteps, step_input: dict[str, Any]) -> dict[str, Any]:
        written = steps.write_outcome(OmnitronHook(self.flow.omnitron).get_conn(), step_input)
        self.log.info("Omnitron: %s", written["omnitron"])
        return written


class PostScriptOperator(PlanStepOperator):
    """Post Script Step: after a successful Omnitron write; its failure undoes nothing."""

    def run_step(self, steps: FlowSteps, step_input: dict[str, Any]) -> dict[str, Any]:
        return steps.run_post_script(step_input)


class ProcessBatchOperator(FlowOperator):
    """High-volume mode: every step of a batch of plans, the plans processed concurrently.

    Each plan keeps its own relation, error and log lines (prefixed with the plan and its order). A
    batch with a failed plan fails after the others are done; its retry (or a clear) runs only
    the failed plans again, thanks to the batch checkpoint (see `order_cancel.batch`).
    """

    template_fields: Sequence[str] = ("plan_refs",)

    def __init__(self, *, plan_refs: Any, **kwargs: Any):
        super().__init__(do_xcom_push=False, **kwargs)
        self.plan_refs = plan_refs

    @long_lived_objects_frozen()
    def run(self, context: Any) -> None:
        """The batch's plans come from the XCom key fetch_plans stored them under for this map index."""
        ti = context["ti"]
        runner = BatchRunner(
            FlowSteps.build(self.flow, dry_run=is_dry_run(self.flow, context)),
            per_thread(OmnitronHook(self.flow.omnitron).client_factory()),
            per_thread(ErpHook(self.flow.erp).client_factory()),
            self.flow.batch.concurrency,
        )
        items = stored_plans(context, BATCH_KEY_PREFIX)
        key = checkpoint_key(self.flow.flow_id, context["run_id"], ti.map_index)
        # A first try has no checkpoint to read (its key names the run and the batch); a retry or a
        # cleared batch (Airflow counts a clear as a new try) has one if an earlier try left one.
        checkpoint = Checkpoint.loads(Variable.get(key, default=None) if ti.try_number > 1 else None)
        outcomes = runner.run(items, checkpoint, save=lambda done: Variable.set(key, done.dumps()))
        for outcome in outcomes:
            label = f"plan {outcome.ref['plan_pk']} · order {outcome.ref['order_number']}"
            for level, message in outcome.log_lines():
                self.log.log(_level(level), "%s: %s", label, message)
        errors = [outcome.error for outcome in outcomes if outcome.error]
        # JSON text, for the reason given in FetchPlansOperator (the UI shows it decoded all the same).
        results = [outcome.result for outcome in outcomes if outcome.result]
        ti.xcom_push(key=XCOM_RETURN_KEY, value=json.dumps(results, ensure_ascii=False))
        if errors:
            ti.xcom_push(key=PLAN_ERROR_KEY, value=errors)
            raise AirflowException(f"{len(errors)} of {len(outcomes)} plans of this batch failed; a retry runs only them")
        Variable.delete(key)


class RunSummaryOperator(FlowOperator):
    """One line per plan (plan, order, relation, Omnitron outcome); fails the run if any plan failed.

    It runs whatever the plans did (trigger rule all_done), and because it is the leaf of the DAG
    its failure keeps a run with a failed plan red in the UI.
    """

    def __init__(self, *, plan_task_ids: Sequence[str], **kwargs: Any):
        super().__init__(trigger_rule="all_done", do_xcom_push=False, **kwargs)
        self.plan_task_ids = list(plan_task_ids)

    @long_lived_objects_frozen()
    def run(self, context: Any) -> None:
        ti = context["ti"]
        fetched = ti.xcom_pull(task_ids="fetch_plans")
        if fetched is None:
            raise AirflowFailException("no plans were fetched: the login or fetch_plans task did not succeed")
        # A list of task ids always answers a list (one id with one mapped value answers the value).
        errors = ti.xcom_pull(task_ids=self.plan_task_ids, key=PLAN_ERROR_KEY) or []
        results = ti.xcom_pull(task_ids=self.plan_task_ids) or []
        summary = summarize(flatten(fetched), flatten(results), flatten(errors))
        for line in summary.lines():
            self.log.info("%s", line)
        # Published before failing, so a red run still shows what happened to each plan.
        ti.xcom_push(key=SUMMARY_KEY, value=summary.rows)
        started = context["dag_run"].start_date or dt.datetime.now(dt.timezone.utc)
        report = RunReport(summary.rows, (dt.datetime.now(dt.timezone.utc) - started).total_seconds())
        alarms = self._raise_alarms(context, report) if self.flow.alarms and not is_dry_run(self.flow, context) else []
        self._leave_note(context, report.note(alarms))
        if summary.failed:
            raise AirflowFailException(f"{len(summary.failed)} of {len(summary.rows)} plans failed: {summary.failed_refs()}")

    def _raise_alarms(self, context: Any, report: RunReport) -> list[str]:
        settings = self.flow.alarms
        key = run_times_key(self.flow.flow_id)
        recent = recent_run_times(Variable.get(key, default=None), report.seconds, settings.average_over_runs)
        Variable.set(key, json.dumps(recent))
        alarms = crossed(settings, report, recent)
        if not alarms:
            return []
        payload = report.payload(self.flow.flow_id, context["run_id"], alarms)
        for alarm in alarms:
            self.log.warning("Alarm: %s", alarm)
        for notifier in self._notifiers(payload):
            try:
                # notify(), not the notifier's __call__: that would render plan data as Jinja templates.
                notifier.notify(context)
            except Exception as exc:
                self.log.error("Alarm not delivered by %s: %s", type(notifier).__name__, exc)
        return alarms

    def _notifiers(self, payload: dict[str, Any]) -> list[Any]:
        settings, notifiers = self.flow.alarms, []
        if settings.webhook:
            notifiers.append(HttpNotifier(http_conn_id=settings.webhook.conn_id, endpoint=settings.webhook.endpoint, json=payload))
        if settings.email:
            notifiers.append(
                SmtpNotifier(
                    to=settings.email.to,
                    subject=f"Order cancel flow {self.flow.flow_id}: {'; '.join(payload['alarms'])}",
                    html_content=f"<pre>{html.escape(json.dumps(payload, indent=2, ensure_ascii=False))}</pre>",
                    smtp_conn_id=settings.email.conn_id,
                )
            )
        return notifiers

    def _leave_note(self, context: Any, note: str) -> None:
        """The run's summary as its note in the UI, through Airflow's REST API (see airflow_api)."""
        try:
            conn = BaseHook.get_connection(AIRFLOW_API_CONN_ID)
        except AirflowNotFoundException:
            self.log.info("No run note: the %r connection is not set", AIRFLOW_API_CONN_ID)
            return
        try:
            AirflowApi(conn).set_note(self.flow.flow_id, context["run_id"], note)
        except requests.RequestException as exc:
            self.log.warning("The run note was not set: %s", exc)
