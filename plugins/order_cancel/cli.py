"""`python -m order_cancel`: check flow files, try scripts and Jolt specs, check a flow's
assumptions against Omnitron and the ERP, and read the plan ledger, without Airflow.

Exit codes: 0 success; 1 what was checked or tried failed (a flow file has problems, the script
raised, the mapping failed, an assumption of the flow is broken, Omnitron or the ledger's database
did not answer or refused us); 2
nothing could be tried (bad arguments, a missing or unreadable file, input that is not JSON, a
script that is not valid Python, a connection without a host). Every error is one line naming the
file, field or option; --debug adds the traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from order_cancel.clients.connection import ConnectionFields, env_variable
from order_cancel.clients.erp import ErpClient
from order_cancel.clients.factory import erp_factory, omnitron_factory
from order_cancel.clients.omnitron import OmnitronClient, OmnitronError
from order_cancel.clients.tokens import TokenStore
from order_cancel.flows.checks import inspect_flows
from order_cancel.flows.loading import FlowsFolderError, UnknownFlow, find_flow, flow_files, flows_dir
from order_cancel.flows.models import MAX_SECONDS, FlowConfig, json_schema
from order_cancel.ledger.history import as_json, histories, timeline_lines
from order_cancel.ledger.location import (
    LEDGER_CONN_ID,
    LEDGER_FILE,
    LedgerSettings,
    LedgerSettingsError,
    from_argument,
    from_environment,
)
from order_cancel.ledger.reconcile import reconcile_flow
from order_cancel.ledger.store import Ledger, Search
from order_cancel.panels.service import PanelInputError, try_flow
from order_cancel.pipeline.watermark import parse_time
from order_cancel.preflight import DEFAULT_PLANS, preflight
from order_cancel.preflight.findings import Verdict, table, tally
from order_cancel.runtime.jolt import JoltMapping, MappingError, load_spec_file
from order_cancel.runtime.scripts import DEFAULT_TIMEOUT, Script, ScriptFailed, ScriptSyntaxError

C = TypeVar("C")
USAGE_ERROR = 2
FAILURE = 1


class UsageError(Exception):
    """The command cannot run with what it was given (exit code 2)."""


class Failure(Exception):
    """What the command tried failed: a server or database did not answer, or refused us (exit code 1)."""


# -- Argument types ------------------------------------------------------------------------------


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def _key_value(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _variable(text: str) -> tuple[str, Any]:
    name, value = _key_value(text)
    return name, _json_or_text(value)


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_SECONDS:  # nan and inf too: a script limit that never ends is none
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, at most {MAX_SECONDS}, got {text!r}")
    return seconds


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return int(text)


_RELATIVE = re.compile(r"(\d+)([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def _moment(text: str) -> dt.datetime:
    """An ISO-8601 time, or a time ago: 30m, 6h, 7d."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        try:
            return dt.datetime.now(dt.UTC) - dt.timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} reaches back before the year 1") from None
    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO-8601 time or 30m / 6h / 7d, got {text!r}") from None


# -- Helpers -------------------------------------------------------------------------------------


def _json_or_text(text: str) -> Any:
    """Parsed JSON when the text is JSON, else the text: as the flow treats ERP bodies."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _print_logs(logs: list[tuple[str, str]]) -> None:
    for level, message in logs:
        print(f"{level.upper()}: {message}", file=sys.stderr)


# -- Commands ------------------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    folder = args.flows_dir or flows_dir()
    try:
        files = flow_files(folder)
    except FlowsFolderError as exc:
        raise UsageError(str(exc)) from None
    # An empty folder is an error: a mistyped folder must not pass as "all flows OK".
    if not files:
        print(f"no flow files in {folder}", file=sys.stderr)
        return 1
    inspection = inspect_flows(folder)
    for flow in inspection.loaded:
        if flow.effective_schedule.note:
            print(f"note: {flow.source}: schedule: {flow.effective_schedule.note}", file=sys.stderr)
    for error in inspection.errors:
        for problem in error.problems:
            print(f"{error.path}: {problem}")
    if inspection.errors:
        return 1
    flows = inspection.sound
    print(f"{len(flows)} flow file(s) OK: {', '.join(flow.flow_id for flow in flows)}")
    return 0


def _test_script(args: argparse.Namespace) -> int:
    try:
        script = Script(_read_text(args.script), str(args.script))
    except ScriptSyntaxError as exc:
        raise UsageError(f"syntax error: {exc}") from None
    input_text = _read_text(args.input)
    try:
        run = script.run(input_text, dict(args.attr), variables=dict(args.var), timeout=args.timeout)
    except ScriptFailed as exc:
        _print_logs(exc.logs)
        print(exc, file=sys.stderr)
        _print_json({"result_data": None, "attributes": exc.attributes})
        return 1
    except ValueError as exc:  # a --var named like a script API name (input_text, session, ...)
        raise UsageError(str(exc)) from None
    _print_logs(run.logs)
    if run.transferred == "failure":
        print("the script transferred the flow file to REL_FAILURE: in a Script Step the plan fails", file=sys.stderr)
    try:
        result_data = json.loads(run.output_text)
    except ValueError:
        result_data = run.output_text
        print(
            "the output is not JSON: as a Script Step this plan would fail at its transform "
            "(a response or post script's output is not used)",
            file=sys.stderr,
        )
    _print_json({"result_data": result_data, "attributes": run.attributes})
    return 0


def _test_mapping(args: argparse.Namespace) -> int:
    data = _read_json(args.input)
    try:
        result = JoltMapping(load_spec_file(args.spec), source=str(args.spec)).apply(data)
    except MappingError as exc:
        print(exc, file=sys.stderr)
        return 1
    _print_json(result)
    return 0


def _try_flow(args: argparse.Namespace) -> int:
    """The flow's own pipeline on one plan, as the test panels run it (nothing is sent)."""
    erp_body = _json_or_text(_read_text(args.erp_body)) if args.erp_body else None
    try:
        flow = find_flow(args.flow_id, args.flows_dir or flows_dir())
        result = try_flow(flow, _read_json(args.plan), dict(args.attr), args.erp_status, erp_body)
    except (UnknownFlow, PanelInputError) as exc:
        raise UsageError(str(exc)) from None
    _print_json(result)
    return 0 if result["failed_step"] is None else 1


def _open_ledger(args: argparse.Namespace) -> tuple[Ledger, LedgerSettings]:
    try:
        settings = from_argument(args.ledger) if args.ledger else from_environment()
    except LedgerSettingsError as exc:
        raise UsageError(str(exc)) from None
    database = settings.url.database
    if settings.url.get_backend_name() == "sqlite" and database and not Path(database).is_file():
        raise UsageError(
            f"no ledger at {database} ({settings.origin}): run a flow first, or name the ledger with --ledger URL "
            f"or {env_variable(LEDGER_CONN_ID)}"
        )
    try:
        return Ledger.open(settings.connect_url), settings
    except (SQLAlchemyError, ImportError) as exc:
        _ledger_failed(settings, exc)


def _ledger_failed(settings: LedgerSettings, exc: Exception) -> NoReturn:
    """A database that did not answer is a failure; one that is not a ledger, or a driver that is not
    installed, is what the user named."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    message = f"cannot open the ledger {settings.shown} ({settings.origin}): {reason}"
    if isinstance(exc, OperationalError):
        raise Failure(message) from None
    raise UsageError(message) from None


def _history(args: argparse.Namespace) -> int:
    ledger, settings = _open_ledger(args)
    flows = [args.flow] if args.flow else None
    search = Search(order_number=args.order, plan_pk=args.plan, flow_ids=flows, since=args.since, limit=args.limit)
    found = histories(ledger.find(search))
    if args.failed:
        found = [history for history in found if history.standing.failed]
    if args.json:
        print(as_json([attempt for history in found for attempt in history.attempts]))
    else:
        print("\n".join(timeline_lines(found)).rstrip())
    print(f"{len(found)} plan(s) in the ledger {settings.shown}", file=sys.stderr)
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    try:
        flow = find_flow(args.flow, args.flows_dir or flows_dir())
    except UnknownFlow as exc:
        raise UsageError(str(exc)) from None
    ledger, settings = _open_ledger(args)
    try:
        checked, found = reconcile_flow(ledger, _omnitron(flow), flow, args.since, dt.datetime.now(dt.UTC))
    except OmnitronError as exc:
        raise Failure(f"connection {flow.omnitron.conn_id!r}: {exc}") from None
    for discrepancy in found:
        print(discrepancy.line())
    print(f"{flow.flow_id}: {len(found)} discrepancy(ies) in {checked} plan(s) of the ledger {settings.shown}")
    return 1 if found else 0


def _preflight(args: argparse.Namespace) -> int:
    try:
        flow = find_flow(args.flow_id, args.flows_dir or flows_dir())
    except UnknownFlow as exc:
        raise UsageError(str(exc)) from None
    findings = preflight(flow, _omnitron(flow), _erp(flow), plans=args.plans)
    print("\n".join(table(findings)))
    print(f"{flow.flow_id}: {tally(findings)} (nothing was written)")
    return 1 if any(finding.verdict is Verdict.BROKEN for finding in findings) else 0


def _client(conn_id: str, factory: Callable[[ConnectionFields], Callable[[], C]]) -> C:
    """A client of a flow's connection as Airflow reads it from the environment."""
    try:
        conn = ConnectionFields.from_env(conn_id)
        if conn is None:
            raise UsageError(f"connection {conn_id!r} is not set: export {env_variable(conn_id)} as for Airflow")
        built = factory(conn)
    except ValueError as exc:  # ConnectionSettingsError (no host), or JSON that does not parse
        raise UsageError(f"{env_variable(conn_id)}: {exc}") from None
    return built()


def _omnitron(flow: FlowConfig) -> OmnitronClient:
    """Omnitron, through the flow's connection."""
    settings = flow.omnitron
    return _client(
        settings.conn_id, lambda conn: omnitron_factory(conn, timeout=settings.timeout_seconds, tokens=TokenStore())
    )


def _erp(flow: FlowConfig) -> ErpClient:
    """The flow's ERP, through its connection, logged in as the flow does."""
    settings = flow.erp
    return _client(
        settings.conn_id,
        lambda conn: erp_factory(conn, settings.login, timeout=settings.timeout_seconds, tokens=TokenStore()),
    )


def _schema(args: argparse.Namespace) -> int:
    _print_json(json_schema())
    return 0


# -- Entry point ---------------------------------------------------------------------------------


FLOWS_DIR_HELP = "default: $ORDER_CANCEL_FLOWS_DIR, else include/flows"


def _command(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help_text)
    # On each command rather than before it: `history --since 7d --debug` reads as users type it.
    command.add_argument("--debug", action="store_true", help="on an error, show its traceback too")
    return command


def _attributes_option(command: argparse.ArgumentParser, help_text: str) -> None:
    command.add_argument("--attr", action="append", default=[], type=_key_value, metavar="KEY=VALUE", help=help_text)


def _add_validate(commands: Any) -> None:
    command = _command(commands, "validate", "check every flow file of a folder")
    command.add_argument("flows_dir", nargs="?", type=Path, metavar="FLOWS_DIR", help=FLOWS_DIR_HELP)
    command.set_defaults(handler=_validate)


def _add_test_script(commands: Any) -> None:
    command = _command(commands, "test-script", "run a script on one input, as the flow would")
    command.add_argument(
        "script", type=_existing_file, metavar="SCRIPT", help="the script file: a Script Step, response or post script"
    )
    command.add_argument(
        "--input",
        required=True,
        type=_existing_file,
        metavar="FILE",
        help="the script's input_text (a plan's JSON, an ERP response body, ...)",
    )
    _attributes_option(command, "a flow file attribute; repeatable")
    command.add_argument(
        "--var",
        action="append",
        default=[],
        type=_variable,
        metavar="NAME=JSON",
        help="a global name for response and post scripts (request_data, response_data); "
        "a value that is not JSON is passed as text; repeatable",
    )
    command.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"time limit in seconds (default {DEFAULT_TIMEOUT:g})",
    )
    command.set_defaults(handler=_test_script)


def _add_try_flow(commands: Any) -> None:
    command = _command(commands, "try-flow", "run a flow's script, mapping and response evaluation on one plan")
    command.add_argument("flow_id", metavar="FLOW_ID", help="the flow_id of a flow file in the flows folder")
    command.add_argument(
        "--plan", required=True, type=_existing_file, metavar="FILE", help="one plan, as Omnitron returns it"
    )
    _attributes_option(command, "an extra attribute (rejected_count for a response script); repeatable")
    command.add_argument("--erp-status", type=int, metavar="CODE", help="the ERP's answer to evaluate")
    command.add_argument("--erp-body", type=_existing_file, metavar="FILE", help="the ERP's answer body")
    command.add_argument("--flows-dir", type=Path, metavar="FLOWS_DIR", help=FLOWS_DIR_HELP)
    command.set_defaults(handler=_try_flow)


def _add_test_mapping(commands: Any) -> None:
    command = _command(commands, "test-mapping", "apply a Jolt spec file to one JSON document")
    command.add_argument(
        "spec", type=_existing_file, metavar="SPEC", help="the Jolt spec file: a chain array or one operation"
    )
    command.add_argument(
        "--input", required=True, type=_existing_file, metavar="FILE", help="the JSON document to map (e.g. a plan)"
    )
    command.set_defaults(handler=_test_mapping)


def _add_schema(commands: Any) -> None:
    help_text = "print the flow file's JSON Schema (for editors; include/flow-file.schema.json is this output)"
    _command(commands, "schema", help_text).set_defaults(handler=_schema)


LEDGER_HELP = (
    f"a SQLAlchemy URL or a SQLite file's path; default: ${env_variable(LEDGER_CONN_ID)}, "
    f"else $AIRFLOW_HOME/{LEDGER_FILE}"
)
SINCE_HELP = "attempts from this time on: ISO-8601, or 30m / 6h / 7d ago"


def _add_history(commands: Any) -> None:
    command = _command(commands, "history", "a plan's attempts across runs, from the plan ledger")
    command.add_argument("--order", metavar="NUMBER", help="the order number")
    command.add_argument("--plan", type=int, metavar="PK", help="the cancellation plan's pk")
    command.add_argument("--flow", metavar="FLOW_ID", help="one flow only")
    command.add_argument("--failed", action="store_true", help="only plans whose latest attempt failed")
    command.add_argument("--since", type=_moment, metavar="TIME", help=SINCE_HELP)
    command.add_argument(
        "--limit", type=_positive_int, default=500, metavar="N", help="the newest N attempts (default 500)"
    )
    command.add_argument("--json", action="store_true", help="the attempts as JSON")
    command.add_argument("--ledger", metavar="URL", help=LEDGER_HELP)
    command.set_defaults(handler=_history)


def _add_reconcile(commands: Any) -> None:
    command = _command(commands, "reconcile", "compare the plan ledger with Omnitron; exit 1 on any discrepancy")
    command.add_argument("--flow", required=True, metavar="FLOW_ID", help="the flow whose attempts are compared")
    command.add_argument("--since", type=_moment, metavar="TIME", help=SINCE_HELP)
    command.add_argument("--flows-dir", type=Path, metavar="FLOWS_DIR", help=FLOWS_DIR_HELP)
    command.add_argument("--ledger", metavar="URL", help=LEDGER_HELP)
    command.set_defaults(handler=_reconcile)


def _add_preflight(commands: Any) -> None:
    command = _command(
        commands,
        "preflight",
        "check, reading only, each assumption a flow makes of Omnitron and the ERP; exit 1 on any broken",
    )
    command.add_argument("flow_id", metavar="FLOW_ID", help="the flow_id of a flow file in the flows folder")
    command.add_argument(
        "--plans",
        type=_positive_int,
        default=DEFAULT_PLANS,
        metavar="N",
        help=f"the script and mapping run on the first N plans listed (default {DEFAULT_PLANS}); nothing is sent",
    )
    command.add_argument("--flows-dir", type=Path, metavar="FLOWS_DIR", help=FLOWS_DIR_HELP)
    command.set_defaults(handler=_preflight)


class _Parser(argparse.ArgumentParser):
    """Bad arguments in one line naming the option, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    description, _, epilog = (__doc__ or "").partition("\n\n")
    parser = _Parser(prog="python -m order_cancel", description=description, epilog=epilog)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    commands_added = (
        _add_validate,
        _add_test_script,
        _add_try_flow,
        _add_test_mapping,
        _add_schema,
        _add_history,
        _add_reconcile,
        _add_preflight,
    )
    for add in commands_added:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except Exception as exc:
        if args.debug:
            raise
        # An error nobody foresaw is one line too; --debug shows where it came from.
        known = isinstance(exc, (UsageError, Failure))
        message = str(exc) if known else f"{type(exc).__name__}: {exc} (--debug shows the traceback)"
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        return USAGE_ERROR if isinstance(exc, UsageError) else FAILURE
