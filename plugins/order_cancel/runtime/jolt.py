"""The Jolt "Mapping Step": turn an Omnitron cancellation plan into the ERP request body.

A thin adapter over pyjolt (package ``jolt-py``). The flow config gives the Jolt spec either as a
file path (see :func:`load_spec_file`) or inline (already-parsed YAML). Either way it is a chain,
a list of ``{"operation": ..., "spec": ...}`` entries, or one such entry on its own.

:class:`JoltMapping` validates and builds the pyjolt transforms once, when it is constructed (once
per Airflow task), and is then applied to many plans. Every problem is raised as
:class:`MappingError`, whose message names the spec's source, and for a bad chain entry, its
index and operation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pyjolt import (
    Cardinality,
    Chainr,
    Default,
    ModifyDefault,
    ModifyDefine,
    ModifyOverwrite,
    PyJoltError,
    Remove,
    Shift,
    Sort,
    Transform,
)
from pyjolt._common.paths import _ArrayStep

DEFAULT_MAX_ARRAY_INDEX = 10_000

# The operation names Jolt documents. pyjolt also takes aliases ("modify-overwrite") and Java class
# names; accepting only these keeps flow specs portable to any Jolt (and its online demo).
# Any: pyjolt types every transform as Transform, whose constructor takes no spec.
_OPERATIONS: dict[str, type[Any]] = {
    "shift": Shift,
    "default": Default,
    "remove": Remove,
    "sort": Sort,
    "cardinality": Cardinality,
    "modify-overwrite-beta": ModifyOverwrite,
    "modify-default-beta": ModifyDefault,
    "modify-define-beta": ModifyDefine,
}
_MODIFY = (ModifyOverwrite, ModifyDefault, ModifyDefine)


class MappingError(ValueError):
    """A Jolt spec cannot be loaded or built, or applying it to a document failed."""


# ---------------------------------------------------------------------------------------------
# Loading a spec file
# ---------------------------------------------------------------------------------------------

# A JSON string literal, a // comment or a /* */ comment. Matching strings first keeps a "//"
# inside a string (a URL, say) from being taken for a comment.
_STRING_OR_COMMENT = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)


def _blank_comment(match: re.Match[str]) -> str:
    text = match.group()
    if text.startswith('"'):
        return text
    # Spaces instead of removal keep the line and column numbers of JSON errors right.
    return re.sub(r"[^\n]", " ", text)


def load_spec_file(path: str | Path) -> list[Any] | dict[str, Any]:
    """Read a Jolt spec from a JSON file: a chain (array) or one ``{operation, spec}`` object.

    ``//`` and ``/* */`` comments outside strings are allowed, as Jolt itself allows them.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"Jolt spec file {path}: cannot read it: {exc}") from exc
    try:
        spec = json.loads(_STRING_OR_COMMENT.sub(_blank_comment, text))
    except json.JSONDecodeError as exc:
        raise MappingError(
            f"Jolt spec file {path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(spec, (list, dict)):
        raise MappingError(f"Jolt spec file {path}: expected a JSON array or object, got {type(spec).__name__}")
    return spec


# ---------------------------------------------------------------------------------------------
# Guard against output arrays grown from an index in the data
# ---------------------------------------------------------------------------------------------
#
# A Shift output path can take an array index from the data being transformed: "out[&1]" and
# "out[&(0,1)]" use (part of) a matched input key, "out[@(1,idx)]" an input value. pyjolt, like
# Java Jolt, pads the list with nulls up to that index, and only requires it to fit in 32 bits.
# So one key "999999999" in a plan makes it build a 10^9-element list: with jolt-py 2.0.0 it runs
# for ~8 s and dies with MemoryError under a 1 GiB address-space limit, and without a limit it
# takes ~8 GB. ("[]" and "[#n]" never outgrow the input; Default and modify-* indexes come from
# the spec.)
#
# The padding happens in a single place, _ArrayStep.overwrite_set, for final and intermediate
# writes alike, so that is where the index is checked. Alternatives that were rejected:
# - Pre-checking the input: an index can be any key, any part of a key or any value, and in a
#   chain an output of an earlier step. A sound check would refuse every plan with a large
#   numeric id; a precise one would re-implement Shift's path evaluation.
# - A subclass: pyjolt creates these step objects internally from module-level classes with no
#   factory to override, so using one means walking Shift's private spec tree and swapping the
#   class of its objects: more private surface, no less fragile.
# The wrapper only acts while JoltMapping.apply runs (the limit is in a ContextVar, unset
# elsewhere), so other pyjolt users in the process see no change.

_max_array_index: ContextVar[int | None] = ContextVar("jolt_max_array_index", default=None)
_unbounded_overwrite_set = _ArrayStep.overwrite_set


class _ArrayIndexTooLarge(Exception):
    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def _bounded_overwrite_set(step: _ArrayStep, tree: list[Any], key: str, data: Any) -> Any:
    limit = _max_array_index.get()
    if limit is not None:
        try:
            # int() accepts everything pyjolt's parser does ("+5" too), and a bit more.
            index = int(key)
        except ValueError:
            index = None  # not an index: pyjolt reports it
        if index is not None and index > limit:
            raise _ArrayIndexTooLarge(index)
    return _unbounded_overwrite_set(step, tree, key, data)


_ArrayStep.overwrite_set = _bounded_overwrite_set  # type: ignore[method-assign,assignment]


# ---------------------------------------------------------------------------------------------
# The mapping
# ---------------------------------------------------------------------------------------------


class JoltMapping:
    """A validated Jolt chain, built once and applied to many documents.

    ``spec``: a chain (list of ``{"operation", "spec"}``) or one such object.
    ``source``: where the spec came from (a file path, or ``"<inline>"``), used in error messages.
    ``functions``: extra functions for ``modify-*`` operations (``"=name(...)"``), each taking the
    evaluated arguments and returning a value, or :data:`pyjolt.MISSING` for no value.
    ``max_array_index``: the largest array index an output path may write to.
    """

    def __init__(
        self,
        spec: list[Any] | dict[str, Any],
        source: str = "<inline>",
        *,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        max_array_index: int = DEFAULT_MAX_ARRAY_INDEX,
    ) -> None:
        self.source = source
        self.max_array_index = max_array_index
        if isinstance(spec, dict):
            if "operation" not in spec:
                raise MappingError(
                    f"Jolt spec {source}: an object spec must be one operation "
                    f'{{"operation": ..., "spec": ...}}; it has no "operation" key'
                )
            spec = [spec]
        if not isinstance(spec, list):
            raise MappingError(
                f"Jolt spec {source}: expected a list of operations or one operation object, got {type(spec).__name__}"
            )
        if not spec:
            raise MappingError(f"Jolt spec {source}: the chain is empty")
        transforms = [self._build(index, entry, functions) for index, entry in enumerate(spec)]
        self._chainr = Chainr(transforms)

    def _build(self, index: int, entry: Any, functions: Mapping[str, Callable[..., Any]] | None) -> Transform:
        where = f"Jolt spec {self.source}: operation {index}"
        if not isinstance(entry, dict):
            raise MappingError(f"{where}: expected an object, got {type(entry).__name__}")
        operation = entry.get("operation")
        transform_class = _OPERATIONS.get(operation) if isinstance(operation, str) else None
        if transform_class is None:
            raise MappingError(f"{where}: unknown operation {operation!r}; expected one of {', '.join(_OPERATIONS)}")
        where = f"{where} ({operation!r})"
        # As in Jolt, only "sort" works without a spec; a missing one is more likely a typo.
        if "spec" not in entry and transform_class is not Sort:
            raise MappingError(f'{where}: missing "spec"')
        try:
            if transform_class in _MODIFY:
                return transform_class(entry["spec"], functions=dict(functions) if functions is not None else None)
            return transform_class(entry.get("spec"))
        except Exception as exc:  # pyjolt reports most, not all, spec problems as SpecError
            raise MappingError(f"{where}: invalid spec: {exc}") from exc

    def apply(self, data: Any, context: dict[str, Any] | None = None) -> Any:
        """Transform ``data`` (left unchanged) and return the result.

        ``context``: values that ``modify-*`` specs can read with ``^path``.
        """
        token = _max_array_index.set(self.max_array_index)
        try:
            return self._chainr.apply(data, context)
        except _ArrayIndexTooLarge as exc:
            raise MappingError(
                f"Jolt spec {self.source}: output array index {exc.index} exceeds "
                f"max_array_index={self.max_array_index}"
            ) from None
        except PyJoltError as exc:
            raise MappingError(f"Jolt spec {self.source}: transform failed: {exc}") from exc
        finally:
            _max_array_index.reset(token)
