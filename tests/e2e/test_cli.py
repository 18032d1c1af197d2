"""The command line, `python -m order_cancel`, run as users run it: in a subprocess, without an install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from fakes.data import make_plan
from order_cancel.flows.loading import flow_files

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "include" / "flows"
SCRIPTS = FLOWS / "scripts"
ERP_CANCEL_MAPPING = FLOWS / "mappings" / "erp_cancel.json"
DEFAULT_RESPONSE = ROOT / "plugins" / "order_cancel" / "runtime" / "templates" / "default_response.py"


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
        "PYTHONIOENCODING": "utf-8",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "order_cancel", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=environment,
        cwd=ROOT,
        timeout=60,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def write_flow(folder: Path, flow_id: str, **fields) -> Path:
    """A minimal flow file (the contract's required fields), with `fields` added or replaced."""
    flow = {
        "flow_id": flow_id,
        "omnitron": {"conn_id": "omnitron_test"},
        "get_data": {"channel_type": "web"},
        "erp": {"conn_id": "erp_test"},
        "write_erp": {"url": "/api/cancellations"},
        **fields,
    }
    return write(folder / f"{flow_id}.yaml", yaml.safe_dump(flow, sort_keys=False))


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def plan_file(tmp_path):
    return write_json(tmp_path / "plan.json", make_plan(7))


# --- validate ------------------------------------------------------------------------------------


@pytest.fixture
def good_folder(tmp_path):
    """A folder of good flows: a minimal one, and one with every script field and a mapping file."""
    folder = tmp_path / "flows"
    write_flow(folder, "acme_cancel")
    write(folder / "scripts" / "enrich_plan.py", (SCRIPTS / "enrich_plan.py").read_text(encoding="utf-8"))
    write(folder / "scripts" / "response.py", DEFAULT_RESPONSE.read_text(encoding="utf-8"))
    write(folder / "mappings" / "erp_cancel.json", ERP_CANCEL_MAPPING.read_text(encoding="utf-8"))
    write_flow(
        folder,
        "acme_full",
        get_data={"channel_type": "web", "cancel_status": "confirmed"},
        script="scripts/enrich_plan.py",
        mapping="mappings/erp_cancel.json",
        write_erp={
            "url": "/api/cancellations",
            "custom_response": True,
            "response_script": "scripts/response.py",
        },
        post_script="scripts/enrich_plan.py",
    )
    return folder


def test_validate_good_folder(good_folder):
    result = cli("validate", good_folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "2 flow file(s) OK: acme_cancel, acme_full"


def test_validate_defaults_to_the_flows_dir_variable(good_folder):
    result = cli("validate", env={"ORDER_CANCEL_FLOWS_DIR": str(good_folder)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "acme_full" in result.stdout


def test_validate_the_example_flows():
    result = cli("validate", FLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{len(flow_files(FLOWS))} flow file(s) OK: ")


def test_validate_reports_each_problem_with_file_and_field(good_folder):
    write(good_folder / "broken_yaml.yaml", "flow_id: [acme\n")
    write_flow(good_folder, "unknown_field", scheduel="@daily")
    write_flow(good_folder, "status_typo", get_data={"channel_type": "web", "cancel_status": "waitng"})
    write(good_folder / "scripts" / "broken.py", "import json\nplan = json.loads(input_text\n")
    write_flow(good_folder, "syntax_error", script="scripts/broken.py")
    write_json(good_folder / "mappings" / "bad.json", [{"operation": "shiftr", "spec": {"pk": "id"}}])
    write_flow(good_folder, "bad_mapping", mapping="mappings/bad.json")
    write_flow(good_folder, "bad_inline_mapping", mapping={"operation": "shift"})
    write(good_folder.parent / "outside.py", "pass\n")
    write_flow(good_folder, "outside", script="../outside.py")

    result = cli("validate", good_folder)

    assert result.returncode == 1
    lines = result.stdout.splitlines()

    def problems(flow_file: str) -> list[str]:
        prefix = f"{good_folder / flow_file}: "
        return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]

    [yaml_error] = problems("broken_yaml.yaml")
    assert yaml_error.startswith("invalid YAML: ")
    assert problems("unknown_field.yaml") == ["scheduel: Extra inputs are not permitted"]
    [typo] = problems("status_typo.yaml")
    assert typo.startswith("get_data.cancel_status: ") and "'waiting'" in typo
    [syntax] = problems("syntax_error.yaml")
    assert syntax.startswith("script: syntax error: ") and "broken.py:2" in syntax
    [mapping] = problems("bad_mapping.yaml")
    assert mapping.startswith("mapping: ") and "bad.json: operation 0: unknown operation 'shiftr'" in mapping
    assert problems("bad_inline_mapping.yaml") == [
        "mapping: Jolt spec <inline>: operation 0 ('shift'): missing \"spec\""
    ]
    [outside] = problems("outside.yaml")
    assert outside.startswith("script: ") and "outside the flow folder" in outside
    # Nothing about the good flows, and no line that does not name a file.
    assert len(lines) == 7


def test_validate_names_the_field_of_each_broken_script(good_folder):
    write(good_folder / "scripts" / "broken.py", "if True\n")
    path = write_flow(
        good_folder,
        "bad_scripts",
        write_erp={"url": "/x", "custom_response": True, "response_script": "scripts/broken.py"},
        post_script="scripts/broken.py",
    )

    result = cli("validate", good_folder)

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert sorted(line.split(": ")[1] for line in lines) == ["post_script", "write_erp.response_script"]


def test_validate_flags_a_response_script_that_is_never_used(good_folder):
    path = write_flow(
        good_folder,
        "acme_unused_script",
        write_erp={"url": "/api/cancellations", "response_script": "scripts/response.py"},
    )
    result = cli("validate", good_folder)
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"{path}: write_erp.response_script: is not used unless write_erp.custom_response is true"
    )


def test_validate_notes_a_quartz_cron_it_translates(good_folder):
    path = write_flow(good_folder, "acme_quartz", schedule="0 0/5 * * * ?")
    result = cli("validate", good_folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"note: {path}: schedule: the Quartz cron '0 0/5 * * * ?' runs as the five-field cron '*/5 * * * *'"
        in result.stderr
    )


def test_validate_names_a_key_given_twice(good_folder):
    path = write(good_folder / "twice.yaml", (good_folder / "acme_cancel.yaml").read_text() + "flow_id: again\n")
    result = cli("validate", good_folder)
    assert result.returncode == 1
    assert result.stdout.strip() == f"{path}: flow_id: given twice, on lines 1 and 10"


def test_schema_prints_the_committed_json_schema():
    result = cli("schema")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(
        (ROOT / "include" / "flow-file.schema.json").read_text(encoding="utf-8")
    )


def test_validate_empty_and_missing_folders(tmp_path):
    empty = cli("validate", tmp_path)
    assert empty.returncode == 1
    assert f"no flow files in {tmp_path}" in empty.stderr

    missing = cli("validate", tmp_path / "flowz")
    assert missing.returncode == 2
    assert missing.stderr == (
        f"error: the flows folder {tmp_path / 'flowz'} does not exist "
        "(set ORDER_CANCEL_FLOWS_DIR to the folder of the flow files)\n"
    )


# --- test-script -----------------------------------------------------------------------------------


def test_script_step_short_style(plan_file):
    result = cli("test-script", SCRIPTS / "enrich_plan.py", "--input", plan_file, "--attr", "channel_type=web")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["result_data"]["pk"] == 7
    assert output["result_data"]["erp_reason_code"] == "CHANGED_MIND"
    assert output["result_data"]["total_quantity"] == 3
    assert output["attributes"] == {
        "channel_type": "web",
        "integration_code": "IC-7",
        "log.transform": "plan 7 (web): reason CHANGED_MIND, 3 unit(s)",
    }


def test_script_step_nifi_style(plan_file):
    result = cli("test-script", SCRIPTS / "nifi_style_transform.py", "--input", plan_file, "--attr", "channel_type=web")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["result_data"]["order_number"] == "429453007"
    assert output["result_data"]["currency"] == "TRY"
    assert [line["sku"] for line in output["result_data"]["lines"]] == ["SKU-700", "SKU-701"]
    assert output["attributes"]["order_number"] == "429453007"
    assert "INFO: ERP cancellation request built for order 429453007" in result.stderr


def test_script_that_raises(tmp_path, plan_file):
    script = write(
        tmp_path / "raises.py",
        """\
        log.info("checking the plan")
        session.putAttribute(flowFile, "step", "checked")
        raise RuntimeError("no ERP code for this reason")
    """,
    )
    result = cli("test-script", script, "--input", plan_file)
    assert result.returncode == 1
    output = json.loads(result.stdout)
    assert output["result_data"] is None
    assert output["attributes"]["step"] == "checked"
    error = output["attributes"]["log.script.error"]
    assert "RuntimeError: no ERP code for this reason" in error and f"{script}:3" in error
    assert "INFO: checking the plan" in result.stderr


def test_script_with_a_syntax_error(tmp_path, plan_file):
    script = write(tmp_path / "broken.py", "import json\nplan = json.loads(input_text\n")
    result = cli("test-script", script, "--input", plan_file)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{script}:2" in result.stderr


@pytest.mark.parametrize("status, relation", [("503", "do_nothing"), ("201", "continue"), ("422", "failure")])
def test_default_response_template(tmp_path, status, relation):
    body = write_json(tmp_path / "response.json", {"detail": "whatever the ERP says"})
    result = cli(
        "test-script",
        DEFAULT_RESPONSE,
        "--input",
        body,
        "--attr",
        f"invokehttp.status.code={status}",
        "--attr",
        "channel_type=web",
        "--var",
        'request_data={"orderNumber": "429453007"}',
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["attributes"]["relation"] == relation
    assert output["result_data"] == {"detail": "whatever the ERP says"}


def test_script_variables_are_json_or_text(tmp_path, plan_file):
    script = write(
        tmp_path / "echo.py",
        """\
        import json
        outputStream.write(json.dumps({"request": request_data, "response": response_data}))
    """,
    )
    result = cli(
        "test-script",
        script,
        "--input",
        plan_file,
        "--var",
        'request_data={"orderNumber": "1"}',
        "--var",
        "response_data=accepted",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["result_data"] == {"request": {"orderNumber": "1"}, "response": "accepted"}


def test_script_output_that_is_not_json_is_text(tmp_path, plan_file):
    script = write(tmp_path / "text.py", 'outputStream.write("plain text")\n')
    result = cli("test-script", script, "--input", plan_file)
    assert json.loads(result.stdout)["result_data"] == "plain text"


def test_script_timeout(tmp_path, plan_file):
    script = write(tmp_path / "slow.py", "import time\ntime.sleep(30)\n")
    result = cli("test-script", script, "--input", plan_file, "--timeout", "0.2")
    assert result.returncode == 1
    assert "ScriptTimeout" in json.loads(result.stdout)["attributes"]["log.script.error"]


STUBBORN_SCRIPT = """\
import time
while True:
    try:
        time.sleep(1)
    except:
        pass
"""


def test_a_script_that_will_not_stop_is_stopped_at_the_timeout(tmp_path, plan_file):
    script = write(tmp_path / "stubborn.py", STUBBORN_SCRIPT)
    started = time.monotonic()
    result = cli("test-script", script, "--input", plan_file, "--timeout", "2")
    assert time.monotonic() - started < 2 + 10  # the limit, the grace, two interpreters starting (never 60)
    assert result.returncode == 1
    assert json.loads(result.stdout)["attributes"]["log.script.error"] == (
        "ScriptTimeout: stopped after 2 s (it did not stop when asked: its process was killed)"
    )


def test_try_flow_stops_a_script_that_will_not_stop_at_the_flows_limit(tmp_path, plan_file):
    folder = tmp_path / "flows"
    write(folder / "scripts" / "stubborn.py", STUBBORN_SCRIPT)
    write_flow(folder, "acme_stubborn", script="scripts/stubborn.py", script_timeout_seconds=2)
    started = time.monotonic()
    result = cli("try-flow", "acme_stubborn", "--plan", plan_file, "--flows-dir", folder)
    assert time.monotonic() - started < 2 + 10
    assert result.returncode == 1
    answer = json.loads(result.stdout)
    assert answer["failed_step"] == "script"
    assert answer["error"].startswith("ScriptTimeout: stopped after 2 s (it did not stop when asked")


def test_what_a_script_prints_stays_off_the_json(tmp_path, plan_file):
    script = write(
        tmp_path / "chatty.py",
        """\
        print("looking at plan", 7)
        outputStream.write(input_text)
    """,
    )
    result = cli("test-script", script, "--input", plan_file)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["result_data"]["pk"] == 7
    assert "STDOUT: looking at plan 7" in result.stderr


def test_an_output_that_is_not_json_is_noted(tmp_path, plan_file):
    script = write(tmp_path / "twice.py", "outputStream.write(input_text)\noutputStream.write(input_text)\n")
    result = cli("test-script", script, "--input", plan_file)
    assert result.returncode == 0
    assert isinstance(json.loads(result.stdout)["result_data"], str)
    assert "the output is not JSON: as a Script Step this plan would fail at its transform" in result.stderr


def test_script_that_transfers_to_failure_is_noted(tmp_path, plan_file):
    script = write(tmp_path / "reject.py", "session.transfer(session.get(), REL_FAILURE)\n")
    result = cli("test-script", script, "--input", plan_file)
    assert result.returncode == 0
    assert "REL_FAILURE" in result.stderr


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--input", "missing.json"], "no such file: missing.json"),
        (["--input", "{plan}", "--attr", "channel_type"], "expected KEY=VALUE"),
        (["--input", "{plan}", "--timeout", "0"], "expected a number of seconds above 0, at most 86400, got '0'"),
        (["--input", "{plan}", "--var", "session=1"], "cannot replace the script API names ['session']"),
        ([], "--input"),
    ],
)
def test_script_bad_arguments(plan_file, arguments, message):
    arguments = [argument.format(plan=plan_file) for argument in arguments]
    result = cli("test-script", SCRIPTS / "enrich_plan.py", *arguments)
    assert result.returncode == 2
    assert message in result.stderr


def test_script_missing(plan_file):
    result = cli("test-script", "scripts/missing.py", "--input", plan_file)
    assert result.returncode == 2
    assert "no such file: scripts/missing.py" in result.stderr


# --- test-mapping ----------------------------------------------------------------------------------


def test_mapping_example_spec(plan_file):
    result = cli("test-mapping", ERP_CANCEL_MAPPING, "--input", plan_file)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["cancellationId"] == 7
    assert output["orderNumber"] == "429453007"
    assert output["currency"] == "TRY"
    assert output["reason"] == "Vazgeçtim."
    assert "Vazgeçtim." in result.stdout  # printed as UTF-8, not \u escapes
    assert [line["sku"] for line in output["lines"]] == ["SKU-700", "SKU-701"]


def test_mapping_bad_spec(tmp_path, plan_file):
    spec = write_json(tmp_path / "bad.json", [{"operation": "shiftr", "spec": {"pk": "id"}}])
    result = cli("test-mapping", spec, "--input", plan_file)
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"Jolt spec {spec}: operation 0: unknown operation 'shiftr'" in result.stderr


def test_mapping_input_that_is_not_json(tmp_path):
    data = write(tmp_path / "plan.json", "not json\n")
    result = cli("test-mapping", ERP_CANCEL_MAPPING, "--input", data)
    assert result.returncode == 2
    assert f"{data} is not JSON" in result.stderr


def test_no_command():
    result = cli()
    assert result.returncode == 2
    assert result.stderr == (
        "python -m order_cancel: error: the following arguments are required: COMMAND "
        "(see python -m order_cancel --help)\n"
    )
