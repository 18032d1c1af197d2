"""Loading flow files, in small steps like dag-factory: read the YAML -> validate it with the
models -> (in the Airflow adapters) build a DAG. Every problem names the file and the field, so one
bad file is reported on its own and never hides the others.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from order_cancel.flows.models import FlowConfig

FLOWS_DIR_ENV = "ORDER_CANCEL_FLOWS_DIR"
# Where flow files are when neither the environment nor the caller says: a project's include/flows.
DEFAULT_FLOWS_DIR = Path("include") / "flows"
FLOW_FILE_PATTERNS = ("*.yaml", "*.yml")


class FlowConfigError(Exception):
    """A flow file that cannot be used; `problems` holds one line per field."""

    def __init__(self, path: Path | None, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {problem}" for problem in problems))


class _FlowFileLoader(yaml.SafeLoader):
    """YAML as flow files use it: dates stay text, so the models parse them (and name a bad one)."""


_FlowFileLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _duplicate_keys(node: yaml.Node, path: tuple[str, ...] = ()) -> list[str]:
    """A key given twice in one mapping: YAML keeps the last one silently, a flow file must not."""
    problems: list[str] = []
    if isinstance(node, yaml.MappingNode):
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in first_lines:
                problems.append(f"{'.'.join((*path, key))}: given twice, on lines {first_lines[key]} and {line}")
            first_lines.setdefault(key, line)
            problems += _duplicate_keys(value_node, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, (*path, str(index)))
    return problems


def _parse_yaml(text: str, path: Path) -> Any:
    loader = _FlowFileLoader(text)
    try:
        node = loader.get_single_node()
        problems = _duplicate_keys(node) if node is not None else []
        if problems:
            raise FlowConfigError(path, problems)
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def _holds(data: Any, part: Any) -> bool:
    if isinstance(data, dict):
        return part in data
    return isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)


def _field_path(location: tuple[Any, ...], data: Any) -> str:
    """The error's location as the flow file's fields: pydantic's union and validator steps left out."""
    parts: list[str] = []
    for index, part in enumerate(location):
        last = index == len(location) - 1
        if _holds(data, part):
            data = data[part]
        elif not (last and isinstance(part, str) and part.isidentifier()):
            continue  # a union member or validator (`token`, `function-after[...]`), not a field
        parts.append(str(part))
    return ".".join(parts)


# Error types whose message does not show the value that was given.
_VALUE_NOT_SHOWN = {"missing", "extra_forbidden", "value_error"}


def _describe(error: ErrorDetails, data: Any) -> str:
    location = _field_path(tuple(error["loc"]), data)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "union_tag_invalid":  # erp.login's `type`
        context = error.get("ctx", {})
        location = f"{location}.{context['discriminator'].strip(chr(39))}"
        message = f"must be one of {context['expected_tags']} (given: {context['tag']!r})"
    given = error.get("input")
    if error["type"] not in _VALUE_NOT_SHOWN and isinstance(given, (str, int, float)) and len(repr(given)) <= 80:
        message = f"{message} (given: {given!r})"
    return f"{location}: {message}" if location else message


def read_flow_file(path: Path) -> dict[str, Any]:
    """Step 1: parse the YAML of one flow file into a mapping."""
    try:
        data = _parse_yaml(path.read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowConfigError(path, [f"cannot read the file: {exc}"]) from None
    except yaml.YAMLError as exc:
        raise FlowConfigError(path, [f"invalid YAML: {exc}".replace("\n", " ")]) from None
    if not isinstance(data, dict):
        raise FlowConfigError(path, ["the file must hold a mapping of flow settings"])
    return data


def validate_flow(data: dict[str, Any], path: Path) -> FlowConfig:
    """Step 2: validate the mapping; relative paths resolve against the file's folder."""
    try:
        flow = FlowConfig.model_validate(data, context={"source": path})
    except ValidationError as exc:
        raise FlowConfigError(path, [_describe(error, data) for error in exc.errors()]) from None
    flow._source = path
    return flow


def load_flow(path: Path) -> FlowConfig:
    path = Path(path)
    try:
        return validate_flow(read_flow_file(path), path)
    except FlowConfigError:
        raise
    except Exception as exc:  # a case nobody foresaw still breaks only this file, and names it
        raise FlowConfigError(path, [f"cannot be loaded: {type(exc).__name__}: {exc}"]) from exc


class FlowsFolderError(Exception):
    """The flows folder is missing, not a folder, or cannot be listed."""


def flows_dir(default: Path | None = None) -> Path:
    """$ORDER_CANCEL_FLOWS_DIR, else `default`, else include/flows of the working directory."""
    return Path(os.environ.get(FLOWS_DIR_ENV) or default or DEFAULT_FLOWS_DIR)


def flow_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise FlowsFolderError(
            f"the flows folder {folder} {what} (set {FLOWS_DIR_ENV} to the folder of the flow files)"
        )
    try:
        return sorted({path for pattern in FLOW_FILE_PATTERNS for path in folder.glob(pattern)})
    except OSError as exc:
        raise FlowsFolderError(f"the flows folder {folder} cannot be read: {exc}") from None


def load_flows(folder: Path | None = None) -> tuple[list[FlowConfig], list[FlowConfigError]]:
    """Every flow of a folder: the good ones, and one error per bad file (a bad file never hides the others).

    Raises FlowsFolderError when the folder itself cannot be listed.
    """
    flows: list[FlowConfig] = []
    errors: list[FlowConfigError] = []
    seen: dict[str, Path] = {}
    for path in flow_files(folder if folder is not None else flows_dir()):
        try:
            flow = load_flow(path)
        except FlowConfigError as exc:
            errors.append(exc)
            continue
        if flow.flow_id in seen:
            errors.append(FlowConfigError(path, [f"flow_id: {flow.flow_id!r} is already used by {seen[flow.flow_id]}"]))
            continue
        seen[flow.flow_id] = path
        flows.append(flow)
    return flows, errors
