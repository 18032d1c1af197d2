"""`python -m order_cancel`: check flow files, try scripts and Jolt specs, and read the plan ledger,
without Airflow.

Exit codes: 0 success; 1 what was checked or tried failed (a flow file has problems, the script
raised, the mapping failed); 2 nothing could be tried (bad arguments, a missing or unreadable file,
input that is not JSON, a script that is not valid Python).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from order_cancel.clients.connection import ConnectionFields, base_url, env_variable, tls_verify
from order_cancel.clients.omnitron import OmnitronClient
from order_cancel.clients.tokens import TokenStore
from order_cancel.flows.checks import inspect_flows
from order_cancel.flows.loading import flow_files, flows_dir
from order_cancel.flows.models import FlowConfig, json_schema
from order_cancel.ledger.history import as_json, histories, timeline_lines
from order_cancel.ledger.location import LedgerSettings, from_environment
from order_cancel.ledger.reconcile import reconcile_flow
from order_cancel.ledger.store import Ledger, Search
from order_cancel.panels.service import PanelInputError, UnknownFlow, find_flow, try_flow
from order_cancel.pipeline.watermark import parse_time
from order_cancel.runtime.jolt import JoltMapping, MappingError, load_spec_file
from order_cancel.runtime.scripts import DEFAULT_TIMEOUT, Script, ScriptFailed, ScriptSyntaxError

USAGE_ERROR = 2


class UsageError(Exception):
    """The command cannot run with what it was given (exit code 2)."""


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
        seconds = 0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


_RELATIVE = re.compile(r"(\d+)([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def _moment(text: str) -> dt.datetime:
    """An ISO-8601 time, or a time ago: 30m, 6h, 7d."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        ago = dt.timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        return dt.datetime.now(dt.UTC) - ago
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
    if not folder.is_dir():
        raise UsageError(f"no such folder: {folder}")
    # An empty folder is an error: a mistyped folder must not pass as "all flows OK".
    if not flow_files(folder):
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
    settings = LedgerSettings(make_url(args.ledger), origin="--ledger") if args.ledger else from_environment()
    database = settings.url.database
    if settings.url.get_backend_name() == "sqlite" and database and not Path(database).is_file():
        raise UsageError(
            f"no ledger at {database} ({settings.origin}): run a flow first, or name the ledger with --ledger URL "
            f"or {env_variable('order_cancel_ledger')}"
        )
    return Ledger.open(settings.url.render_as_string(hide_password=False)), settings


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
    checked, found = reconcile_flow(ledger, _omnitron(flow), flow, args.since, dt.datetime.now(dt.UTC))
    for discrepancy in found:
        print(discrepancy.line())
    print(f"{flow.flow_id}: {len(found)} discrepancy(ies) in {checked} plan(s) of the ledger {settings.shown}")
    return 1 if found else 0


def _omnitron(flow: FlowConfig) -> OmnitronClient:
    """Omnitron, through the flow's connection as Airflow reads it from the environment."""
    conn_id = flow.omnitron.conn_id
    conn = ConnectionFields.from_env(conn_id)
    if conn is None:
        raise UsageError(f"connection {conn_id!r} is not set: export {env_variable(conn_id)} as for Airflow")
    return OmnitronClient(
        base_url(conn),
        conn.login or "",
        conn.password or "",
        tokens=TokenStore(),
        timeout=flow.omnitron.timeout_seconds,
        verify=tls_verify(conn),
    )


def _schema(args: argparse.Namespace) -> int:
    _print_json(json_schema())
    return 0


# -- Entry point ---------------------------------------------------------------------------------


FLOWS_DIR_HELP = "default: $ORDER_CANCEL_FLOWS_DIR, else include/flows"


def _attributes_option(command: argparse.ArgumentParser, help_text: str) -> None:
    command.add_argument("--attr", action="append", default=[], type=_key_value, metavar="KEY=VALUE", help=help_text)


def _add_validate(commands: Any) -> None:
    command = commands.add_parser("validate", help="check every flow file of a folder")
    command.add_argument("flows_dir", nargs="?", type=Path, metavar="FLOWS_DIR", help=FLOWS_DIR_HELP)
    command.set_defaults(handler=_validate)


def _add_test_script(commands: Any) -> None:
    command = commands.add_parser("test-script", help="run a script on one input, as the flow would")
    command.add_argument("script", type=_existing_file, metavar="SCRIPT")
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
    command = commands.add_parser("try-flow", help="run a flow's script, mapping and response evaluation on one plan")
    command.add_argument("flow_id", metavar="FLOW_ID")
    command.add_argument(
        "--plan", required=True, type=_existing_file, metavar="FILE", help="one plan, as Omnitron returns it"
    )
    _attributes_option(command, "an extra attribute (rejected_count for a response script); repeatable")
    command.add_argument("--erp-status", type=int, metavar="CODE", help="the ERP's answer to evaluate")
    command.add_argument("--erp-body", type=_existing_file, metavar="FILE", help="the ERP's answer body")
    command.add_argument("--flows-dir", type=Path, metavar="FLOWS_DIR", help=FLOWS_DIR_HELP)
    command.set_defaults(handler=_try_flow)


def _add_test_mapping(commands: Any) -> None:
    command = commands.add_parser("test-mapping", help="apply a Jolt spec file to one JSON document")
    command.add_argument("spec", type=_existing_file, metavar="SPEC")
    command.add_argument("--input", required=True, type=_existing_file, metavar="FILE")
    command.set_defaults(handler=_test_mapping)


def _add_schema(commands: Any) -> None:
    help_text = "print the flow file's JSON Schema (for editors; include/flow-file.schema.json is this output)"
    commands.add_parser("schema", help=help_text).set_defaults(handler=_schema)


LEDGER_HELP = "a SQLAlchemy URL; default: $AIRFLOW_CONN_ORDER_CANCEL_LEDGER, else $AIRFLOW_HOME/order_cancel_ledger.db"
SINCE_HELP = "attempts from this time on: ISO-8601, or 30m / 6h / 7d ago"


def _add_history(commands: Any) -> None:
    command = commands.add_parser("history", help="a plan's attempts across runs, from the plan ledger")
    command.add_argument("--order", metavar="NUMBER", help="the order number")
    command.add_argument("--plan", type=int, metavar="PK", help="the cancellation plan's pk")
    command.add_argument("--flow", metavar="FLOW_ID", help="one flow only")
    command.add_argument("--failed", action="store_true", help="only plans whose latest attempt failed")
    command.add_argument("--since", type=_moment, metavar="TIME", help=SINCE_HELP)
    command.add_argument("--limit", type=int, default=500, metavar="N", help="the newest N attempts (default 500)")
    command.add_argument("--json", action="store_true", help="the attempts as JSON")
    command.add_argument("--ledger", metavar="URL", help=LEDGER_HELP)
    command.set_defaults(handler=_history)


def _add_reconcile(commands: Any) -> None:
    command = commands.add_parser("reconcile", help="compare the plan ledger with Omnitron; exit 1 on any discrepancy")
    command.add_argument("--flow", required=True, metavar="FLOW_ID")
    command.add_argument("--since", type=_moment, metavar="TIME", help=SINCE_HELP)
    command.add_argument("--flows-dir", type=Path, metavar="FLOWS_DIR", help=FLOWS_DIR_HELP)
    command.add_argument("--ledger", metavar="URL", help=LEDGER_HELP)
    command.set_defaults(handler=_reconcile)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m order_cancel", description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    commands_added = (
        _add_validate,
        _add_test_script,
        _add_try_flow,
        _add_test_mapping,
        _add_schema,
        _add_history,
        _add_reconcile,
    )
    for add in commands_added:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
