"""Flow file models: one YAML file describes one Order Cancel Flow (one DAG).

The field names are the contract with users (see README, "Flow file"). Loading is split in
small steps, like dag-factory: read YAML -> validate with pydantic -> (elsewhere) build a DAG.
Every error names the flow file and the field, so one bad file can be reported on its own.
"""

from __future__ import annotations

import datetime as dt
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

FLOWS_DIR_ENV = "ORDER_CANCEL_FLOWS_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLOWS_DIR = PROJECT_ROOT / "include" / "flows"
FLOW_FILE_PATTERNS = ("*.yaml", "*.yml")

# Airflow refuses to expand a list longer than [core] max_map_length (1024 by default).
MAX_PLANS_PER_RUN_LIMIT = 1024
SCHEDULE_PRESETS = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@annually"}


class CancelType(str, Enum):
    CANCEL = "cancel"
    REFUND = "refund"
    ALL = "all"


class CancelStatus(str, Enum):
    WAITING = "waiting"
    CONFIRMED = "confirmed"
    COMPLETED = "completed"
    CONFIRMATION_WAITING = "confirmation_waiting"
    ORDER_TRANSACTION = "order_transaction"

    @property
    def writes_status(self) -> bool:
        """Completed and Order Transaction flows never move a plan's status (the seed ignores Next State)."""
        return self not in (CancelStatus.COMPLETED, CancelStatus.ORDER_TRANSACTION)


class NextState(str, Enum):
    APPROVED = "approved"
    CONFIRMATION_WAITING = "confirmation_waiting"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"


class HttpMethod(str, Enum):
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


class _Model(BaseModel):
    # A misspelt key is an error that names it, never a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class OmnitronSettings(_Model):
    conn_id: str = Field(min_length=1)
    timeout_seconds: float = Field(default=30, gt=0)


class GetDataSettings(_Model):
    channel_type: str = Field(min_length=1)
    cancel_type: CancelType = CancelType.ALL
    cancel_status: CancelStatus = CancelStatus.WAITING
    channel_ids: list[int] = Field(default_factory=list)
    # Completed flows: where the first run starts when the flow has no watermark yet
    # (default: the start of that run's data interval, never "all history").
    completed_since: dt.datetime | None = None
    page_size: int = Field(default=100, ge=1, le=1000)
    max_plans_per_run: int = Field(default=500, ge=1, le=100_000)

    @field_validator("channel_ids", mode="before")
    @classmethod
    def _split_channel_ids(cls, value: Any) -> Any:
        """The Integrator takes channel ids as "1,2,3"; a YAML list works too."""
        if value is None:
            return []
        if isinstance(value, int):
            return [value]
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class TokenLogin(_Model):
    """Integrator "JWT auth": POST credentials, read the token from the answer, send it in a header."""

    type: Literal["token"]
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    token_path: str = "access_token"
    header: str = "Authorization"
    prefix: str | None = None


class BasicLogin(_Model):
    type: Literal["basic"]


class HeaderLogin(_Model):
    """A permanent token: the connection's password, sent in `header` with `prefix`."""

    type: Literal["header"]
    header: str = "Authorization"
    prefix: str | None = None


ErpLogin = Annotated[Union[TokenLogin, BasicLogin, HeaderLogin], Field(discriminator="type")]


class ErpSettings(_Model):
    conn_id: str = Field(min_length=1)
    login: ErpLogin | None = None
    timeout_seconds: float = Field(default=30, gt=0)
    # How often an auth_fail answer leads to a new ERP login and a resend before the plan is left for later.
    max_auth_retries: int = Field(default=2, ge=0, le=10)
    # So that a slow ERP is not flooded by mapped tasks: an Airflow pool shared by every flow that
    # writes to this ERP, and/or a cap on this run's ERP writes in flight.
    pool: str | None = None
    max_parallel_writes: int | None = Field(default=None, ge=1)


class WriteErpSettings(_Model):
    url: str = Field(min_length=1)
    method: HttpMethod = HttpMethod.POST
    custom_response: bool = False
    response_script: FlowFile | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _upper_method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class WriteOmnitronSettings(_Model):
    next_state: NextState = NextState.APPROVED


class WebhookAlarm(_Model):
    """An HTTP connection (host = the webhook's base URL) and the path to POST the alarm to."""

    conn_id: str = Field(min_length=1)
    endpoint: str | None = None


class EmailAlarm(_Model):
    to: list[str] = Field(min_length=1)
    conn_id: str = "smtp_default"


class AlarmSettings(_Model):
    """The Integrator's alarms: a run's error rate, and the flow's average run time."""

    error_rate: float | None = Field(default=None, gt=0, le=1)
    average_flow_time_seconds: float | None = Field(default=None, gt=0)
    average_over_runs: int = Field(default=10, ge=1, le=100)
    webhook: WebhookAlarm | None = None
    email: EmailAlarm | None = None


class BatchSettings(_Model):
    """High-volume mode: map over batches of plans, each processing its plans concurrently."""

    size: int = Field(default=250, ge=1, le=1000)
    concurrency: int = Field(default=8, ge=1, le=64)


class FlowConfig(_Model):
    """One flow file. Relative script and mapping paths are resolved against the flow file's folder."""

    flow_id: str = Field(pattern=r"^[a-z0-9_]+$", max_length=200)
    description: str | None = None
    schedule: str | None = None
    start_date: dt.date | dt.datetime = dt.date(2026, 1, 1)
    timezone: str = "UTC"
    tags: list[str] = Field(default_factory=list)
    catchup: bool = False
    retries: int = Field(default=2, ge=0, le=20)
    retry_delay_seconds: float = Field(default=30, ge=0)

    omnitron: OmnitronSettings
    get_data: GetDataSettings
    script: FlowFile | None = None
    mapping: FlowFile | list[Any] | dict[str, Any] | None = None
    script_timeout_seconds: float = Field(default=300, gt=0)
    # Static attributes every script of the flow reads with get_attribute (e.g. a CRM URL).
    attributes: dict[str, str] = Field(default_factory=dict)
    erp: ErpSettings
    write_erp: WriteErpSettings
    write_omnitron: WriteOmnitronSettings = WriteOmnitronSettings()
    post_script: FlowFile | None = None
    # Fetch and transform the real plans, record each ERP request, send and write nothing.
    dry_run: bool = False
    batch: BatchSettings | None = None
    alarms: AlarmSettings | None = None

    @model_validator(mode="after")
    def _mappable(self) -> FlowConfig:
        tasks = -(-self.get_data.max_plans_per_run // self.batch.size) if self.batch else self.get_data.max_plans_per_run
        if tasks > MAX_PLANS_PER_RUN_LIMIT:
            raise ValueError(
                f"get_data.max_plans_per_run: {self.get_data.max_plans_per_run} plans make {tasks} mapped tasks, more "
                f"than Airflow's max_map_length ({MAX_PLANS_PER_RUN_LIMIT}); lower it or use a larger batch.size"
            )
        return self

    # Set by the loader, not by users: where the file is, for messages.
    _source: Path | None = PrivateAttr(default=None)

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        if value is None or value in SCHEDULE_PRESETS:
            return value
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is neither a cron expression nor one of {sorted(SCHEDULE_PRESETS)}")
        return value

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


class FlowConfigError(Exception):
    """A flow file that cannot be used; `problems` holds one line per field."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {problem}" for problem in problems))


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def read_flow_file(path: Path) -> dict[str, Any]:
    """Step 1: parse the YAML of one flow file into a mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowConfigError(path, [f"cannot read the file: {exc}"]) from None
    except yaml.YAMLError as exc:
        raise FlowConfigError(path, [f"invalid YAML: {exc}".replace("\n", " ")]) from None
    if not isinstance(data, dict):
        raise FlowConfigError(path, ["the file must hold a mapping of flow settings"])
    return data


def validate_flow(data: dict[str, Any], path: Path) -> FlowConfig:
    """Step 2: validate the mapping; relative paths resolve against the file's folder."""
    try:
        flow = FlowConfig.model_validate(data, context={"source": path})
    except ValidationError as exc:
        raise FlowConfigError(path, [_describe(error) for error in exc.errors()]) from None
    flow._source = path
    return flow


def load_flow(path: Path) -> FlowConfig:
    path = Path(path)
    return validate_flow(read_flow_file(path), path)


def flows_dir() -> Path:
    return Path(os.environ.get(FLOWS_DIR_ENV) or DEFAULT_FLOWS_DIR)


def flow_files(folder: Path) -> list[Path]:
    return sorted({path for pattern in FLOW_FILE_PATTERNS for path in folder.glob(pattern)})


def load_flows(folder: Path | None = None) -> tuple[list[FlowConfig], list[FlowConfigError]]:
    """Every flow of a folder: the good ones, and one error per bad file (a bad file never hides the others)."""
    flows: list[FlowConfig] = []
    errors: list[FlowConfigError] = []
    seen: dict[str, Path] = {}
    for path in flow_files(folder or flows_dir()):
        try:
            flow = load_flow(path)
        except FlowConfigError as exc:
            errors.append(exc)
            continue
        if flow.flow_id in seen:
            errors.append(FlowConfigError(path, [f"flow_id: {flow.flow_id!r} is already used by {seen[flow.flow_id]}"]))
            continue
        seen[flow.flow_id] = path
        flows.append(flow)
    return flows, errors
