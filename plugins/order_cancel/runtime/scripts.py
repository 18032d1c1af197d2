"""Scripts of the Akinon Integrator (Apache NiFi ExecuteScript heritage), compiled once, run per plan.

A script is Python 3 source written for the Integrator, in the short style (``input_text``,
``outputStream.write``, ``get_attribute``, ``session.putAttribute``) or the full NiFi style
(``session.get()``, a ``StreamCallback`` subclass, ``IOUtils.toString``, ``session.write``,
``session.transfer``). ``Script`` compiles the source once; every ``run`` executes it for one
cancellation plan in fresh globals that provide those names (`nifi_api`), under a time limit
(`time_limits`), and answers a ``ScriptRun``.
"""

from __future__ import annotations

import builtins
import traceback
import types
from pathlib import Path
from typing import Any

from order_cancel.runtime.nifi_api import ERROR_ATTRIBUTE, RunContext, ScriptRun, script_import
from order_cancel.runtime.time_limits import ScriptDeadline, time_limit

DEFAULT_TIMEOUT = 300.0


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
        context = RunContext(input_text, attributes)
        limit = time_limit(timeout, self.name)
        script_globals = self._globals(context, variables or {}, limit.replaced_modules)
        error: BaseException | None = None
        try:
            try:
                limit.start()
                exec(self._code, script_globals)
            finally:
                limit.stop()
        except ScriptDeadline as deadline:
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
        self, context: RunContext, variables: dict[str, Any], replaced_modules: dict[str, types.ModuleType]
    ) -> dict[str, Any]:
        names = context.script_names()
        clashes = names.keys() & variables.keys()
        if clashes:
            raise ValueError(f"variables cannot replace the script API names {sorted(clashes)}")
        script_builtins = dict(vars(builtins))
        script_builtins["__import__"] = script_import(replaced_modules)
        script_builtins["print"] = context.log.print
        return {"__name__": "__script__", "__builtins__": script_builtins, **names, **variables}

    def _failure(
        self, context: RunContext, error: BaseException | None, kind: type[ScriptFailed], description: str
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
        lines = [
            lineno for frame, lineno in traceback.walk_tb(error.__traceback__) if frame.f_code.co_filename == self.name
        ]
        return f"{self.name}:{lines[-1]}" if lines else None
