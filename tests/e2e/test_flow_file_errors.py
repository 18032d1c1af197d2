"""Bad flow files and other bad input: each problem is one line `<file>: <field>: <sentence>`, in
`validate` and in Airflow's import errors, and it never takes the other flows down. Failures that a
retry cannot mend are not retried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fakes import make_plan
from order_cancel.airflow import factory
from order_cancel.flows.loading import FlowConfigError, FlowsFolderError, load_flow, load_flows
from order_cancel.flows.models import json_schema
from order_cancel.flows.schedule import ScheduleError, airflow_schedule
from tests.conftest import every_layout
from tests.flow_runner import BASE_FLOW, ROOT

MINIMAL = {
    "omnitron": {"conn_id": "omnitron_test"},
    "get_data": {"channel_type": "web"},
    "erp": {"conn_id": "erp_test"},
    "write_erp": {"url": "/api/cancellations"},
}


def flow_file(folder: Path, name: str, text: str | None = None, **fields) -> Path:
    """A flow file from raw YAML text, or from the minimal flow plus `fields`."""
    path = folder / f"{name}.yaml"
    path.write_text(
        text if text is not None else yaml.safe_dump({"flow_id": name, **MINIMAL, **fields}), encoding="utf-8"
    )
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(FlowConfigError) as raised:
        load_flow(path)
    assert all(str(error).startswith(f"{path}: ") for error in str(raised.value).splitlines())
    return raised.value.problems


def import_error_lines(bag) -> list[str]:
    """The errors DAG file's import error: its message (after Airflow's traceback), line by line."""
    [(path, message)] = bag.import_errors.items()
    assert path.endswith("order_cancel_flow_errors.py")
    _, separator, report = message.partition("BrokenFlowFiles: ")
    assert separator, message
    return report.splitlines()


# -- what loading refuses, one sentence each --------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("start_date", "2026-02-30"),
        ("start_date", "2025-02-29"),
        ("start_date", "2026-04-31"),
        ("start_date", "2026-13-01"),
        ("start_date", "2026-01-01T25:00:00"),
        ("start_date", "tomorrow"),
    ],
)
def test_an_impossible_date_is_one_line_naming_the_field_and_the_value(tmp_path, field, value):
    path = flow_file(tmp_path, "acme", f"flow_id: acme\n{field}: {value}\n" + yaml.safe_dump(MINIMAL))
    [problem] = problems_of(path)
    assert problem.startswith(f"{field}: Input should be a valid datetime or date") and repr(value) in problem


def test_an_impossible_completed_since_names_its_nested_field(tmp_path):
    path = flow_file(tmp_path, "acme", get_data={"channel_type": "web", "completed_since": "2026-02-29T00:00:00Z"})
    [problem] = problems_of(path)
    assert problem.startswith("get_data.completed_since: ") and "day value is outside expected range" in problem


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"tags": ["x" * 101]}, "tags.0"),
        ({"flow_id": "x" * 201}, "flow_id"),
        ({"omnitron": {"conn_id": "c" * 251}}, "omnitron.conn_id"),
        ({"erp": {"conn_id": "erp_test", "pool": "p" * 257}}, "erp.pool"),
    ],
    ids=["tag", "flow_id", "conn_id", "pool"],
)
def test_values_longer_than_airflow_accepts_are_refused_on_loading(tmp_path, fields, field):
    [problem] = problems_of(flow_file(tmp_path, "acme", **fields))
    assert problem.startswith(f"{field}: String should have at most ")


def test_a_key_given_twice_names_the_key_and_both_lines(tmp_path):
    text = (
        "flow_id: acme\nomnitron: {conn_id: omnitron_test}\nget_data:\n  channel_type: web\n"
        "  cancel_status: waiting\n  cancel_status: completed\nerp: {conn_id: erp_test}\n"
        "write_erp: {url: /x}\nflow_id: acme_again\n"
    )
    assert problems_of(flow_file(tmp_path, "acme", text)) == [
        "get_data.cancel_status: given twice, on lines 5 and 6",
        "flow_id: given twice, on lines 1 and 9",
    ]


@pytest.mark.parametrize(
    "mapping, problem",
    [
        ("shift", "mapping: file shift not found in "),
        (5, "mapping: must be the path of a Jolt spec file, or the spec itself inline"),
    ],
)
def test_a_mapping_of_the_wrong_kind_is_a_sentence(tmp_path, mapping, problem):
    [line] = problems_of(flow_file(tmp_path, "acme", mapping=mapping))
    assert line.startswith(problem) and "function-after" not in line


def test_an_unknown_erp_login_type_names_the_type_field(tmp_path):
    problems = problems_of(flow_file(tmp_path, "acme", erp={"conn_id": "erp_test", "login": {"type": "jwt"}}))
    assert problems == ["erp.login.type: must be one of 'token', 'basic', 'header' (given: 'jwt')"]


def test_a_token_login_without_url_names_the_field_not_the_union_member(tmp_path):
    problems = problems_of(flow_file(tmp_path, "acme", erp={"conn_id": "erp_test", "login": {"type": "token"}}))
    assert problems == ["erp.login.url: Field required"]


# -- schedules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "quartz, cron",
    [
        ("0 0/5 * * * ?", "*/5 * * * *"),
        ("0 */5 * * * ?", "*/5 * * * *"),
        ("0 0 0 * * ?", "0 0 * * *"),
        ("0 0 * * * *", "0 * * * *"),
        ("0 30 9 ? * MON-FRI", "30 9 * * MON-FRI"),
        ("0 30 9 ? * 2-6", "30 9 * * 1-5"),  # Quartz counts weekdays from 1 = Sunday
        ("0 0 12 1/2 * ?", "0 12 1-31/2 * *"),
        ("0 15 10 ? * 6#3", "15 10 * * 5#3"),
        ("0 0 8 ? * * *", "0 8 * * *"),
    ],
)
def test_a_quartz_cron_with_seconds_0_runs_as_its_five_field_twin(quartz, cron):
    schedule = airflow_schedule(quartz)
    assert schedule.expression == cron
    assert schedule.note == f"the Quartz cron {quartz!r} runs as the five-field cron {cron!r}"


@pytest.mark.parametrize(
    "quartz, sentence",
    [
        (
            "30 0/5 * * * ?",
            "fires at second '30'; Airflow schedules whole minutes: write the five-field cron '*/5 * * * *'",
        ),
        ("*/10 * * * * ?", "fires at second '*/10'"),
        ("0 0 12 * * ? 2027", "names a year ('2027'); Airflow crons have no year field: write '0 12 * * *'"),
        ("0 15 10 ? * 6L", "uses Quartz's L, W or #"),
        ("0 0 * *", "is not a schedule: write a five-field cron"),
        ("61 * * * *", "is not a valid cron expression"),
    ],
)
def test_a_cron_airflow_cannot_run_is_refused_with_what_to_write(quartz, sentence):
    with pytest.raises(ScheduleError) as refused:
        airflow_schedule(quartz)
    assert sentence in str(refused.value)


def test_a_six_field_cron_never_makes_a_timetable_that_fires_every_second(flows):
    flows.write(schedule="0 0 * * * *")
    dag = flows.dagbag().get_dag("acme_cancel")
    assert dag.timetable.expression == "0 * * * *"
    assert "runs as the five-field cron '0 * * * *'" in dag.doc_md


# -- in Airflow: the other flows load, every problem is in the import errors -----------------------------


def test_broken_flow_files_each_have_their_line_and_the_good_flows_load_and_run(flows, omnitron, erp_servers):
    omnitron.add_plans([make_plan(1, order_pk=101)])
    flows.write()  # the good flow: acme_cancel
    flows.write(name="quartz", flow_id="acme_quartz", schedule="0 0/5 * * * ?")
    folder = flows.folder
    flow_file(folder, "bad_date", "flow_id: bad_date\nstart_date: 2026-02-30\n" + yaml.safe_dump(MINIMAL))
    flow_file(folder, "long_tag", tags=["t" * 101])
    flow_file(folder, "every_second", schedule="30 * * * * *")
    flow_file(folder, "twice", "flow_id: twice\nflow_id: twice\n" + yaml.safe_dump(MINIMAL))
    flows.write_file("scripts/broken.py", "if True\n")
    flows.write(name="bad_script", flow_id="bad_script", script="scripts/broken.py")
    flows.write(name="bad_spec", flow_id="bad_spec", mapping=[{"operation": "shiftr", "spec": {}}])

    bag = flows.dagbag()

    assert set(bag.dags) == {"acme_cancel", "acme_quartz", "bad_script", "bad_spec"}, (
        "a flow that cannot run still loads"
    )
    header, *lines = import_error_lines(bag)
    assert header.startswith("6 flow file(s) with problems (each line: file: field: problem):")
    by_file = {Path(line.split(": ", 1)[0]).name: line.split(": ", 1)[1] for line in lines}
    assert by_file["bad_date.yaml"].startswith("start_date: Input should be a valid datetime or date")
    assert by_file["long_tag.yaml"].startswith("tags.0: String should have at most 100 characters")
    assert by_file["every_second.yaml"].startswith("schedule: '30 * * * * *' is a Quartz cron that fires at second")
    assert by_file["twice.yaml"] == "flow_id: given twice, on lines 1 and 2"
    assert by_file["bad_script.yaml"].startswith("script: syntax error: ")
    assert (
        by_file["bad_spec.yaml"].startswith("mapping: Jolt spec ")
        and "unknown operation 'shiftr'" in by_file["bad_spec.yaml"]
    )
    assert len(lines) == 6
    assert flows.run().state == "success"
    assert omnitron.plans[1]["status"] == "approved"


def test_an_error_nobody_foresaw_while_building_breaks_only_its_flow_and_names_its_file(flows, monkeypatch):
    flows.write()
    doomed = flows.write(name="doomed", flow_id="doomed")
    build = factory.build_dag

    def build_or_fail(flow):
        if flow.flow_id == "doomed":
            raise RuntimeError("something unforeseen")
        return build(flow)

    monkeypatch.setattr(factory, "build_dag", build_or_fail)

    bag = flows.dagbag()

    assert set(bag.dags) == {"acme_cancel"}
    assert import_error_lines(bag)[1:] == [f"{doomed}: the DAG cannot be built: RuntimeError: something unforeseen"]


@pytest.mark.parametrize("make", ["missing", "a_file"])
def test_a_flows_folder_that_is_not_a_folder_is_an_import_error_naming_it(flows, monkeypatch, tmp_path, make):
    folder = tmp_path / "flowz"
    if make == "a_file":
        folder.write_text("not a folder")
    monkeypatch.setenv("ORDER_CANCEL_FLOWS_DIR", str(folder))

    bag = flows.dagbag()

    assert bag.dags == {}
    [line] = import_error_lines(bag)
    what = "is not a folder" if make == "a_file" else "does not exist"
    assert line == (f"the flows folder {folder} {what} (set ORDER_CANCEL_FLOWS_DIR to the folder of the flow files)")
    with pytest.raises(FlowsFolderError):
        load_flows(folder)


def airflow_cli(*args: str, flows_dir: Path, home: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ORDER_CANCEL_FLOWS_DIR": str(flows_dir), "AIRFLOW_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, env=environment, timeout=120
    )


def json_output(result: subprocess.CompletedProcess[str]):
    """The JSON of an `-o json` command; Airflow prints its warnings on stdout too."""
    [line] = [line for line in result.stdout.splitlines() if line.startswith("[")]
    return json.loads(line)


def test_the_airflow_cli_lists_the_good_dags_and_one_line_per_broken_file(flows, airflow_db):
    flows.write()
    flow_file(flows.folder, "bad_date", "flow_id: bad_date\nstart_date: 2026-02-30\n" + yaml.safe_dump(MINIMAL))

    listed = airflow_cli("dags", "list", "--local", "-o", "json", flows_dir=flows.folder, home=airflow_db)
    errors = airflow_cli("dags", "list-import-errors", "--local", "-o", "json", flows_dir=flows.folder, home=airflow_db)

    assert [dag["dag_id"] for dag in json_output(listed)] == ["acme_cancel"]
    assert errors.returncode == 1
    [error] = json_output(errors)
    assert error["filepath"].endswith("dags/order_cancel_flow_errors.py")
    assert f"{flows.folder / 'bad_date.yaml'}: start_date: Input should be a valid datetime or date" in error["error"]


# -- no retry for what a retry cannot mend -------------------------------------------------------------


@every_layout
def test_a_script_that_does_not_compile_fails_at_once_without_retries(flows, omnitron, erp_servers):
    omnitron.add_plans([make_plan(1, order_pk=101)])
    flows.write_file("scripts/broken.py", "if True\n")
    flows.write(script="scripts/broken.py", retries=2, retry_delay_seconds=0)

    run = flows.run()

    assert run.state == "failed"
    [failed] = [task for task in run.tasks if task.state == "failed" and task.task_id != "summary"]
    assert failed.try_number == 1, "not retried"
    assert [r for r in erp_servers["token"].requests if r.path == "/api/cancellations"] == []


def test_refused_omnitron_credentials_are_tried_once(flows, omnitron, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OMNITRON_TEST",
        json.dumps({"conn_type": "http", "host": omnitron.url, "login": "omnitron", "password": "wrong"}),
    )
    flows.write(retries=2, retry_delay_seconds=0)

    run = flows.run()

    assert run.task("login").state == "failed" and run.task("login").try_number == 1
    assert len([r for r in omnitron.requests if r.path == "/api/v1/auth/login/"]) == 1


def test_a_connection_that_is_not_defined_fails_at_once(flows):
    flows.write(omnitron={"conn_id": "omnitron_nowhere"}, retries=2, retry_delay_seconds=30)

    run = flows.run()

    assert run.state == "failed"
    assert run.task("login").state == "failed" and run.task("login").try_number == 1


def test_a_transient_login_failure_keeps_its_retries(flows, omnitron):
    omnitron.add_fault("POST", "/api/v1/auth/login/", status=503, times=1)
    flows.write(retries=1, retry_delay_seconds=0)

    run = flows.run()

    assert run.state == "success"
    assert run.task("login").try_number == 2


# -- messages that name what they tried -------------------------------------------------------------------


def closed_port_url() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_login_that_cannot_connect_names_the_url_and_no_credential():
    from order_cancel.clients.erp import ErpClient, ErpLoginError
    from order_cancel.clients.omnitron import OmnitronClient, OmnitronError
    from order_cancel.flows.models import TokenLogin

    url = closed_port_url()
    with pytest.raises(OmnitronError) as omnitron_failure:
        OmnitronClient(url, "omnitron", "s3cret-omnitron").login()
    with pytest.raises(ErpLoginError) as erp_failure:
        ErpClient(url, TokenLogin(type="token", url="/api/auth/login"), "erp", "s3cret-erp").login()

    assert (
        str(omnitron_failure.value)
        == f"Omnitron POST failed: ConnectionError at {url}/api/v1/auth/login/ (connection refused)"
    )
    assert str(erp_failure.value) == f"ERP login failed: ConnectionError at {url}/api/auth/login (connection refused)"
    assert "s3cret" not in str(omnitron_failure.value) + str(erp_failure.value)


# -- the JSON Schema for editors -----------------------------------------------------------------------------

SCHEMA_FILE = ROOT / "include" / "flow-file.schema.json"


def test_the_committed_schema_is_the_models_schema():
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == json_schema(), "regenerate it: python -m order_cancel schema > include/flow-file.schema.json"


@pytest.mark.parametrize("path", sorted((ROOT / "include" / "flows").glob("*.yaml")), ids=lambda path: path.name)
def test_the_example_flows_name_the_schema_and_follow_it(path):
    import jsonschema

    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# yaml-language-server: $schema=../flow-file.schema.json"
    jsonschema.Draft202012Validator(json_schema()).validate(yaml.safe_load(text))


def test_the_schema_flags_what_an_editor_should_flag():
    import jsonschema

    validator = jsonschema.Draft202012Validator(json_schema())
    typo = {**BASE_FLOW, "get_data": {"channel_type": "web", "cancel_status": "waitng"}, "scheduel": "@daily"}
    messages = sorted(error.message for error in validator.iter_errors(typo))
    assert any("'scheduel' was unexpected" in message for message in messages)
    assert any("'waitng' is not one of" in message for message in messages)
    assert list(validator.iter_errors({**BASE_FLOW, "get_data": {"channel_type": "web", "channel_ids": "1,2"}})) == []
