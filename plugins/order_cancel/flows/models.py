"""Flow file models: one YAML file describes one Order Cancel Flow (one DAG).

The field names are the contract with users (docs/flow-files.md; shared/reference/flow-config.md):
fields may be added, never renamed. The models also give the flow file's JSON Schema.
"""

from __future__ import annotations

import datetime as dt
import string
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from order_cancel.flows.schedule import Schedule, airflow_schedule

# Airflow refuses to expand a list longer than [core] max_map_length (1024 by default).
MAX_PLANS_PER_RUN_LIMIT = 1024
# What Airflow's metadata database holds at most: a DAG tag, an id (connection, pool).
TAG_MAX_LENGTH = 100
ID_MAX_LENGTH = 250
# The longest wait, time limit or delay a flow file may give, in seconds (a day): anything longer is
# a typo, and an endless one makes a DAG that cannot be built or a script that always fails.
MAX_SECONDS = 86_400


class CancelType(StrEnum):
    CANCEL = "cancel"
    REFUND = "refund"
    ALL = "all"


class CancelStatus(StrEnum):
    WAITING = "waiting"
    CONFIRMED = "confirmed"
    COMPLETED = "completed"
    CONFIRMATION_WAITING = "confirmation_waiting"
    ORDER_TRANSACTION = "order_transaction"

    @property
    def writes_status(self) -> bool:
        """Completed and Order Transaction flows never move a plan's status (the seed ignores Next State)."""
        return self not in (CancelStatus.COMPLETED, CancelStatus.ORDER_TRANSACTION)


class NextState(StrEnum):
    APPROVED = "approved"
    CONFIRMATION_WAITING = "confirmation_waiting"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"


class PlanTasks(StrEnum):
    """How a plan's work is laid out in tasks (without `batch`)."""

    PER_STEP = "per_step"
    SINGLE = "single"


class Layout(StrEnum):
    """The task layout of a flow's plans: `plan_tasks`, or batches."""

    PER_STEP = "per_step"
    SINGLE = "single"
    BATCH = "batch"


class HttpMethod(StrEnum):
    POST = "POST"
    GET = "GET"
    PUT = "PUT"
    PATCH = "PATCH"


def _resolve_flow_file(value: Path, info: ValidationInfo) -> Path:
    """Scripts and specs must live in the flow folder, so a flow file cannot run code from elsewhere."""
    source = (info.context or {}).get("source")
    if source is None:
        return value
    folder = Path(source).parent.resolve()
    resolved = (folder / value).resolve()
    if not resolved.is_relative_to(folder):
        raise ValueError(f"{value} points outside the flow folder {folder}")
    if not resolved.is_file():
        raise ValueError(f"file {value} not found in {folder}")
    return resolved


FlowFile = Annotated[Path, AfterValidator(_resolve_flow_file)]
ConnId = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH)]
Tag = Annotated[str, Field(min_length=1, max_length=TAG_MAX_LENGTH)]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]
# A date ("2026-01-01") or a date and time; one type, so that a bad value gives one error.
DateOrTime = Annotated[
    dt.datetime,
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}),
]


def _mapping_source(value: Any, info: ValidationInfo) -> Any:
    """A mapping is a spec file (a path) or the spec inline (a list or one operation object)."""
    if isinstance(value, str):
        return _resolve_flow_file(Path(value), info)
    if value is None or isinstance(value, (list, dict)):
        return value
    raise ValueError(
        "must be the path of a Jolt spec file, or the spec itself inline (a list of operations or one operation)"
    )


Mapping = Annotated[
    Path | list[Any] | dict[str, Any] | None,
    BeforeValidator(_mapping_source),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array"}, {"type": "object"}, {"type": "null"}]}),
]


class _Model(BaseModel):
    # A misspelt key is an error that names it, never a silently ignored setting. The attribute
    # docstrings become the JSON Schema's descriptions, which editors show while a user types.
    # Numbers are finite: YAML's .inf and a text "1e400" are refused, never a timeout that never ends.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)


class OmnitronSettings(_Model):
    """Omnitron API settings."""

    conn_id: ConnId
    """Airflow connection: host = Omnitron's domain URL, login/password = the API user."""
    timeout_seconds: Seconds = 30
    """Seconds to wait for each Omnitron answer."""


def _split_channel_ids(value: Any) -> Any:
    """The Integrator takes channel ids as "1,2,3"; a YAML list works too."""
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")] if value.strip() else []
        if "" in parts:  # "1,,2": a missing id, not one to skip
            raise ValueError(f"{value!r} has an empty channel id between its commas; write them as '1,2,3'")
        return parts
    return value


ChannelIds = Annotated[
    list[Annotated[int, Field(ge=1)]],
    BeforeValidator(_split_channel_ids),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "array", "items": {"type": "integer", "minimum": 1}},
                {"type": "string"},
                {"type": "integer", "minimum": 1},
            ]
        }
    ),
]


class GetDataSettings(_Model):
    """Get Data From Omnitron: which cancellation plans a run takes."""

    channel_type: str = Field(min_length=1)
    """The sales channel type of the plans (required)."""
    cancel_type: CancelType = CancelType.ALL
    """cancel, refund or all."""
    cancel_status: CancelStatus = CancelStatus.WAITING
    """The status of the plans to fetch."""
    channel_ids: ChannelIds = Field(default_factory=list)
    """Channel ids, a list or "1,2,3"; empty or absent = every channel."""
    completed_since: DateOrTime | None = None
    """Completed flows: where the very first run starts (default: the start of its data interval)."""
    page_size: int = Field(default=100, ge=1, le=1000)
    """Omnitron's page size (`limit`)."""
    max_plans_per_run: int = Field(default=500, ge=1, le=100_000)
    """At most this many plans per run; the rest wait for the next run."""
    retry_pending_for: dt.timedelta = Field(default=dt.timedelta(days=1), ge=dt.timedelta(0), le=dt.timedelta(days=365))
    """Completed flows: how long a plan the ERP could not decide on (do_nothing) is fetched again by
    the following runs ("P1D", "PT6H" or seconds; 0: never, as the Integrator)."""


class TokenLogin(_Model):
    """Integrator "JWT auth": POST credentials, read the token from the answer, send it in a header."""

    type: Literal["token"]
    """`token`."""
    url: str = Field(min_length=1)
    """The login URL: absolute, or relative to the ERP connection's host."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers of the login request."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra fields of the login body, beside username and password."""
    token_path: str = "access_token"
    """The dotted path of the token in the login answer."""
    header: str = "Authorization"
    """The header that carries the token."""
    prefix: str | None = None
    """Sent before the token (e.g. Bearer); without it the token is sent alone."""


class BasicLogin(_Model):
    """HTTP basic auth with the ERP connection's login and password."""

    type: Literal["basic"]
    """`basic`."""


class HeaderLogin(_Model):
    """A permanent token: the connection's password, sent in `header` with `prefix`."""

    type: Literal["header"]
    """`header`."""
    header: str = "Authorization"
    """The header that carries the token."""
    prefix: str | None = None
    """Sent before the token (e.g. Bearer)."""


ErpLogin = Annotated[TokenLogin | BasicLogin | HeaderLogin, Field(discriminator="type")]


class ErpSettings(_Model):
    """The customer's ERP."""

    conn_id: ConnId
    """Airflow connection: host = the ERP's base URL, login/password = the ERP user (or the permanent token)."""
    login: ErpLogin | None = None
    """token, basic or header; absent = no ERP authentication."""
    timeout_seconds: Seconds = 30
    """Seconds to wait for each ERP answer; no answer in time = do_nothing."""
    max_auth_retries: int = Field(default=2, ge=0, le=10)
    """New ERP logins and resends after auth_fail, before the plan is left for a later run."""
    pool: str | None = Field(default=None, min_length=1, max_length=256)
    """An Airflow pool shared by every flow that writes to this ERP."""
    max_parallel_writes: int | None = Field(default=None, ge=1, le=MAX_PLANS_PER_RUN_LIMIT)
    """ERP writes of one run in flight at most."""


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Method = Annotated[
    HttpMethod,
    BeforeValidator(_upper),
    WithJsonSchema({"enum": [case(method.value) for method in HttpMethod for case in (str.upper, str.lower)]}),
]


class QueryCheckSettings(_Model):
    """Ask the ERP whether it already has a plan before sending it (Akinon's Order Flow "query check"):
    for an ERP that ignores Idempotency-Key, a plan whose answer was lost is then not booked twice."""

    url: str = Field(min_length=1)
    """Absolute, or relative to the ERP connection's host; the plan's fields in str.format style:
    {pk}, {order[number]}."""
    method: Method = HttpMethod.GET
    """The HTTP method of the question."""
    found_status: list[Annotated[int, Field(ge=100, le=599)]] | None = None
    """The answers that mean "the ERP already has this plan" (default [200])."""
    script: FlowFile | None = None
    """Instead of found_status: a response-style script that sets relation continue (already there)
    or anything else (send it)."""

    @field_validator("url")
    @classmethod
    def _a_format_template(cls, value: str) -> str:
        try:
            list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a str.format template ({exc}); write fields as {{pk}}") from None
        return value

    @model_validator(mode="after")
    def _one_way_to_decide(self) -> QueryCheckSettings:
        if self.script is not None and self.found_status is not None:
            raise ValueError("give found_status or script, not both")
        return self

    @property
    def found(self) -> list[int]:
        return self.found_status if self.found_status is not None else [200]


class WriteErpSettings(_Model):
    """Write Data to ERP."""

    url: str = Field(min_length=1)
    """The Cancellation API URL: absolute, or relative to the ERP connection's host."""
    method: Method = HttpMethod.POST
    """POST, GET (the body as query parameters), PUT or PATCH."""
    custom_response: bool = False
    """true = a response script decides each plan's relation; false = the default table."""
    response_script: FlowFile | None = None
    """The response script (default: the Integrator's default template)."""
    query_check: QueryCheckSettings | None = None
    """Ask the ERP before sending whether it already has the plan."""


class WriteOmnitronSettings(_Model):
    """Write Data to Omnitron."""

    next_state: NextState = NextState.APPROVED
    """The plan's state once the ERP accepted it (ignored by completed and order_transaction flows)."""


class WebhookAlarm(_Model):
    """An HTTP connection (host = the webhook's base URL) and the path to POST the alarm to."""

    conn_id: ConnId
    """Airflow HTTP connection: host = the webhook's base URL."""
    endpoint: str | None = None
    """The path the alarm is POSTed to (default: the connection's host itself)."""


class EmailAlarm(_Model):
    """Alarm e-mails through an SMTP connection."""

    to: list[str] = Field(min_length=1)
    """The addresses the alarm goes to."""
    conn_id: ConnId = "smtp_default"
    """Airflow SMTP connection."""


class AlarmSettings(_Model):
    """The Integrator's alarms: a run's error rate, and the flow's average run time."""

    error_rate: float | None = Field(default=None, gt=0, le=1)
    """Alarm when this share of a run's plans ends in failure or an error."""
    average_flow_time_seconds: Seconds | None = None
    """Alarm when the average run time of the last `average_over_runs` runs is above this."""
    average_over_runs: int = Field(default=10, ge=1, le=100)
    """How many of the latest runs the average run time is taken over."""
    webhook: WebhookAlarm | None = None
    """Send each alarm to a webhook."""
    email: EmailAlarm | None = None
    """Send each alarm by e-mail."""


class BatchSettings(_Model):
    """High-volume mode: map over batches of plans, each processing its plans concurrently."""

    size: int = Field(default=250, ge=1, le=1000)
    """Plans per mapped task instance."""
    concurrency: int = Field(default=8, ge=1, le=64)
    """Plans of a batch processed at the same time (threads)."""


class FlowConfig(_Model):
    """One Order Cancel Flow (one Airflow DAG). Relative script and mapping paths are resolved
    against the flow file's folder and must stay inside it. Credentials live in Airflow connections."""

    flow_id: str = Field(pattern=r"^[a-z0-9_]+$", max_length=200)
    """The DAG id: lowercase letters, digits and underscores."""
    description: str | None = None
    """The DAG's description in the Airflow UI (default: the flow file's name)."""
    schedule: str | None = None
    """A five-field cron, an Airflow preset (@hourly, @daily, ...) or a NiFi/Quartz cron with seconds 0;
    null = manual only."""
    start_date: DateOrTime = dt.datetime(2026, 1, 1)
    """The first data interval's start (a date or a date and time, in `timezone`)."""
    timezone: str = "UTC"
    """The time zone the cron runs in (e.g. Europe/Istanbul)."""
    tags: list[Tag] = Field(default_factory=list)
    """Extra DAG tags (the DAG always has `order-cancel` and its cancel status)."""
    catchup: bool = False
    """Whether Airflow runs the schedule's missed intervals since `start_date`."""
    retries: int = Field(default=2, ge=0, le=20)
    """Airflow retries of each task (exponential backoff); never for failures a retry cannot mend."""
    retry_delay_seconds: float = Field(default=30, ge=0, le=MAX_SECONDS)
    """The first retry's delay; each next one doubles it, up to 30 minutes."""

    omnitron: OmnitronSettings
    """Omnitron: its connection and time limit."""
    get_data: GetDataSettings
    """Get Data From Omnitron: which plans a run takes."""
    script: FlowFile | None = None
    """Script Step: a Python file run once per plan."""
    mapping: Mapping = None
    """Mapping Step: a Jolt spec file (a chain array or one operation), or the spec inline."""
    script_timeout_seconds: Seconds = 300
    """The time limit of every script run."""
    attributes: dict[str, str] = Field(default_factory=dict)
    """Static attributes every script of the flow reads with get_attribute (e.g. a CRM URL)."""
    erp: ErpSettings
    """The ERP: its connection, login and limits."""
    write_erp: WriteErpSettings
    """Write To ERP: where each plan is sent and how the answer is read."""
    write_omnitron: WriteOmnitronSettings = WriteOmnitronSettings()
    """Write To Omnitron: what an accepted plan becomes."""
    post_script: FlowFile | None = None
    """Post Script: runs after an accepted plan's Omnitron write; its output is not used."""
    dry_run: bool = False
    """Fetch and transform the real plans, record each ERP request, send and write nothing."""
    plan_tasks: PlanTasks | None = None
    """per_step (the default): a task instance per plan and step; single: one task instance per plan
    that runs all of its steps. Not with `batch`, whose failed plans continue in one task each."""
    batch: BatchSettings | None = None
    """High-volume mode: plans in batches, a task instance per batch."""
    alarms: AlarmSettings | None = None
    """The Integrator's alarms (error rate, average run time)."""

    @model_validator(mode="after")
    def _mappable(self) -> FlowConfig:
        tasks = (
            -(-self.get_data.max_plans_per_run // self.batch.size) if self.batch else self.get_data.max_plans_per_run
        )
        if tasks > MAX_PLANS_PER_RUN_LIMIT:
            raise ValueError(
                f"get_data.max_plans_per_run: {self.get_data.max_plans_per_run} plans make {tasks} mapped tasks, more "
                f"than Airflow's max_map_length ({MAX_PLANS_PER_RUN_LIMIT}); lower it or use a larger batch.size"
            )
        if self.batch and self.plan_tasks:
            raise ValueError(
                "plan_tasks: does not apply with batch: a batch's failed plans always continue in one task each"
            )
        return self

    @property
    def layout(self) -> Layout:
        if self.batch:
            return Layout.BATCH
        return Layout.SINGLE if self.plan_tasks is PlanTasks.SINGLE else Layout.PER_STEP

    # Set by the loader, not by users: where the file is, for messages.
    _source: Path | None = PrivateAttr(default=None)

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        airflow_schedule(value)  # raises ScheduleError (a ValueError) with a sentence
        return value

    @property
    def effective_schedule(self) -> Schedule:
        """The schedule as Airflow runs it (a Quartz cron becomes its five-field twin)."""
        return airflow_schedule(self.schedule)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def source(self) -> Path | None:
        return self._source


def json_schema() -> dict[str, Any]:
    """The flow file's JSON Schema (draft 2020-12), for editors: fields, types, defaults, help."""
    schema = FlowConfig.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "Order Cancel Flow file"}
