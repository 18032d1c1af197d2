"""Deep checks of flow files: what loading a flow leaves to run time.

Loading (flows.loading) checks the schema and that referenced files exist. These checks also
compile the scripts and build the Jolt chain, so a syntax error or a bad spec shows up before a DAG
runs. Problems are reported as FlowConfigError, one `<field>: <message>` line each, like loading's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from order_cancel.flows.loading import FlowConfigError, load_flows
from order_cancel.flows.models import FlowConfig
from order_cancel.runtime.jolt import JoltMapping, MappingError, load_spec_file
from order_cancel.runtime.scripts import Script, ScriptSyntaxError


def _script_problem(path: Path) -> str | None:
    try:
        Script.from_file(path)
    except ScriptSyntaxError as exc:
        return f"syntax error: {exc}"
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read {path}: {exc}"
    return None


def _mapping_problem(mapping: Path | list | dict) -> str | None:
    source = str(mapping) if isinstance(mapping, Path) else "<inline>"
    # pyjolt only warns (a UserWarning, its one warning) of an unknown modify function ("=noSuchFunction(...)"),
    # and the field is then missing from every ERP request: here it is a problem like a spec that does not build.
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        try:
            JoltMapping(load_spec_file(mapping) if isinstance(mapping, Path) else mapping, source=source)
        except MappingError as exc:
            return str(exc)
    unknown = [str(warning.message) for warning in warned if issubclass(warning.category, UserWarning)]
    return f"Jolt spec {source}: {'; '.join(unknown)}" if unknown else None


def check_flow(flow: FlowConfig) -> list[str]:
    """The problems of a loaded flow that only compiling its scripts and building its mapping find."""
    check = flow.write_erp.query_check
    scripts = {
        "script": flow.script,
        "write_erp.response_script": flow.write_erp.response_script,
        "write_erp.query_check.script": check.script if check else None,
        "post_script": flow.post_script,
    }
    problems = [
        f"{field}: {problem}"
        for field, path in scripts.items()
        if path is not None and (problem := _script_problem(path))
    ]
    if flow.mapping is not None and (problem := _mapping_problem(flow.mapping)):
        problems.append(f"mapping: {problem}")
    # Loading accepts this, but the flow would silently evaluate answers with the default table.
    if flow.write_erp.response_script is not None and not flow.write_erp.custom_response:
        problems.append("write_erp.response_script: is not used unless write_erp.custom_response is true")
    return problems


@dataclass(frozen=True)
class FlowInspection:
    """Every loadable flow of a folder, and one error per file with problems (load or deep checks).

    A loaded flow may have problems too (a script that does not compile): it can still become a
    DAG, whose runs would fail.
    """

    loaded: list[FlowConfig]
    errors: list[FlowConfigError]

    @property
    def sound(self) -> list[FlowConfig]:
        broken = {error.path for error in self.errors}
        return [flow for flow in self.loaded if flow.source not in broken]


def inspect_flows(folder: Path | None = None) -> FlowInspection:
    """load_flows plus check_flow; errors sorted by file name. Raises FlowsFolderError."""
    loaded, errors = load_flows(folder)
    for flow in loaded:
        problems = check_flow(flow)
        if problems:
            errors.append(FlowConfigError(flow.source, problems))
    return FlowInspection(loaded, sorted(errors, key=lambda error: str(error.path)))
