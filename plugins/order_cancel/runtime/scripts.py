"""Scripts of the Akinon Integrator (Apache NiFi ExecuteScript heritage), compiled once, run per plan.

A script is Python 3 source written for the Integrator, in the short style (``input_text``,
``outputStream.write``, ``get_attribute``, ``session.putAttribute``) or the full NiFi style
(``session.get()``, a ``StreamCallback`` subclass, ``IOUtils.toString``, ``session.write``,
``session.transfer``). ``Script`` compiles the source once; every ``run`` executes it for one
cancellation plan in a child process (`containment`), in fresh globals that provide those names
(`nifi_api`), under a time limit (`time_limits`, and the child killed if the script ignores it),
and answers a ``ScriptRun``.
"""

from __future__ import annotations

import builtins
import functools
import traceback
from pathlib import Path
from typing import Any

from order_cancel.runtime import containment
from order_cancel.runtime.nifi_api import ERROR_ATTRIBUTE, RunContext, ScriptRun, script_import
from order_cancel.runtime.time_limits import ScriptDeadline, TimeLimit

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

    def __reduce__(self) -> tuple[Any, ...]:  # it comes back from the script's process pickled
        return type(self), (str(self), self.attributes, self.logs)


class ScriptTimeout(ScriptFailed):
    """The script ran longer than its time limit and was stopped."""


class Script:
    """A user script, compiled once and run once per cancellation plan."""

    def __init__(self, source: str, name: str = "<script>"):
        self.name = name
        self._source = source
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
        if containment.in_child():
            return self.run_here(input_text, attributes, variables=variables, timeout=timeout)
        try:
            return containment.thread_child().call(
                _run_in_child,
                self._source,
                self.name,
                input_text,
                attributes,
                variables,
                timeout,
                timeout=timeout + containment.GRACE_SECONDS,
            )
        except containment.CallTimedOut:
            description = (
                f"ScriptTimeout: stopped after {timeout:g} s (it did not stop when asked: its process was killed)"
            )
            raise ScriptTimeout(
                f"script {self.name} failed: {description}", {**attributes, ERROR_ATTRIBUTE: description}
            ) from None
        except containment.ChildDied as exc:
            description = f"the script's process ended: {exc}"
            raise ScriptFailed(
                f"script {self.name} failed: {description}", {**attributes, ERROR_ATTRIBUTE: description}
            ) from None

    def run_here(
        self,
        input_text: str,
        attributes: dict[str, str],
        *,
        variables: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ScriptRun:
        """`run` in this process, for code that is contained already (see `containment`)."""
        context = RunContext(input_text, attributes)
        limit = TimeLimit(timeout, self.name)
        script_globals = self._globals(context, variables or {})
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

    def _globals(self, context: RunContext, variables: dict[str, Any]) -> dict[str, Any]:
        names = context.script_names()
        clashes = names.keys() & variables.keys()
        if clashes:
            raise ValueError(f"variables cannot replace the script API names {sorted(clashes)}")
        script_builtins = dict(vars(builtins))
        script_builtins["__import__"] = script_import
        script_builtins["print"] = context.log.print
        return {"__name__": "__script__", "__builtins__": script_builtins, **names, **variables}

    def _failure(
        self, context: RunContext, error: BaseException | None, kind: type[ScriptFailed], description: str
    ) -> ScriptFailed:
        location = self._location(error)
        if location:
            description = f"{description} ({location})"
        attributes = {**context.flow_file.attributes, ERROR_ATTRIBUTE: description}
        return kind(f"script {self.name} failed: {description}", attributes, context.log.records)

    def _location(self, error: BaseException | None) -> str | None:
        """file:line of the script's innermost frame in the error's traceback."""
        if error is None:
            return None
        lines = [
            lineno for frame, lineno in traceback.walk_tb(error.__traceback__) if frame.f_code.co_filename == self.name
        ]
        return f"{self.name}:{lines[-1]}" if lines else None


@functools.lru_cache(maxsize=64)
def _compiled(source: str, name: str) -> Script:
    return Script(source, name)


def _run_in_child(
    source: str,
    name: str,
    input_text: str,
    attributes: dict[str, str],
    variables: dict[str, Any] | None,
    timeout: float,
) -> ScriptRun:
    """One run in the script's process; a script is compiled once there too."""
    return _compiled(source, name).run_here(input_text, attributes, variables=variables, timeout=timeout)
