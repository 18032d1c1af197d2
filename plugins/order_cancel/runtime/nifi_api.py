"""The NiFi API a script sees: Python equivalents of the Java and NiFi classes Integrator scripts
import, and the flow file, session, streams and log of one run.

Java/NiFi imports (``from org.apache.commons.io import IOUtils``, ...) resolve to the classes below
through an ``__import__`` that only the script's globals see (`script_import`): ``sys.modules`` and
the interpreter's own ``__import__`` are left alone.
"""

from __future__ import annotations

import builtins
import io
import types
from dataclasses import dataclass, field
from typing import Any

ERROR_ATTRIBUTE = "log.script.error"
LOG_ATTRIBUTE_PREFIX = "log."
# The level of what a script print()s, among its log records.
STDOUT_LEVEL = "stdout"
LogLine = tuple[str, str]
MAX_LOG_LINES = 200
MAX_LOG_LINE_CHARS = 2000


@dataclass
class ScriptRun:
    """What one run of a script left: its output, its flow file's attributes, its log records."""

    output_text: str
    attributes: dict[str, str]
    logs: list[LogLine] = field(default_factory=list)
    # "success" or "failure" when the script called session.transfer, else None.
    transferred: str | None = None


def logged_attributes(attributes: dict[str, str]) -> dict[str, str]:
    """The attributes the Integrator writes to the log at the end of an execution."""
    return {key: value for key, value in attributes.items() if key.startswith(LOG_ATTRIBUTE_PREFIX)}


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


_JAVA_MODULES: dict[str, dict[str, Any]] = {
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
                f"{name}.{attribute} has no Python equivalent in the script runtime ({name} provides: {available})",
                name=name,
            )
    # `from a.b import X` reads X from a.b; `import a.b` binds the top package a.
    return module if fromlist else _JAVA_PACKAGES[name.split(".")[0]]


def script_import(name, globals=None, locals=None, fromlist=(), level=0):
    """The script's __import__: Java/NiFi names map to the equivalents above, anything else is the normal import."""
    if level == 0 and name.split(".")[0] in _JAVA_ROOTS:
        return _import_java(name, tuple(fromlist or ()))
    return builtins.__import__(name, globals, locals, fromlist, level)


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


class ScriptLog:
    """NiFi's ComponentLog. Extra arguments are appended, as in ``log.error("failed", exception)``.

    A plan's lines travel in its step records (XCom, the ledger, the task log): the first
    `MAX_LOG_LINES` are kept, each cut at `MAX_LOG_LINE_CHARS`, and a last line says how many were cut."""

    def __init__(self) -> None:
        self._kept: list[LogLine] = []
        self._cut = 0

    @property
    def records(self) -> list[LogLine]:
        if not self._cut:
            return list(self._kept)
        return [*self._kept, ("warning", f"... {self._cut} more lines cut (a plan keeps {MAX_LOG_LINES})")]

    def _append(self, level: str, text: str) -> None:
        if len(self._kept) >= MAX_LOG_LINES:
            self._cut += 1
            return
        if len(text) > MAX_LOG_LINE_CHARS:
            text = f"{text[:MAX_LOG_LINE_CHARS]}... ({len(text) - MAX_LOG_LINE_CHARS} more characters cut)"
        self._kept.append((level, text))

    def _add(self, level: str, message: Any, args: tuple[Any, ...]) -> None:
        self._append(level, " ".join(str(part) for part in (message, *args)))

    def debug(self, message: Any, *args: Any) -> None:
        self._add("debug", message, args)

    def info(self, message: Any, *args: Any) -> None:
        self._add("info", message, args)

    def warning(self, message: Any, *args: Any) -> None:
        self._add("warning", message, args)

    warn = warning

    def error(self, message: Any, *args: Any) -> None:
        self._add("error", message, args)

    def print(
        self, *values: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False
    ) -> None:
        """The script's print(): a log record of level "stdout", so that nothing it prints lands
        between a command's own output (`test-script`'s JSON) and each plan's lines stay its own."""
        if file is not None:
            builtins.print(*values, sep=sep, end=end, file=file, flush=flush)
            return
        text = (" " if sep is None else sep).join(str(value) for value in values)
        self._append(STDOUT_LEVEL, text + ("\n" if end is None else end).removesuffix("\n"))


class RunContext:
    """The NiFi objects of one run, and the ScriptRun they add up to."""

    def __init__(self, input_text: str, attributes: dict[str, str]):
        self.input_text = input_text
        self.flow_file = _FlowFile(input_text.encode("utf-8"), attributes)
        self.session = _Session(self.flow_file)
        self.output = _OutputStream()
        self.log = ScriptLog()

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
            logs=self.log.records,
            transferred=self.session.transferred,
        )
