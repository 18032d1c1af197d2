"""Loading flow files, in small steps like dag-factory: read the YAML -> validate it with the
models -> (in the Airflow adapters) build a DAG. Every problem names the file and the field, so one
bad file is reported on its own and never hides the others.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from order_cancel.flows.models import FlowConfig

FLOWS_DIR_ENV = "ORDER_CANCEL_FLOWS_DIR"
# Where flow files are when neither the environment nor the caller says: a project's include/flows.
DEFAULT_FLOWS_DIR = Path("include") / "flows"
# In any case: ACME.YAML is a flow file too, never silently left out.
FLOW_FILE_SUFFIXES = (".yaml", ".yml")


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


# Aliases let a tiny file stand for a huge document (nine aliases of nine aliases, eight deep, make
# 387 million values): a file that expands past this many values is refused before anything walks
# the expansion. The largest flow file, inline Jolt spec included, is far below it.
MAX_YAML_VALUES = 10_000
_WALKING = -1


class _NodeCheck:
    """One pass over a document's nodes, each node once however many aliases name it: its size
    once aliases are expanded, keys given twice, and numbers that are not finite."""

    def __init__(self, loader: yaml.SafeLoader):
        self.loader = loader
        self.sizes: dict[int, int] = {}
        self.problems: list[str] = []

    def size(self, node: yaml.Node, path: tuple[str, ...] = ()) -> int:
        """The node's value count with aliases expanded; _WALKING marks a node an alias loops back into."""
        known = self.sizes.get(id(node))
        if known is not None:
            return MAX_YAML_VALUES + 1 if known == _WALKING else known
        self.sizes[id(node)] = _WALKING
        size = 1 + sum(self.size(child, child_path) for child, child_path in self._children(node, path))
        self.sizes[id(node)] = size
        return size

    def _children(self, node: yaml.Node, path: tuple[str, ...]) -> Iterator[tuple[yaml.Node, tuple[str, ...]]]:
        # A generator, so that problems come in the order of the file: a key's before its children's.
        if isinstance(node, yaml.MappingNode):
            yield from self._entries(node, path)
        elif isinstance(node, yaml.SequenceNode):
            yield from ((item, (*path, str(index))) for index, item in enumerate(node.value))
        elif (
            isinstance(node, yaml.ScalarNode)
            and node.tag == "tag:yaml.org,2002:float"
            and not math.isfinite(self.loader.construct_yaml_float(node))
        ):
            self.problems.append(f"{'.'.join(path)}: must be a finite number (given: {node.value})")

    def _entries(self, node: yaml.MappingNode, path: tuple[str, ...]) -> Iterator[tuple[yaml.Node, tuple[str, ...]]]:
        # A key given twice: YAML keeps the last one silently, a flow file must not.
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in first_lines:
                self.problems.append(f"{'.'.join((*path, key))}: given twice, on lines {first_lines[key]} and {line}")
            first_lines.setdefault(key, line)
            yield key_node, (*path, key)
            yield value_node, (*path, key)


def _node_problems(node: yaml.Node, loader: yaml.SafeLoader) -> list[str]:
    check = _NodeCheck(loader)
    if check.size(node) > MAX_YAML_VALUES:
        return [f"holds more than {MAX_YAML_VALUES:,} values once its YAML aliases (*name) are expanded"]
    return check.problems


def _parse_yaml(text: str, path: Path) -> Any:
    loader = _FlowFileLoader(text)
    try:
        node = loader.get_single_node()
        problems = _node_problems(node, loader) if node is not None else []
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
        # iterdir, not glob: glob answers an unreadable folder with no files at all.
        entries = list(folder.iterdir())
    except OSError as exc:
        raise FlowsFolderError(f"the flows folder {folder} cannot be read: {exc.strerror}") from None
    return sorted(path for path in entries if path.suffix.lower() in FLOW_FILE_SUFFIXES)


def load_flows(folder: Path | None = None) -> tuple[list[FlowConfig], list[FlowConfigError]]:
    """Every flow of a folder: the good ones, and one error per bad file (a bad file never hides the others).

    Raises FlowsFolderError when the folder itself cannot be listed.
    """
    loaded: dict[Path, FlowConfig] = {}
    errors: list[FlowConfigError] = []
    for path in flow_files(folder if folder is not None else flows_dir()):
        try:
            loaded[path] = load_flow(path)
        except FlowConfigError as exc:
            errors.append(exc)
    broken = [error.path for error in errors if error.path is not None]
    clashes = _flow_id_clashes({path: flow.flow_id for path, flow in loaded.items()}, broken)
    refused = {clash.path for clash in clashes}
    return [flow for path, flow in loaded.items() if path not in refused], errors + clashes


class UnknownFlow(LookupError):
    """No loadable flow file has this flow_id."""


def find_flow(flow_id: str, folder: Path | None = None) -> FlowConfig:
    """The flow of the flows folder (flows_dir()) with this id; broken files are skipped."""
    try:
        flows, _ = load_flows(folder)
    except FlowsFolderError as exc:
        raise UnknownFlow(f"no flow {flow_id!r}: {exc}") from None
    for flow in flows:
        if flow.flow_id == flow_id:
            return flow
    raise UnknownFlow(f"no flow {flow_id!r} in the flows folder")


def _flow_id_clashes(flow_ids: dict[Path, str], broken: list[Path]) -> list[FlowConfigError]:
    """The files refused because another file gives their flow_id. Which file builds a DAG must never
    depend on how a new file's name sorts: the file named `<flow_id>.yaml` keeps its id (even while
    it has problems); without one, no file does."""
    claims: dict[str, list[Path]] = {}
    for path, flow_id in flow_ids.items():
        claims.setdefault(flow_id, []).append(path)
    clashes = []
    for flow_id, paths in claims.items():
        named = [path for path in paths if path.stem == flow_id]
        named = named or [path for path in broken if path.stem == flow_id]
        owner = named[0] if len(named) == 1 else None
        if owner is None and len(paths) == 1:
            continue
        clashes += [
            FlowConfigError(path, [_clash(flow_id, path, paths, owner, broken)]) for path in paths if path != owner
        ]
    return clashes


def _clash(flow_id: str, path: Path, paths: list[Path], owner: Path | None, broken: list[Path]) -> str:
    if owner is None:
        others = ", ".join(str(other) for other in paths if other != path)
        return f"flow_id: {flow_id!r} is also given by {others}: no DAG is built for it until one file alone has it"
    if owner in broken:
        return f"flow_id: {flow_id!r} belongs to {owner}, named after it, which has problems; no other file takes it"
    return f"flow_id: {flow_id!r} belongs to {owner}, named after it; give this file a flow_id of its own"
