"""`python -m order_cancel`: check flow files, and try scripts and Jolt specs, without Airflow.

Exit codes: 0 success; 1 what was checked or tried failed (a flow file has problems, the script
raised, the mapping failed); 2 nothing could be tried (bad arguments, a missing or unreadable file,
input that is not JSON, a script that is not valid Python).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from order_cancel.flows.checks import inspect_flows
from order_cancel.flows.loading import flow_files, flows_dir
from order_cancel.flows.models import json_schema
from order_cancel.panels.service import PanelInputError, UnknownFlow, find_flow, try_flow
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m order_cancel", description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for add in (_add_validate, _add_test_script, _add_try_flow, _add_test_mapping, _add_schema):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
