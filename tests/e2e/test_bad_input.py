"""Bad input, the second sweep (issue 23), through the real entry points: `python -m order_cancel`
in a subprocess, the DAG files parsed by Airflow's DagBag, and Airflow's own CLI. Each test asserts
what a user sees: the exact line, the exit code, which DAGs load."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from devtools.airflow_env import connection_json
from fakes import make_plan
from order_cancel.cli import build_parser
from order_cancel.flows.loading import MAX_YAML_VALUES
from order_cancel.flows.models import ID_MAX_LENGTH, MAX_SECONDS, FlowConfig
from order_cancel.flows.schedule import FIRES_WITHIN_YEARS
from order_cancel.ledger.attempts import Attempt
from order_cancel.ledger.store import Ledger
from tests.e2e.test_cli import cli, write_flow
from tests.e2e.test_flow_file_errors import import_error_lines, json_output
from tests.flow_runner import ROOT

# Eight levels of nine aliases of the level below: 507 bytes that stand for 9**9 values.
ALIAS_BOMB = "extra:\n  a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]\n" for level in range(1, 9)
)


# -- 1. a YAML alias bomb ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [ALIAS_BOMB + "flow_id: bomb\n", "flow_id: loop\nextra: &loop [x, *loop]\n"],
    ids=["nine_by_nine_eight_deep", "an_alias_inside_itself"],
)
def test_validate_refuses_a_yaml_alias_bomb_naming_the_file_at_once(tmp_path, text):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(text, encoding="utf-8")

    started = time.monotonic()
    result = cli("validate", tmp_path)
    seconds = time.monotonic() - started

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{bomb}: holds more than {MAX_YAML_VALUES:,} values once its YAML aliases (*name) are expanded"
    ]
    assert seconds < 10, f"validate took {seconds:.1f} s (the interpreter starts in about one)"


def test_a_yaml_alias_bomb_beside_the_flows_breaks_only_itself_in_airflow(flows):
    flows.write()
    bomb = flows.folder / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB + "flow_id: bomb\n", encoding="utf-8")

    started = time.monotonic()
    bag = flows.dagbag()
    seconds = time.monotonic() - started

    assert set(bag.dags) == {"acme_cancel"}
    assert import_error_lines(bag)[1:] == [
        f"{bomb}: holds more than {MAX_YAML_VALUES:,} values once its YAML aliases (*name) are expanded"
    ]
    assert seconds < 20, f"parsing dags/ took {seconds:.1f} s"


def test_aliases_within_the_bound_still_work(tmp_path):
    text = "flow_id: aliased\ntags: &tags [acme]\ndescription: &what ACME\n" + yaml.safe_dump(
        {
            "omnitron": {"conn_id": "omnitron_test"},
            "get_data": {"channel_type": "web"},
            "erp": {"conn_id": "erp_test"},
            "write_erp": {"url": "/api/cancellations"},
        }
    )
    (tmp_path / "aliased.yaml").write_text(text + "attributes: {team: *what}\n", encoding="utf-8")

    result = cli("validate", tmp_path)

    assert (result.returncode, result.stdout) == (0, "1 flow file(s) OK: aliased\n"), result.stderr


# -- 2. two files with one flow_id ---------------------------------------------------------------------


def test_a_newcomer_file_never_takes_a_flow_over(flows):
    original = flows.write(description="the original")
    newcomer = flows.write(name="aaa_new", description="the newcomer")  # sorts first, same flow_id

    bag = flows.dagbag()

    assert set(bag.dags) == {"acme_cancel"}
    assert bag.get_dag("acme_cancel").description == "the original"
    assert import_error_lines(bag)[1:] == [
        f"{newcomer}: flow_id: 'acme_cancel' belongs to {original}, named after it; give this file a flow_id of its own"
    ]


def test_two_files_with_one_flow_id_neither_named_after_it_both_build_nothing(flows):
    flows.write()
    first = flows.write(name="first", flow_id="acme_twin")
    second = flows.write(name="second", flow_id="acme_twin")

    bag = flows.dagbag()

    assert set(bag.dags) == {"acme_cancel"}
    assert import_error_lines(bag)[1:] == [
        f"{first}: flow_id: 'acme_twin' is also given by {second}: no DAG is built for it until one file alone has it",
        f"{second}: flow_id: 'acme_twin' is also given by {first}: no DAG is built for it until one file alone has it",
    ]


def test_a_file_named_after_its_flow_id_keeps_it_while_it_has_problems(tmp_path):
    broken = write_flow(tmp_path, "acme_cancel", retries=-1)
    newcomer = write_flow(tmp_path, "acme_cancel_copy")
    newcomer.write_text(newcomer.read_text(encoding="utf-8").replace("acme_cancel_copy", "acme_cancel"))

    result = cli("validate", tmp_path)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{broken}: retries: Input should be greater than or equal to 0 (given: -1)",
        f"{newcomer}: flow_id: 'acme_cancel' belongs to {broken}, named after it, which has problems; "
        "no other file takes it",
    ]


# -- 4. an unreadable flows folder ---------------------------------------------------------------------


def unprivileged(command: list[str]) -> list[str]:
    """The command as a user without root's right to read any folder: root keeps its uid but drops
    its capabilities (a chmod 000 folder is then unreadable to it as to anyone)."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: an unreadable folder cannot be made")
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *command]


@pytest.fixture
def unreadable_folder(tmp_path):
    folder = tmp_path / "flows"
    write_flow(folder, "acme_cancel")
    folder.chmod(0)
    yield folder
    folder.chmod(0o755)


def test_validate_reports_an_unreadable_flows_folder(unreadable_folder):
    result = subprocess.run(
        unprivileged([sys.executable, "-m", "order_cancel", "validate", str(unreadable_folder)]),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=60,
    )

    assert result.returncode == 2
    assert result.stderr == f"error: the flows folder {unreadable_folder} cannot be read: Permission denied\n"


def test_airflow_lists_an_unreadable_flows_folder_as_an_import_error(unreadable_folder, airflow_db):
    environment = {
        **os.environ,
        "ORDER_CANCEL_FLOWS_DIR": str(unreadable_folder),
        "AIRFLOW_HOME": str(airflow_db),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    command = [sys.executable, "-m", "airflow", "dags", "list-import-errors", "--local", "-o", "json"]

    errors = subprocess.run(unprivileged(command), capture_output=True, text=True, env=environment, timeout=120)

    [error] = json_output(errors)
    assert error["filepath"].endswith("dags/order_cancel_flow_errors.py")
    assert f"the flows folder {unreadable_folder} cannot be read: Permission denied" in error["error"]


# -- 3. history of a plan whose found attempts are its post script's alone ----------------------------

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def attempt(steps: str, minutes_ago: int, **fields) -> Attempt:
    """A ledger row of plan 4 of acme_cancel, as a task try writes it."""
    started = NOW - dt.timedelta(minutes=minutes_ago)
    row = {
        "flow_id": "acme_cancel",
        "run_id": "manual__1",
        "task_id": f"plan.{steps.split(',')[-1]}",
        "map_index": 0,
        "try_number": 1,
        "plan_pk": 4,
        "order_number": "429453004",
        "transaction_pk": None,
        "idempotency_key": None,
        "steps": steps,
        "step_reached": steps.split(",")[-1],
        "relation": "continue",
        "accepted": False,
        "erp_status_code": None,
        "erp_sends": 0,
        "erp_request": None,
        "erp_answer": None,
        "erp_no_answer": None,
        "omnitron_outcome": None,
        "omnitron_call": None,
        "outcome": "approved",
        "error": None,
        "failed_step": None,
        "started_at": started,
        "ended_at": started,
        **fields,
    }
    return Attempt(**row)


@pytest.fixture
def ledger_file(tmp_path) -> Path:
    """A SQLite ledger with one plan's attempts: the ERP write, the Omnitron write, the post script."""
    path = tmp_path / "ledger.db"
    Ledger.open(f"sqlite:///{path}").write(
        [
            attempt("script,mapping,write_erp", 30, accepted=True, erp_status_code=201, erp_sends=1),
            attempt("write_omnitron", 20, omnitron_outcome="approved"),
            attempt("post_script", 10, outcome="post script ran"),
        ]
    )
    return path


@pytest.mark.parametrize(
    "search",
    [["--limit", "1"], ["--since", (NOW - dt.timedelta(minutes=15)).isoformat()]],
    ids=["limit", "since"],
)
def test_history_of_a_plan_found_by_its_post_script_alone(ledger_file, search):
    result = cli("history", "--ledger", ledger_file, *search)

    assert result.returncode == 0, result.stderr
    posted = (NOW - dt.timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M:%S")
    assert result.stdout.splitlines() == [
        "acme_cancel · plan 4 · order 429453004 · now: post script ran",
        f"  {posted}  manual__1  plan.post_script[0] try 1  post_script: post script ran",
    ]
    assert result.stderr == f"1 plan(s) in the ledger sqlite:///{ledger_file}\n"


# -- 5. numbers out of range, a cron that never fires, an unknown Jolt function, bad channel ids -------

REFUSED = {
    "inf_retry_delay": (
        {"retry_delay_seconds": float("inf")},
        "retry_delay_seconds: must be a finite number (given: .inf)",
    ),
    "inf_script_timeout": (
        {"script_timeout_seconds": float("inf")},
        "script_timeout_seconds: must be a finite number (given: .inf)",
    ),
    "nan_in_a_login_body": (
        {
            "erp": {
                "conn_id": "erp_test",
                "login": {"type": "token", "url": "/login", "extra_body": {"x": float("nan")}},
            }
        },
        "erp.login.extra_body.x: must be a finite number (given: .nan)",
    ),
    "infinite_text": (
        {"erp": {"conn_id": "erp_test", "timeout_seconds": "1e400"}},
        "erp.timeout_seconds: Input should be a finite number (given: '1e400')",
    ),
    "a_day_and_a_second": (
        {"retry_delay_seconds": MAX_SECONDS + 1},
        f"retry_delay_seconds: Input should be less than or equal to {MAX_SECONDS} (given: {MAX_SECONDS + 1})",
    ),
    "never_fires": (
        {"schedule": "0 9 30 2 *"},
        "schedule: '0 9 30 2 *' never fires: no day in the next 8 years matches it (e.g. February 30th)",
    ),
    "unknown_jolt_function": (
        {"mapping": [{"operation": "modify-overwrite-beta", "spec": {"ref": "=noSuchFunction(@(1,pk))"}}]},
        "mapping: Jolt spec <inline>: Unknown modify function 'noSuchFunction' in '=noSuchFunction(@(1,pk))'; "
        "it will produce no value",
    ),
    "negative_channel": (
        {"get_data": {"channel_type": "web", "channel_ids": [-1]}},
        "get_data.channel_ids.0: Input should be greater than or equal to 1 (given: -1)",
    ),
    "empty_channel": (
        {"get_data": {"channel_type": "web", "channel_ids": "1,,2"}},
        "get_data.channel_ids: '1,,2' has an empty channel id between its commas; write them as '1,2,3'",
    ),
    "found_status": (
        {"write_erp": {"url": "/x", "query_check": {"url": "/x/{pk}", "found_status": [2000]}}},
        "write_erp.query_check.found_status.0: Input should be less than or equal to 599 (given: 2000)",
    ),
}


def test_validate_refuses_what_would_fail_later_one_line_each(tmp_path):
    paths = {name: write_flow(tmp_path, name, **fields) for name, (fields, _) in REFUSED.items()}

    result = cli("validate", tmp_path)

    assert result.returncode == 1
    assert sorted(result.stdout.splitlines()) == sorted(f"{paths[name]}: {line}" for name, (_, line) in REFUSED.items())
    assert result.stderr == ""  # no raw pyjolt warning


def test_numbers_that_would_break_a_dag_break_only_their_flow_in_airflow(flows):
    flows.write()
    endless = flows.write(name="endless", flow_id="endless", retry_delay_seconds=float("inf"))
    never = flows.write(name="never", flow_id="never", schedule="0 9 30 2 *")

    bag = flows.dagbag()

    assert set(bag.dags) == {"acme_cancel"}
    assert import_error_lines(bag)[1:] == [
        f"{endless}: retry_delay_seconds: must be a finite number (given: .inf)",
        f"{never}: schedule: '0 9 30 2 *' never fires: no day in the next 8 years matches it (e.g. February 30th)",
    ]


@pytest.mark.parametrize("value", ["nan", "inf", str(MAX_SECONDS + 1)])
def test_test_script_refuses_a_time_limit_that_is_no_limit(tmp_path, value):
    plan = tmp_path / "plan.json"
    plan.write_text("{}", encoding="utf-8")

    result = cli(
        "test-script", ROOT / "include" / "flows" / "scripts" / "enrich_plan.py", "--input", plan, "--timeout", value
    )

    assert one_line_error(result, 2) == (
        f"python -m order_cancel test-script: error: argument --timeout: expected a number of seconds above 0, "
        f"at most {MAX_SECONDS}, got {value!r} (see python -m order_cancel test-script --help)"
    )


# -- 6. one line for every CLI error ------------------------------------------------------------------


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with `code` and said why in one line, with no traceback and nothing on stdout."""
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    return line


def closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_history_names_a_ledger_file_that_is_not_a_database(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n", encoding="utf-8")
    expected = f"error: cannot open the ledger sqlite:///{text} (--ledger): file is not a database"

    assert one_line_error(cli("history", "--ledger", f"sqlite:///{text}"), 2) == expected
    assert one_line_error(cli("history", "--ledger", text), 2) == expected, "a plain path is a SQLite file"


def test_debug_shows_the_traceback(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n", encoding="utf-8")

    result = cli("history", "--ledger", text, "--debug")

    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith(
        f"cannot open the ledger sqlite:///{text} (--ledger): file is not a database"
    )


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_history_on_postgresql_uses_the_installed_driver_and_names_a_database_that_does_not_answer(scheme):
    port = closed_port()

    line = one_line_error(cli("history", "--ledger", f"{scheme}://ledger:secret@127.0.0.1:{port}/ledger"), 1)

    assert line.startswith(
        f"error: cannot open the ledger postgresql+psycopg2://ledger:***@127.0.0.1:{port}/ledger (--ledger): "
        f'connection to server at "127.0.0.1", port {port} failed: Connection refused'
    )
    assert "secret" not in line


def test_history_without_a_ledger_says_where_it_looked(tmp_path):
    environment = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW_CONN_ORDER_CANCEL_LEDGER": ""}

    assert one_line_error(cli("history", env=environment), 2) == (
        f"error: no ledger at {tmp_path / 'order_cancel_ledger.db'} (the default, a file under {tmp_path}): "
        "run a flow first, or name the ledger with --ledger URL or AIRFLOW_CONN_ORDER_CANCEL_LEDGER"
    )


def test_history_since_further_back_than_dates_go(ledger_file):
    assert one_line_error(cli("history", "--ledger", ledger_file, "--since", "99999999d"), 2) == (
        "python -m order_cancel history: error: argument --since: '99999999d' reaches back before the year 1 "
        "(see python -m order_cancel history --help)"
    )


@pytest.fixture
def reconcile_flow(tmp_path, ledger_file):
    """`reconcile --flow acme_cancel` with its flows folder and ledger, given the Omnitron connection."""
    folder = tmp_path / "flows"
    write_flow(folder, "acme_cancel")

    def run(connection: str) -> subprocess.CompletedProcess[str]:
        arguments = ["--flow", "acme_cancel", "--flows-dir", folder, "--ledger", ledger_file]
        return cli("reconcile", *arguments, env={"AIRFLOW_CONN_OMNITRON_TEST": connection})

    return run


def test_reconcile_with_a_connection_without_host(reconcile_flow):
    connection = json.dumps({"conn_type": "http", "login": "omnitron", "password": "omnitron-pass"})

    assert one_line_error(reconcile_flow(connection), 2) == (
        "error: AIRFLOW_CONN_OMNITRON_TEST: connection 'omnitron_test' has no host (the Omnitron or ERP base URL)"
    )


def test_reconcile_with_an_omnitron_that_does_not_answer(reconcile_flow):
    url = f"http://127.0.0.1:{closed_port()}"

    assert one_line_error(reconcile_flow(connection_json(url, "omnitron", "omnitron-pass")), 1) == (
        f"error: connection 'omnitron_test': Omnitron POST failed: ConnectionError at {url}/api/v1/auth/login/ "
        "(connection refused)"
    )


def test_reconcile_with_a_wrong_password(reconcile_flow, omnitron):
    line = one_line_error(reconcile_flow(connection_json(omnitron.url, "omnitron", "wrong-password")), 1)

    assert line == (
        f"error: connection 'omnitron_test': Omnitron login at {omnitron.url.rstrip('/')}/ refused the credentials "
        "of user 'omnitron' (HTTP 400)"
    )
    assert "wrong-password" not in line


# -- 7. the smaller ones -------------------------------------------------------------------------------


def test_validate_reads_flow_files_in_any_case(tmp_path):
    write_flow(tmp_path, "acme_cancel").rename(tmp_path / "ACME_CANCEL.YAML")

    result = cli("validate", tmp_path)

    assert (result.returncode, result.stdout) == (0, "1 flow file(s) OK: acme_cancel\n"), result.stderr


def test_validate_says_a_flows_path_that_is_a_file_is_not_a_folder(tmp_path):
    path = write_flow(tmp_path, "acme_cancel")

    assert one_line_error(cli("validate", path), 2) == (
        f"error: the flows folder {path} is not a folder (set ORDER_CANCEL_FLOWS_DIR to the folder of the flow files)"
    )


def test_the_flow_files_page_states_the_limits_the_flow_files_are_held_to():
    page = " ".join((ROOT / "docs" / "flow-files.md").read_text(encoding="utf-8").split())
    flow_id_limit = next(
        rule.max_length for rule in FlowConfig.model_fields["flow_id"].metadata if hasattr(rule, "max_length")
    )

    assert f"a `flow_id` over {flow_id_limit}, a connection id over {ID_MAX_LENGTH})" in page
    assert f"at most {MAX_SECONDS:,}" in page
    assert f"past {MAX_YAML_VALUES:,} values" in page
    assert f"no day in the next {FIRES_WITHIN_YEARS} years" in page


def test_every_argument_of_every_command_says_what_it_is():
    parser = build_parser()
    [commands] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    undocumented = [
        f"{name} {action.metavar or action.dest}"
        for name, command in commands.choices.items()
        for action in command._actions
        if not action.help
    ]

    assert undocumented == []


@pytest.mark.parametrize(
    "command, sentence",
    [
        (
            [sys.executable, "-m", "order_cancel", "--help"],
            "`python -m order_cancel`: check flow files, try scripts and Jolt specs, check a flow's assumptions "
            "against Omnitron and the ERP, and read the plan ledger, without Airflow.",
        ),
        (
            [str(ROOT / "bin" / "airflow-local"), "--help"],
            "Ctrl-C (or SIGTERM) stops every process it started.",
        ),
        ([sys.executable, "-m", "fakes", "--help"], "--omnitron-port OMNITRON_PORT default 18081"),
        ([sys.executable, "-m", "fakes", "--help"], "--erp-port ERP_PORT default 18082"),
    ],
    ids=["order_cancel", "airflow_local", "fakes_omnitron_port", "fakes_erp_port"],
)
def test_help_says_whole_sentences_and_the_demo_ports(command, sentence):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=120)

    assert result.returncode == 0, result.stderr
    assert sentence in " ".join(result.stdout.split())


def documented_cli_examples() -> list[str]:
    """The `python -m order_cancel` lines of the docs' Command line section, comments left out."""
    section = (ROOT / "docs" / "ledger-and-cli.md").read_text(encoding="utf-8").split("## Command line", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("python -m order_cancel")]


def test_the_docs_have_their_cli_examples():
    commands = {shlex.split(example)[3] for example in documented_cli_examples()}
    assert commands == {
        "validate",
        "schema",
        "test-script",
        "test-mapping",
        "try-flow",
        "history",
        "reconcile",
        "preflight",
    }


@pytest.mark.parametrize("example", documented_cli_examples(), ids=lambda example: shlex.split(example)[3])
def test_each_documented_cli_example_runs_as_written(example, tmp_path, omnitron, erp_servers):
    # What the docs' text around them says they read: the ledger of a run (the demo's home) and the
    # flow's Omnitron and ERP connections; plan 4 was accepted by the ERP and is approved in Omnitron.
    Ledger.open(f"sqlite:///{tmp_path / 'order_cancel_ledger.db'}").write(
        [attempt("script,mapping,write_erp", 30, flow_id="acme_waiting_cancellations", accepted=True, erp_sends=1)]
    )
    omnitron.add_plans([make_plan(4, status="approved")])
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("ORDER_CANCEL_FLOWS_DIR", "AIRFLOW_CONN_ORDER_CANCEL_LEDGER")
    }
    environment |= {
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW_CONN_OMNITRON_DEMO": connection_json(omnitron.url, "omnitron", "omnitron-pass"),
        "AIRFLOW_CONN_ERP_DEMO": connection_json(erp_servers["token"].url, "erp", "erp-pass"),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
    }
    python, *arguments = shlex.split(example)

    result = subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, env=environment, cwd=ROOT, timeout=120
    )

    assert python == "python"
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
