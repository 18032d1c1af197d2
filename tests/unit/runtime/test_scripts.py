"""The script runtime: both script styles, the NiFi objects, failures, time limits, shipped scripts."""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fakes.data import make_plan
from order_cancel.runtime import containment, scripts
from order_cancel.runtime.nifi_api import MAX_LOG_LINE_CHARS, MAX_LOG_LINES, logged_attributes
from order_cancel.runtime.scripts import (
    Script,
    ScriptFailed,
    ScriptSyntaxError,
    ScriptTimeout,
)

INCLUDE = Path(__file__).resolve().parents[3] / "include"
SCRIPTS = INCLUDE / "flows" / "scripts"
DEFAULT_RESPONSE = INCLUDE.parent / "plugins" / "order_cancel" / "runtime" / "templates" / "default_response.py"


def run(source: str, input_text: str = "{}", attributes: dict | None = None, **kwargs):
    return Script(source, "test_script.py").run(input_text, attributes or {}, **kwargs)


def in_worker_thread(function):
    """Calls function in a new thread; answers (result, exception, seconds)."""
    outcome = {}

    def target():
        started = time.monotonic()
        try:
            outcome["result"] = function()
        except BaseException as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return outcome.get("result"), outcome.get("error"), outcome["seconds"]


@pytest.fixture
def alarm_state():
    """Fails a test that leaves a SIGALRM handler or timer behind."""
    handler = signal.getsignal(signal.SIGALRM)
    yield
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is handler


# -- Script styles and the NiFi objects ----------------------------------------------------------


def test_short_style_transforms_json_and_sets_attributes():
    result = run(
        "import json\n"
        "plan = json.loads(input_text)\n"
        "plan['channel'] = get_attribute('channel_type')\n"
        "session.putAttribute(flowFile, 'count', len(plan))\n"
        "outputStream.write(json.dumps(plan))\n",
        '{"pk": 7}',
        {"channel_type": "web"},
    )
    assert json.loads(result.output_text) == {"pk": 7, "channel": "web"}
    assert result.attributes == {"channel_type": "web", "count": "2"}
    assert result.transferred is None


def test_nifi_style_imports_callback_attributes_and_transfer():
    source = """
import json
from java.nio.charset import StandardCharsets
from org.apache.commons.io import IOUtils
from org.apache.nifi.processor.io import StreamCallback

class TransformCallback(StreamCallback):
    def process(self, inputStream, outputStream):
        data = json.loads(IOUtils.toString(inputStream, StandardCharsets.UTF_8))
        data["channel"] = flowFile.getAttribute("channel_type")
        outputStream.write(bytearray(json.dumps(data).encode("utf-8")))

flowFile = session.get()
if flowFile != None:
    flowFile = session.write(flowFile, TransformCallback())
    flowFile = session.putAttribute(flowFile, "size", flowFile.getSize())
    log.info("transformed", flowFile.getAttribute("channel_type"))
    session.transfer(flowFile, REL_SUCCESS)
"""
    result = run(source, '{"pk": 1}', {"channel_type": "web"})
    assert json.loads(result.output_text) == {"pk": 1, "channel": "web"}
    assert result.attributes["size"] == str(len(result.output_text.encode()))
    assert result.logs == [("info", "transformed web")]
    assert result.transferred == "success"


def test_transfer_to_failure_is_reported_not_raised():
    result = run("session.transfer(session.get(), REL_FAILURE)")
    assert result.transferred == "failure"


def test_java_string_output_callback_and_execute_script_relationships():
    source = """
import java.lang
from java.lang import String
from org.apache.nifi.processor.io import InputStreamCallback, OutputStreamCallback
from org.apache.nifi.processors.script import ExecuteScript

class Reader(InputStreamCallback):
    def process(self, inputStream):
        self.text = String(inputStream.read(), "UTF-8")

class Writer(OutputStreamCallback):
    def process(self, outputStream):
        outputStream.write(java.lang.String(reader.text.upper()).getBytes())

reader = Reader()
session.read(flowFile, reader)
session.write(flowFile, Writer())
session.transfer(flowFile, ExecuteScript.REL_SUCCESS)
"""
    result = run(source, "çok güzel")
    assert result.output_text == "ÇOK GÜZEL"
    assert result.transferred == "success"


def test_attributes_are_strings_and_can_be_read_put_and_removed():
    source = """
assert get_attribute("missing") is None
session.putAllAttributes(flowFile, {"a": 1, "b": None})
session.removeAttribute(flowFile, "drop")
session.putAttribute(flowFile, "keys", ",".join(sorted(flowFile.getAttributes())))
"""
    result = run(source, attributes={"drop": "x", "keep": "y"})
    assert result.attributes == {"keep": "y", "a": "1", "b": "None", "keys": "a,b,keep"}


def test_a_script_that_writes_nothing_passes_its_input_through():
    result = run("session.putAttribute(flowFile, 'seen', input_text[:5])", '{"pk": 1}')
    assert result.output_text == '{"pk": 1}'
    assert result.attributes == {"seen": '{"pk"'}


def test_session_write_with_a_silent_callback_empties_the_content_as_nifi_does():
    source = """
from org.apache.nifi.processor.io import StreamCallback
class Nothing(StreamCallback):
    def process(self, inputStream, outputStream):
        pass
session.write(flowFile, Nothing())
"""
    assert run(source, "data").output_text == ""


def test_variables_become_global_names_and_cannot_shadow_the_api():
    source = "outputStream.write(str(request_data['pk']) + ' ' + response_data)"
    assert run(source, variables={"request_data": {"pk": 3}, "response_data": "ok"}).output_text == "3 ok"
    with pytest.raises(ValueError, match="session"):
        run("pass", variables={"session": None})


def test_log_levels_are_collected_and_log_attributes_are_selected():
    result = run(
        "log.debug('d'); log.info('i'); log.warn('w'); log.warning('w2'); log.error('e', ValueError('x'))\n"
        "session.putAttribute(flowFile, 'log.step', 'done')\n"
    )
    assert result.logs == [("debug", "d"), ("info", "i"), ("warning", "w"), ("warning", "w2"), ("error", "e x")]
    assert logged_attributes({"log.step": "done", "token": "secret", "logx": "no"}) == {"log.step": "done"}


# -- Failures ------------------------------------------------------------------------------------


def test_an_exception_becomes_script_failed_with_log_script_error():
    source = "session.putAttribute(flowFile, 'stage', 'parsed')\nlog.info('before')\n\nraise ValueError('bad plan')\n"
    with pytest.raises(ScriptFailed) as caught:
        run(source, attributes={"channel_type": "web"})
    error = caught.value
    assert not isinstance(error, ScriptTimeout)
    assert error.attributes["log.script.error"] == "ValueError: bad plan (test_script.py:4)"
    assert error.attributes["stage"] == "parsed"
    assert error.attributes["channel_type"] == "web"
    assert error.logs == [("info", "before")]
    assert "test_script.py" in str(error)


def test_the_failing_line_is_the_scripts_own_frame_not_the_library_frame():
    with pytest.raises(ScriptFailed) as caught:
        run("import json\n\njson.loads(input_text)\n", "not json")
    assert caught.value.attributes["log.script.error"].startswith("JSONDecodeError: ")
    assert caught.value.attributes["log.script.error"].endswith("(test_script.py:3)")


def test_sys_exit_is_a_failure_not_an_exit():
    with pytest.raises(ScriptFailed, match="SystemExit"):
        run("import sys\nsys.exit(3)")


def test_a_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "python2.py"
    path.write_text("x = 1\nprint 'hello'\n")
    with pytest.raises(ScriptSyntaxError) as caught:
        Script.from_file(path)
    assert caught.value.filename == str(path) and caught.value.lineno == 2
    assert str(caught.value).startswith(f"{path}:2: ")


def test_an_unknown_java_import_fails_clearly():
    with pytest.raises(ScriptFailed) as caught:
        run("from java.util import ArrayList")
    message = caught.value.attributes["log.script.error"]
    assert message.startswith("ImportError: java.util is a Java package with no Python equivalent")
    assert "org.apache.commons.io" in message
    with pytest.raises(ScriptFailed, match=r"org\.apache\.commons\.io\.FileUtils has no Python equivalent"):
        run("from org.apache.commons.io import FileUtils")


def test_java_names_are_not_installed_globally():
    import sys

    run("from org.apache.commons.io import IOUtils")
    assert not any(name == "org" or name.startswith(("org.", "java.")) for name in sys.modules)
    with pytest.raises(ImportError):
        __import__("org.apache.commons.io")


def test_compiled_once_and_every_run_gets_fresh_globals(monkeypatch):
    compiled = []
    monkeypatch.setattr(scripts, "compile", lambda *args: compiled.append(args) or compile(*args), raising=False)
    script = Script(
        "runs = globals().get('runs', 0) + 1\n"
        "session.putAttribute(flowFile, 'runs', runs)\n"
        "session.putAttribute(flowFile, 'seen', get_attribute('plan'))\n",
        "counter.py",
    )
    results = [script.run("", {"plan": str(index)}) for index in range(3)]
    assert len(compiled) == 1
    assert [result.attributes for result in results] == [
        {"plan": str(index), "runs": "1", "seen": str(index)} for index in range(3)
    ]


# -- Time limits ---------------------------------------------------------------------------------

LOOPS = {"busy loop": "while True:\n    pass\n", "long sleep": "import time\ntime.sleep(10**6)\n"}


@pytest.mark.parametrize("source", LOOPS.values(), ids=LOOPS.keys())
def test_timeout_in_the_main_thread(source, alarm_state):
    started = time.monotonic()
    with pytest.raises(ScriptTimeout) as caught:
        run(source, timeout=0.5)
    assert 0.45 < time.monotonic() - started < 3  # the limit, and a child started under load
    error = caught.value.attributes["log.script.error"]
    assert error.startswith("ScriptTimeout: stopped after 0.5 s (test_script.py:")


@pytest.mark.parametrize("source", LOOPS.values(), ids=LOOPS.keys())
def test_timeout_in_a_worker_thread(source):
    _, error, seconds = in_worker_thread(lambda: run(source, timeout=0.5))
    assert isinstance(error, ScriptTimeout), error
    assert 0.45 < seconds < 3  # a new thread starts its own child


def test_a_swallowed_deadline_is_still_a_timeout(alarm_state):
    source = "try:\n    while True:\n        pass\nexcept BaseException:\n    pass\n"
    with pytest.raises(ScriptTimeout):
        run(source, timeout=0.2)
    assert isinstance(in_worker_thread(lambda: run(source, timeout=0.2))[1], ScriptTimeout)


def test_the_alarm_repeats_when_the_script_swallows_it(alarm_state):
    source = (
        "import time\nfor _ in range(5):\n    try:\n        time.sleep(1)\n    except BaseException:\n        pass\n"
    )
    started = time.monotonic()
    with pytest.raises(ScriptTimeout):
        run(source, timeout=0.3)
    assert time.monotonic() - started < 3  # without the repeat: about 4.3 s


# Scripts that will not be stopped: one swallows every interruption, one turns the alarm off.
UNSTOPPABLE = {
    "bare except": (
        "import time\n"
        "while True:\n"
        "    try:\n"
        "        time.sleep(1)\n"
        "        raise IOError()\n"
        "    except:\n"
        "        pass\n"
    ),
    "alarm ignored": "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(60)\n",
}


@pytest.mark.parametrize("source", UNSTOPPABLE.values(), ids=UNSTOPPABLE.keys())
@pytest.mark.parametrize("thread", ["main thread", "worker thread"])
def test_a_script_that_will_not_stop_is_killed_at_its_limit(source, thread, alarm_state):
    def attempt():
        return run(source, timeout=1)

    result, error, seconds = in_worker_thread(attempt) if thread == "worker thread" else _timed(attempt)
    assert isinstance(error, ScriptTimeout), (result, error)
    assert 1 < seconds < 1 + containment.GRACE_SECONDS + 3
    assert error.attributes["log.script.error"] == (
        "ScriptTimeout: stopped after 1 s (it did not stop when asked: its process was killed)"
    )
    assert run("outputStream.write('next')", timeout=5).output_text == "next", "the next run gets a fresh process"


def test_what_a_script_starts_is_killed_with_it(tmp_path):
    marker = tmp_path / "still-running"
    late_write = f"import time; time.sleep(3); open({str(marker)!r}, 'w')"
    source = (
        "import signal, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {late_write!r}])\n"
        "signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "time.sleep(60)\n"
    )
    with pytest.raises(ScriptTimeout):
        run(source, timeout=0.5)
    time.sleep(4)
    assert not marker.exists()


def test_a_script_sees_none_of_its_callers_environment(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "the-fernet-key")
    monkeypatch.setenv("AIRFLOW_CONN_ERP", "http://erp:the-password@erp")
    monkeypatch.setenv("SOME_TOKEN", "the-token")
    containment.thread_child().close()  # a child started before these were set would not have them anyway

    result = run("import os, json\noutputStream.write(json.dumps(dict(os.environ)))")

    environment = json.loads(result.output_text)
    assert not [value for value in environment.values() if value.startswith("the-") or "the-password" in value]
    assert not [name for name in environment if name.startswith("AIRFLOW")]


def test_a_plan_larger_than_a_pipes_buffer_crosses_to_the_script_and_back_whole():
    # A pipe holds 64 KiB: the plan and the output are read and written in pieces.
    plan = json.dumps({"lines": [{"sku": f"SKU-{n}", "note": "ü" * 50} for n in range(20000)]})

    result = run("outputStream.write(input_text)", input_text=plan)

    assert len(plan) > 1_000_000
    assert result.output_text == plan


def test_a_scripts_log_lines_are_bounded():
    result = run("for n in range(10000):\n    print('line', n)\nlog.info('x' * 100000)")
    assert len(result.logs) == MAX_LOG_LINES + 1
    assert result.logs[-1] == ("warning", f"... {10001 - MAX_LOG_LINES} more lines cut (a plan keeps {MAX_LOG_LINES})")
    long = run("log.info('x' * 100000)").logs[0][1]
    assert long.endswith(f"... ({100000 - MAX_LOG_LINE_CHARS} more characters cut)") and len(long) < 2100


def _timed(function):
    started = time.monotonic()
    try:
        return function(), None, time.monotonic() - started
    except BaseException as error:
        return None, error, time.monotonic() - started


def test_previous_sigalrm_handler_and_timer_are_restored():
    calls = []

    def outer_handler(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGALRM, outer_handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        run("x = 1", timeout=5)
        with pytest.raises(ScriptTimeout):
            run("while True: pass", timeout=0.2)
        remaining, interval = signal.getitimer(signal.ITIMER_REAL)
        assert 29.0 < remaining <= 30.0 and interval == 0.0
        assert signal.getsignal(signal.SIGALRM) is outer_handler
        assert calls == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_an_outer_timer_due_during_the_script_gets_its_handler_called_then():
    calls = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: calls.append(time.monotonic()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        started = time.monotonic()
        result = run("import time\ntime.sleep(0.3)\nsession.putAttribute(flowFile, 'done', 1)", timeout=5)
        assert result.attributes == {"done": "1"}
        assert len(calls) == 1 and 0.08 < calls[0] - started < 1
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_an_outer_timeout_like_airflows_propagates_unchanged():
    class TaskTimeout(Exception):
        pass

    def airflow_handler(signum, frame):
        raise TaskTimeout("execution_timeout")

    previous = signal.signal(signal.SIGALRM, airflow_handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        started = time.monotonic()
        with pytest.raises(TaskTimeout):
            run("while True: pass", timeout=5)
        assert time.monotonic() - started < 3  # not the script's 5 s
        assert signal.getsignal(signal.SIGALRM) is airflow_handler
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_timeout_must_be_positive():
    with pytest.raises(ValueError):
        run("pass", timeout=0)


# -- The shipped scripts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "relation"),
    [
        ("200", "continue"),
        ("201", "continue"),
        ("204", "continue"),
        ("401", "auth_fail"),
        ("403", "auth_fail"),
        ("408", "do_nothing"),
        ("429", "do_nothing"),
        ("500", "do_nothing"),
        ("503", "do_nothing"),
        (None, "do_nothing"),
        ("", "do_nothing"),
        ("400", "failure"),
        ("404", "failure"),
        ("422", "failure"),
    ],
)
def test_default_response_template(status, relation):
    attributes = {"channel_type": "web", "rejected_count": "0"}
    if status is not None:
        attributes["invokehttp.status.code"] = status
    result = Script.from_file(DEFAULT_RESPONSE).run(
        '{"result": "ok"}', attributes, variables={"request_data": {"order_number": "1"}}
    )
    assert result.attributes["relation"] == relation
    assert result.transferred == "success"


def test_enrich_plan_example():
    plan = make_plan(4, items=3)
    result = Script.from_file(SCRIPTS / "enrich_plan.py").run(
        json.dumps(plan, ensure_ascii=False), {"channel_type": "web"}
    )
    enriched = json.loads(result.output_text)
    assert plan["reason"]["subject"] == "Beden uymadı."
    assert enriched["erp_reason_code"] == "WRONG_SIZE"
    assert enriched["total_quantity"] == 1 + 2 + 1
    assert {key: enriched[key] for key in plan} == plan
    assert result.attributes["integration_code"] == "IC-4"
    assert logged_attributes(result.attributes) == {"log.transform": "plan 4 (web): reason WRONG_SIZE, 4 unit(s)"}


def test_nifi_style_transform_example():
    plan = make_plan(3, plan_type="refund")
    script = Script.from_file(SCRIPTS / "nifi_style_transform.py")
    result = script.run(json.dumps(plan), {"channel_type": "marketplace"})
    request = json.loads(result.output_text)
    assert request["order_number"] == plan["order"]["number"]
    assert request["type"] == "REFUND" and request["channel_type"] == "marketplace"
    assert request["currency"] == "TRY" and request["refund_amount"] == plan["refund_amount"]
    assert [line["sku"] for line in request["lines"]] == [
        item["order_item"]["product"]["sku"] for item in plan["cancellationplanorderitem_set"]
    ]
    assert result.attributes["order_number"] == plan["order"]["number"]
    assert result.logs == [("info", f"ERP cancellation request built for order {plan['order']['number']}")]
    assert result.transferred == "success"

    broken = script.run("not json", {"channel_type": "web"})
    assert broken.transferred == "failure"
    assert broken.output_text == "not json"
    assert broken.logs[0][0] == "error"


@pytest.fixture
def crm_server():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(201 if self.path == "/notify" else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_post_notify_example(crm_server):
    url, received = crm_server
    script = Script.from_file(SCRIPTS / "post_notify.py")
    variables = {"request_data": {"order_number": "429452003"}, "response_data": {"id": "ERP-9", "status": "ok"}}

    result = script.run(json.dumps(variables), {"crm_url": f"{url}/notify"}, variables=variables)
    assert received == [("/notify", {"order_number": "429452003", "erp_response": variables["response_data"]})]
    assert result.logs == [("info", "CRM notified about order 429452003 (HTTP 201)")]

    with pytest.raises(ScriptFailed, match="HTTPError: 500"):
        script.run(
            "{}",
            {"crm_url": f"{url}/broken", "order_number": "1"},
            variables={"request_data": "<xml/>", "response_data": "text"},
        )
    assert received[-1] == ("/broken", {"order_number": "1", "erp_response": "text"})

    skipped = script.run("{}", {}, variables={"request_data": {}, "response_data": {}})
    assert skipped.logs == [("warning", "no crm_url attribute: the CRM is not notified")]
