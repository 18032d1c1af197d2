"""Runtime for the Akinon Integrator's user scripts (Apache NiFi ExecuteScript heritage).

A script is Python 3 source written for the Integrator, in the short style (``input_text``,
``outputStream.write``, ``get_attribute``, ``session.putAttribute``) or the full NiFi style
(``session.get()``, a ``StreamCallback`` subclass, ``IOUtils.toString``, ``session.write``,
``session.transfer``). ``Script`` compiles the source once; every ``run`` executes it for one
cancellation plan in fresh globals that provide those names, and answers a ``ScriptRun``.

Java/NiFi imports (``from org.apache.commons.io import IOUtils``, ...) resolve to the small Python
equivalents below through an ``__import__`` that only the script's globals see: ``sys.modules``
and the interpreter's own ``__import__`` are left alone.

Time limit (``timeout``, the Integrator's 300 s by default):

* In the main thread, ``SIGALRM`` from ``setitimer`` interrupts the script, blocking calls such as
  ``time.sleep`` included. Whoever owned ``SIGALRM`` before (Airflow's ``execution_timeout``) keeps
  its handler and its pending timer's due time: if that timer comes due while the script runs, its
  handler is called then and its exception (``AirflowTaskTimeout``) propagates unchanged.
* In any other thread signals cannot be used: a watchdog timer raises an exception in the script's
  thread with CPython's ``PyThreadState_SetAsyncExc``. Such an exception is only delivered between
  bytecodes, so the script's ``time`` module sleeps in short slices. Limitations of this fallback:
  another blocking C call (a socket read without a timeout) is interrupted only when it returns, and
  the exception is raised once, so a script that swallows it with a bare ``except:`` runs on (it is
  still reported as timed out when it ends).
"""

from __future__ import annotations

import builtins
import ctypes
import heapq
import io
import itertools
import signal
import threading
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT = 300.0
ERROR_ATTRIBUTE = "log.script.error"
STDOUT_LEVEL = "stdout"
LOG_ATTRIBUTE_PREFIX = "log."

# After the deadline the alarm repeats this often while the script still runs, in case the script
# swallowed the first interruption (a bare `except:` around a request, say) and carried on.
_ALARM_REPEAT = 0.1
# setitimer(0) disarms a timer, so "fire now" is this small delay.
_MIN_ALARM_DELAY = 1e-6
# In a worker thread, how often a sleeping script gives the watchdog's exception a chance.
_SLEEP_SLICE = 0.05


# -- Errors and results ------------------------------------------------------------------------


class ScriptError(Exception):
    """Base class of the script runtime's errors."""


class ScriptSyntaxError(ScriptError):
    """The script is not valid Python 3."""

    def __init__(self, filename: str, lineno: int | None, message: str):
        super().__init__(f"{filename}:{lineno}: {message}")
        self.filename = filename
        self.lineno = lineno


class ScriptFailed(ScriptError):
    """The script raised. ``attributes`` are the flow file's attributes at that point plus
    ``log.script.error``; ``logs`` is what the script logged before."""

    def __init__(self, message: str, attributes: dict[str, str], logs: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.attributes = attributes
        self.logs = logs or []


class ScriptTimeout(ScriptFailed):
    """The script ran longer than its time limit and was stopped."""


class _ScriptDeadline(BaseException):
    """Raised inside the script at its deadline; not an Exception, so `except Exception` lets it pass."""


@dataclass
class ScriptRun:
    output_text: str
    attributes: dict[str, str]
    logs: list[tuple[str, str]] = field(default_factory=list)
    # "success" or "failure" when the script called session.transfer, else None.
    transferred: str | None = None


def logged_attributes(attributes: dict[str, str]) -> dict[str, str]:
    """The attributes the Integrator writes to the log at the end of an execution."""
    return {key: value for key, value in attributes.items() if key.startswith(LOG_ATTRIBUTE_PREFIX)}


# -- Python equivalents of the Java and NiFi classes scripts import ------------------------------


@dataclass(frozen=True)
class Relationship:
    name: str

    def __str__(self) -> str:
        return self.name


REL_SUCCESS = Relationship("success")
REL_FAILURE = Relationship("failure")


@dataclass(frozen=True)
class Charset:
    name: str


class StandardCharsets:
    """java.nio.charset.StandardCharsets"""

    UTF_8 = Charset("utf-8")
    US_ASCII = Charset("ascii")
    ISO_8859_1 = Charset("latin-1")
    UTF_16 = Charset("utf-16")


def _codec(charset: Charset | str | None) -> str:
    """A Python codec for a Java charset given as StandardCharsets.X or by name ("UTF-8")."""
    if charset is None:
        return "utf-8"
    return charset.name if isinstance(charset, Charset) else str(charset)


class IOUtils:
    """org.apache.commons.io.IOUtils: the calls NiFi scripts make."""

    @staticmethod
    def toString(stream: Any, charset: Charset | str | None = None) -> str:
        return stream.read().decode(_codec(charset))

    @staticmethod
    def toByteArray(stream: Any) -> bytes:
        return stream.read()

    @staticmethod
    def write(data: str | bytes, stream: Any, charset: Charset | str | None = None) -> None:
        stream.write(data.encode(_codec(charset)) if isinstance(data, str) else data)


class String(str):
    """java.lang.String: ``String(bytes, charset)`` decodes, ``getBytes(charset)`` encodes."""

    def __new__(cls, value: str | bytes | bytearray = "", charset: Charset | str | None = None) -> String:
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode(_codec(charset))
        return super().__new__(cls, value)

    def getBytes(self, charset: Charset | str | None = None) -> bytes:
        return self.encode(_codec(charset))


class StreamCallback:
    """org.apache.nifi.processor.io.StreamCallback:
    ``session.write`` calls ``process(inputStream, outputStream)``."""

    def process(self, inputStream: Any, outputStream: Any) -> None:
        raise NotImplementedError


class InputStreamCallback:
    """``session.read`` calls ``process(inputStream)``."""

    def process(self, inputStream: Any) -> None:
        raise NotImplementedError


class OutputStreamCallback:
    """``session.write`` calls ``process(outputStream)``; the old content is not offered."""

    def process(self, outputStream: Any) -> None:
        raise NotImplementedError


class ExecuteScript:
    """org.apache.nifi.processors.script.ExecuteScript, for ``ExecuteScript.REL_SUCCESS``."""

    REL_SUCCESS = REL_SUCCESS
    REL_FAILURE = REL_FAILURE


_JAVA_MODULES = {
    "java.lang": {"String": String},
    "java.nio.charset": {"StandardCharsets": StandardCharsets},
    "org.apache.commons.io": {"IOUtils": IOUtils},
    "org.apache.nifi.processor.io": {
        "StreamCallback": StreamCallback,
        "InputStreamCallback": InputStreamCallback,
        "OutputStreamCallback": OutputStreamCallback,
    },
    "org.apache.nifi.processors.script": {"ExecuteScript": ExecuteScript},
}
_JAVA_ROOTS = ("java", "javax", "org")


def _java_packages() -> dict[str, types.ModuleType]:
    """Module objects for the supported names and every package above them (org, org.apache, ...)."""
    packages: dict[str, types.ModuleType] = {}
    for dotted, names in _JAVA_MODULES.items():
        parts = dotted.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name not in packages:
                packages[name] = types.ModuleType(name)
                if depth > 1:
                    setattr(packages[".".join(parts[: depth - 1])], parts[depth - 1], packages[name])
        vars(packages[dotted]).update(names)
    return packages


_JAVA_PACKAGES = _java_packages()


def _import_java(name: str, fromlist: tuple[str, ...]) -> types.ModuleType:
    module = _JAVA_PACKAGES.get(name)
    if module is None:
        raise ImportError(
            f"{name} is a Java package with no Python equivalent in the script runtime "
            f"(available: {', '.join(_JAVA_MODULES)})",
            name=name,
        )
    for attribute in fromlist:
        if attribute != "*" and not hasattr(module, attribute):
            available = ", ".join(sorted(key for key in vars(module) if not key.startswith("__")))
            raise ImportError(
                f"{name}.{attribute} has no Python equivalent in the script runtime "
                f"({name} provides: {available})",
                name=name,
            )
    # `from a.b import X` reads X from a.b; `import a.b` binds the top package a.
    return module if fromlist else _JAVA_PACKAGES[name.split(".")[0]]


def _script_import(replaced: dict[str, types.ModuleType]):
    """The script's __import__: Java/NiFi names map to the equivalents above, `replaced` swaps some
    Python modules for this run (see _WatchdogLimit), anything else is the normal import."""

    def script_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] in _JAVA_ROOTS:
            return _import_java(name, tuple(fromlist or ()))
        if level == 0 and name in replaced:
            return replaced[name]
        return builtins.__import__(name, globals, locals, fromlist, level)

    return script_import


# -- The flow file, session, streams and log of one run ----------------------------------------


class _FlowFile:
    """The plan's flow file: str -> str attributes and the content bytes."""

    def __init__(self, content: bytes, attributes: dict[str, str]):
        self.content = content
        self.attributes = {str(key): str(value) for key, value in attributes.items()}

    def getAttribute(self, key: str) -> str | None:
        return self.attributes.get(key)

    def getAttributes(self) -> dict[str, str]:
        return dict(self.attributes)

    def getSize(self) -> int:
        return len(self.content)


class _OutputStream:
    """A Java OutputStream that also accepts str: the Integrator's scripts write JSON strings."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.written = False

    def write(self, data: str | bytes | bytearray | int) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif isinstance(data, int):  # Java's write(int b) writes one byte
            data = bytes([data])
        self._buffer += data
        self.written = True

    def flush(self) -> None:
        """Nothing is buffered: scripts call it out of Java habit."""

    def close(self) -> None:
        """The content stays readable after a script closes the stream."""

    def getvalue(self) -> bytes:
        return bytes(self._buffer)


class _Session:
    """NiFi's ProcessSession, for the single flow file of a run."""

    def __init__(self, flow_file: _FlowFile):
        self._flow_file = flow_file
        self.transferred: str | None = None

    def get(self) -> _FlowFile:
        return self._flow_file

    def putAttribute(self, flow_file: _FlowFile, key: str, value: Any) -> _FlowFile:
        flow_file.attributes[str(key)] = str(value)
        return flow_file

    def putAllAttributes(self, flow_file: _FlowFile, attributes: dict[str, Any]) -> _FlowFile:
        for key, value in attributes.items():
            self.putAttribute(flow_file, key, value)
        return flow_file

    def removeAttribute(self, flow_file: _FlowFile, key: str) -> _FlowFile:
        flow_file.attributes.pop(key, None)
        return flow_file

    def write(self, flow_file: _FlowFile, callback: Any) -> _FlowFile:
        """As in NiFi, what the callback writes replaces the content (so writing nothing empties it)."""
        output = _OutputStream()
        if isinstance(callback, OutputStreamCallback):
            callback.process(output)
        else:
            callback.process(io.BytesIO(flow_file.content), output)
        flow_file.content = output.getvalue()
        return flow_file

    def read(self, flow_file: _FlowFile, callback: Any) -> None:
        callback.process(io.BytesIO(flow_file.content))

    def transfer(self, flow_file: _FlowFile, relationship: Relationship) -> None:
        if not isinstance(relationship, Relationship):
            raise TypeError(f"session.transfer expects REL_SUCCESS or REL_FAILURE, not {relationship!r}")
        self.transferred = relationship.name


class _ScriptLog:
    """NiFi's ComponentLog. Extra arguments are appended, as in ``log.error("failed", exception)``."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def _add(self, level: str, message: Any, args: tuple[Any, ...]) -> None:
        self.records.append((level, " ".join(str(part) for part in (message, *args))))

    def debug(self, message: Any, *args: Any) -> None:
        self._add("debug", message, args)

    def info(self, message: Any, *args: Any) -> None:
        self._add("info", message, args)

    def warning(self, message: Any, *args: Any) -> None:
        self._add("warning", message, args)

    warn = warning

    def error(self, message: Any, *args: Any) -> None:
        self._add("error", message, args)

    def print(self, *values: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False) -> None:
        """The script's print(): a log record of level "stdout", so that nothing it prints lands
        between a command's own output (`test-script`'s JSON) and each plan's lines stay its own."""
        if file is not None:
            builtins.print(*values, sep=sep, end=end, file=file, flush=flush)
            return
        text = (" " if sep is None else sep).join(str(value) for value in values)
        self.records.append((STDOUT_LEVEL, text + ("\n" if end is None else end).removesuffix("\n")))


class _RunContext:
    """The NiFi objects of one run, and the ScriptRun they add up to."""

    def __init__(self, input_text: str, attributes: dict[str, str]):
        self.input_text = input_text
        self.flow_file = _FlowFile(input_text.encode("utf-8"), attributes)
        self.session = _Session(self.flow_file)
        self.output = _OutputStream()
        self.log = _ScriptLog()

    def script_names(self) -> dict[str, Any]:
        return {
            "input_text": self.input_text,
            "inputStream": io.BytesIO(self.flow_file.content),
            "outputStream": self.output,
            "flowFile": self.flow_file,
            "session": self.session,
            "get_attribute": self.flow_file.getAttribute,
            "REL_SUCCESS": REL_SUCCESS,
            "REL_FAILURE": REL_FAILURE,
            "log": self.log,
        }

    def result(self) -> ScriptRun:
        # Direct writes to outputStream are the output; else the flow file's content, which is the
        # input unless session.write replaced it (NiFi keeps the content of a script that writes nothing).
        content = self.output.getvalue() if self.output.written else self.flow_file.content
        return ScriptRun(
            output_text=content.decode("utf-8"),
            attributes=dict(self.flow_file.attributes),
            logs=list(self.log.records),
            transferred=self.session.transferred,
        )


# -- Time limits ---------------------------------------------------------------------------------


def _runs_in(frame: types.FrameType | None, filename: str) -> bool:
    """Whether a frame of the script is on the interrupted stack."""
    while frame is not None:
        if frame.f_code.co_filename == filename:
            return True
        frame = frame.f_back
    return False


class _AlarmLimit:
    """Main-thread limit: SIGALRM from ITIMER_REAL, which also interrupts blocking calls."""

    replaced_modules: dict[str, types.ModuleType] = {}

    def __init__(self, timeout: float, filename: str):
        self._timeout = timeout
        self._filename = filename
        self.expired = False
        self.outer_error: BaseException | None = None

    def start(self) -> None:
        now = time.monotonic()
        self._deadline = now + self._timeout
        self._previous_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        delay, self._outer_interval = signal.setitimer(signal.ITIMER_REAL, 0)
        self._outer_due = now + delay if delay else None
        self._arm()

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        # signal.signal answers None for a handler installed outside Python; SIG_DFL is the closest.
        previous = signal.SIG_DFL if self._previous_handler is None else self._previous_handler
        signal.signal(signal.SIGALRM, previous)
        if self._outer_due is not None:
            delay = max(self._outer_due - time.monotonic(), _MIN_ALARM_DELAY)
            signal.setitimer(signal.ITIMER_REAL, delay, self._outer_interval)

    def _chains_outer(self) -> bool:
        # Only a Python handler can be called from ours; SIG_DFL or SIG_IGN get the signal after stop().
        return self._outer_due is not None and callable(self._previous_handler)

    def _arm(self) -> None:
        due = min(self._deadline, self._outer_due) if self._chains_outer() else self._deadline
        signal.setitimer(signal.ITIMER_REAL, max(due - time.monotonic(), _MIN_ALARM_DELAY))

    def _on_alarm(self, signum: int, frame: types.FrameType | None) -> None:
        now = time.monotonic()
        if self._chains_outer() and now >= self._outer_due:
            self._outer_due = now + self._outer_interval if self._outer_interval else None
            self._arm()
            try:
                self._previous_handler(signum, frame)
            except BaseException as error:
                self.outer_error = error
                raise
        elif now >= self._deadline:
            self.expired = True
            # Raise only inside the script: once it has returned, our caller must not be interrupted.
            if _runs_in(frame, self._filename):
                signal.setitimer(signal.ITIMER_REAL, _ALARM_REPEAT)
                raise _ScriptDeadline
        else:
            self._arm()  # woke up early


def _set_async_exception(thread_id: int, exception_type: type[BaseException] | None) -> None:
    """CPython's PyThreadState_SetAsyncExc; None withdraws an exception not yet delivered."""
    exception = ctypes.py_object(exception_type) if exception_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exception)


def _sliced_time_module() -> types.ModuleType:
    """The time module with a sleep that an asynchronous exception can interrupt."""
    module = types.ModuleType("time", time.__doc__)
    vars(module).update(vars(time))

    def sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, _SLEEP_SLICE))

    module.sleep = sleep
    return module


class _Watchdog:
    """One daemon thread that delivers the deadlines of every script running outside the main thread.

    A thread per script run would cost a thread start per plan, which with a batch's worker
    threads competing for the GIL took longer than the script itself. Stopped limits are dropped
    when they reach the front of the queue.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._queue: list[tuple[float, int, _WatchdogLimit]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, limit: _WatchdogLimit, timeout: float) -> None:
        with self._condition:
            heapq.heappush(self._queue, (time.monotonic() + timeout, next(self._order), limit))
            # is_alive(): a forked worker process inherits this object but not the thread.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._deliver, name="script-watchdog", daemon=True)
                self._thread.start()
            self._condition.notify()

    def _deliver(self) -> None:
        with self._condition:
            while True:
                while self._queue and not self._queue[0][2].running:
                    heapq.heappop(self._queue)
                if not self._queue:
                    self._condition.wait()
                    continue
                due, _, limit = self._queue[0]
                if due > time.monotonic():
                    self._condition.wait(due - time.monotonic())
                    continue
                heapq.heappop(self._queue)
                limit.fire()


class _WatchdogLimit:
    """Limit outside the main thread: the watchdog raises _ScriptDeadline in the script's thread.

    It fires once, under a lock, and stop() withdraws an exception not yet delivered: after stop()
    nothing can hit the caller's code. (A repeated exception could land after the script returned.)
    """

    replaced_modules = {"time": _sliced_time_module()}
    watchdog = _Watchdog()

    def __init__(self, timeout: float):
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._timeout = timeout
        self.running = False
        self.expired = False
        self.outer_error: BaseException | None = None

    def start(self) -> None:
        self.running = True
        self.watchdog.watch(self, self._timeout)

    def stop(self) -> None:
        with self._lock:
            self.running = False
            if self.expired:
                _set_async_exception(self._thread_id, None)

    def fire(self) -> None:
        with self._lock:
            if self.running:
                self.expired = True
                _set_async_exception(self._thread_id, _ScriptDeadline)


def _time_limit(timeout: float, filename: str) -> _AlarmLimit | _WatchdogLimit:
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _AlarmLimit(timeout, filename)
    return _WatchdogLimit(timeout)


# -- Scripts -------------------------------------------------------------------------------------


class Script:
    """A user script, compiled once and run once per cancellation plan."""

    def __init__(self, source: str, name: str = "<script>"):
        self.name = name
        try:
            self._code = compile(source, name, "exec")
        except SyntaxError as error:
            raise ScriptSyntaxError(name, error.lineno, error.msg) from None

    @classmethod
    def from_file(cls, path: str | Path) -> Script:
        return cls(Path(path).read_text(encoding="utf-8"), str(path))

    def run(
        self,
        input_text: str,
        attributes: dict[str, str],
        *,
        variables: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ScriptRun:
        """Run the script on one plan's content and attributes; `variables` become extra global names
        (request_data, response_data). Raises ScriptFailed, or ScriptTimeout after `timeout` seconds."""
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        context = _RunContext(input_text, attributes)
        limit = _time_limit(timeout, self.name)
        script_globals = self._globals(context, variables or {}, limit.replaced_modules)
        error: BaseException | None = None
        try:
            try:
                limit.start()
                exec(self._code, script_globals)
            finally:
                limit.stop()
        except _ScriptDeadline as deadline:
            error = deadline
        except (Exception, SystemExit) as exc:
            if exc is limit.outer_error:
                raise
            error = exc
        # Checked first: a script that caught the deadline and raised something else still timed out.
        if limit.expired:
            description = f"ScriptTimeout: stopped after {timeout:g} s"
            raise self._failure(context, error, ScriptTimeout, description) from error
        if error is not None:
            raise self._failure(context, error, ScriptFailed, f"{type(error).__name__}: {error}") from error
        try:
            return context.result()
        except UnicodeDecodeError as exc:
            raise self._failure(context, exc, ScriptFailed, f"the script's output is not UTF-8: {exc}") from exc

    def _globals(
        self, context: _RunContext, variables: dict[str, Any], replaced_modules: dict[str, types.ModuleType]
    ) -> dict[str, Any]:
        names = context.script_names()
        clashes = names.keys() & variables.keys()
        if clashes:
            raise ValueError(f"variables cannot replace the script API names {sorted(clashes)}")
        script_builtins = dict(vars(builtins))
        script_builtins["__import__"] = _script_import(replaced_modules)
        script_builtins["print"] = context.log.print
        return {"__name__": "__script__", "__builtins__": script_builtins, **names, **variables}

    def _failure(
        self, context: _RunContext, error: BaseException | None, kind: type[ScriptFailed], description: str
    ) -> ScriptFailed:
        location = self._location(error)
        if location:
            description = f"{description} ({location})"
        attributes = {**context.flow_file.attributes, ERROR_ATTRIBUTE: description}
        return kind(f"script {self.name} failed: {description}", attributes, list(context.log.records))

    def _location(self, error: BaseException | None) -> str | None:
        """file:line of the script's innermost frame in the error's traceback."""
        if error is None:
            return None
        lines = [lineno for frame, lineno in traceback.walk_tb(error.__traceback__)
                 if frame.f_code.co_filename == self.name]
        return f"{self.name}:{lines[-1]}" if lines else None
