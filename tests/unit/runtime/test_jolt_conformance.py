"""Jolt's reference test fixtures, run through JoltMapping.

The fixtures are the JSON test data of the Java implementation (bazaarvoice/jolt), kept in
``shared/conformance/jolt`` beside this clone; their README defines the 213 runnable cases, how
each kind is run and how results are compared. This file follows it, and Jolt's own test
classes (ShiftrTest, ModifierTest, ChainrTest, ...), case by case.

Every kind is a chain or a single operation, so every case goes through the adapter, including
the ``^`` context lookups and the two custom functions of labelsLookupTest.

Results are compared with a port of Jolt's ``Diffy`` / ``ArrayOrderObliviousDiffy``, quirks
included, so that a verdict here is the one Jolt's own test would give.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pyjolt import MISSING, SpecError

from order_cancel.runtime.jolt import JoltMapping, MappingError, load_spec_file

# case id -> what pyjolt does differently from Java Jolt. Each is an xfail(strict=True).
KNOWN_DIFFERENCES: dict[str, str] = {}

EXPECTED_CASE_COUNT = 213

# modifier/testListOfFunction calls "=nonnull", which no Jolt has: like Java, pyjolt treats it as
# giving no value, and also warns.
pytestmark = pytest.mark.filterwarnings("ignore:Unknown modify function 'nonnull':UserWarning")

FIXTURES = Path(
    os.environ.get("JOLT_CONFORMANCE_DIR") or Path(__file__).resolve().parents[4] / "shared" / "conformance" / "jolt"
)

MODIFIER_OPERATIONS = {
    "OVERWRITR": "modify-overwrite-beta",
    "DEFAULTR": "modify-default-beta",
    "DEFINR": "modify-define-beta",
}
# ModifierTest.getFunctionTests: the mode each functions/ file runs in (all others: OVERWRITR).
FUNCTION_TEST_MODES = {"labelsLookupTest": "DEFAULTR"}
# ...and the ones compared with ordered Diffy instead of ArrayOrderObliviousDiffy.
ORDERED_FUNCTION_TESTS = {"squashNullsTests", "deleteDuplicatesTests"}
# ChainrTest.process_itCalls*: one-operation chains built from other kinds' fixtures.
SINGLE_OPERATION_CHAINS = {
    "shift": "shiftr/queryMappingXform",
    "default": "defaultr/firstSample",
    "remove": "removr/firstSample",
    "sort": "sortr/simple",
}
# Chain specs Chainr.fromSpec must reject (ChainrSpecFormatTest, ChainrSpecLoadingTest, ...).
REJECTED_CHAINS = [
    "specformat/bad_spec_ClassName",
    "specformat/bad_spec_MissingSpec",
    "specformat/bad_spec_NonTransformClass",
    "specformat/bad_spec_arrayClassName",
    "specformat/bad_spec_empty",
    "specloading/bad_spec_SpecTransform",
    "transforms/bad_transform_loadsExplodingTransform",
]
# Fixtures whose spec must fail to build (RemovrTest / CardinalityTransformTest negative tests).
SPEC_ERROR_FIXTURES = {"removr/negativeTestCases", "cardinality/failCardinalityType"}


# ---------------------------------------------------------------------------------------------
# Comparing results: Jolt's Diffy
# ---------------------------------------------------------------------------------------------


def _java_equals(a: Any, b: Any) -> bool:
    """``equals()`` on Jackson-parsed JSON: 1 (Integer), 1.0 (Double), true and "1" all differ.

    Integer vs Long is decided by magnitude, the same on both sides, so Python's int is enough.
    """
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_java_equals(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_java_equals, a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)  # Double.equals compares bits: -0.0 != 0.0
    return a == b


def _diff_empty(expected: Any, actual: Any, oblivious: bool) -> bool:
    """True when Diffy (``oblivious``: ArrayOrderObliviousDiffy) finds no difference."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return False
        # Diffy walks the expected keys only, reading a missing actual key as null: so an
        # expected null also matches a missing key. Matched keys are removed from both sides,
        # and the diff is empty when nothing is left on either.
        matched = {k for k, v in expected.items() if _diff_empty(v, actual.get(k), oblivious)}
        return len(matched) == len(expected) and actual.keys() <= matched
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return False
        if oblivious:
            return _oblivious_list_diff_empty(expected, actual)
        return len(expected) == len(actual) and all(
            _diff_empty(e, a, oblivious) for e, a in zip(expected, actual, strict=False)
        )
    if expected is None or actual is None:
        return expected is None and actual is None
    return _java_equals(expected, actual)


def _oblivious_list_diff_empty(expected: list[Any], actual: list[Any]) -> bool:
    # ArrayOrderObliviousDiffy.diffList: each expected element, in order, takes the first
    # unclaimed actual element that equals it or (two lists / two maps) diffs empty against it;
    # claimed elements are nulled out. It passes when only nulls are left, so null elements are
    # ignored on both sides.
    expected, actual = list(expected), list(actual)
    for i, exp in enumerate(expected):
        if exp is None:
            continue
        for j, act in enumerate(actual):
            if act is None:
                continue
            same_kind = (isinstance(exp, list) and isinstance(act, list)) or (
                isinstance(exp, dict) and isinstance(act, dict)
            )
            if _java_equals(act, exp) or (same_kind and _diff_empty(exp, act, oblivious=True)):
                expected[i] = actual[j] = None
                break
    return all(e is None for e in expected) and all(a is None for a in actual)


def _round_trip(value: Any) -> Any:
    # Diffy clones both sides through JSON text first; this also rejects non-JSON output.
    return json.loads(json.dumps(value))


def assert_diffy(expected: Any, actual: Any, *, oblivious: bool = False) -> None:
    if not _diff_empty(_round_trip(expected), _round_trip(actual), oblivious):
        pytest.fail(
            f"{'ArrayOrderOblivious' if oblivious else ''}Diffy found a difference\n"
            f"expected: {json.dumps(expected, sort_keys=True)}\n"
            f"  actual: {json.dumps(actual, sort_keys=True)}"
        )


def assert_key_order(actual: Any, expected: Any) -> None:
    """SortrTest.verifyOrder: every map's keys come in the same order as in ``expected``."""
    if isinstance(actual, dict) and isinstance(expected, dict):
        for actual_key, expected_key in zip(actual, expected, strict=False):
            assert actual_key == expected_key, f"out of order keys {actual_key!r} and {expected_key!r}"
            assert_key_order(actual[actual_key], expected[expected_key])
    elif isinstance(actual, list) and isinstance(expected, list):
        for actual_item, expected_item in zip(actual, expected, strict=False):
            assert_key_order(actual_item, expected_item)


# ---------------------------------------------------------------------------------------------
# Running one case
# ---------------------------------------------------------------------------------------------


def _fixture(relative: str) -> Any:
    return load_spec_file(FIXTURES / f"{relative}.json")


def _label_function(pick: Callable[[list[int]], int]) -> Callable[..., Any]:
    # ModifierTest's MinLabelComputation / MaxLabelComputation: the label under the smallest /
    # largest key that parses as an int.
    def compute(labels: Any = MISSING) -> Any:
        if not isinstance(labels, dict):
            return MISSING
        numbers = [int(k) for k in labels if re.fullmatch(r"[+-]?[0-9]+", k)]
        return labels.get(str(pick(numbers))) if numbers else None

    return compute


# ModifierTest registers these for all its cases; only labelsLookupTest calls them.
CUSTOM_FUNCTIONS = {
    "minLabelComputation": _label_function(min),
    "maxLabelComputation": _label_function(max),
}


def run_transform(operation: str, relative: str) -> None:
    unit = _fixture(relative)
    actual = JoltMapping({"operation": operation, "spec": unit["spec"]}).apply(unit["input"])
    assert_diffy(unit.get("expected"), actual)


def run_sort(spec: list[Any]) -> None:
    document = _fixture("sortr/simple/input")
    expected = _fixture("sortr/simple/output")
    actual = JoltMapping(spec).apply(document)
    assert_diffy(expected, actual)
    assert_key_order(actual, expected)


def run_defaultr_deep_copy() -> None:
    # DefaultrTest.deepCopyTest: changing one result must not change the defaults of the next.
    unit = _fixture("defaultr/__deepCopyTest")
    mapping = JoltMapping({"operation": "default", "spec": unit["spec"]})
    first = mapping.apply(copy.deepcopy(unit["input"]))
    first["array"].append("a")
    first["map"]["c"] = "c"
    assert_diffy(unit["expected"], mapping.apply(copy.deepcopy(unit["input"])))


def run_modifier(relative: str, mode: str, *, oblivious: bool) -> None:
    unit = _fixture(relative)
    mapping = JoltMapping({"operation": MODIFIER_OPERATIONS[mode], "spec": unit["spec"]}, functions=CUSTOM_FUNCTIONS)
    assert_diffy(unit[mode], mapping.apply(unit["input"], unit.get("context")), oblivious=oblivious)


def run_chain(relative: str, *, key_order: bool) -> None:
    unit = _fixture(relative)
    actual = JoltMapping(unit["spec"]).apply(unit["input"])
    assert_diffy(unit["expected"], actual)
    if key_order:
        assert_key_order(actual, unit["expected"])


def expect_spec_error(spec: Any) -> None:
    with pytest.raises(MappingError) as raised:
        JoltMapping(spec)
    # The adapter reports every failure as MappingError; make sure pyjolt itself refused the
    # spec (SpecException in Java), not that it broke in some other way.
    assert isinstance(raised.value.__cause__, SpecError), raised.value


def expect_rejected_chain(relative: str) -> None:
    # Chain-level problems (empty chain, unknown operation, missing spec) are found by the
    # adapter itself, so there is no pyjolt cause to check.
    with pytest.raises(MappingError, match=r"operation|empty"):
        JoltMapping(_fixture(f"chainr/{relative}"))


# ---------------------------------------------------------------------------------------------
# Collecting the cases
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[], None]


def _stems(folder: str) -> list[str]:
    return sorted(path.stem for path in (FIXTURES / folder).glob("*.json"))


def collect_cases() -> list[Case]:
    cases: list[Case] = []

    for folder, operation in [
        ("shiftr", "shift"),
        ("defaultr", "default"),
        ("removr", "remove"),
        ("cardinality", "cardinality"),
    ]:
        for stem in _stems(folder):
            relative = f"{folder}/{stem}"
            if relative in SPEC_ERROR_FIXTURES:
                entry = {"operation": operation, "spec": _fixture(relative)["spec"]}
                cases.append(Case(relative, partial(expect_spec_error, entry)))
            elif relative == "defaultr/__deepCopyTest":
                cases.append(Case(relative, run_defaultr_deep_copy))
            else:
                cases.append(Case(relative, partial(run_transform, operation, relative)))

    cases.append(Case("sortr/simple", partial(run_sort, [{"operation": "sort"}])))

    for folder in ("modifier", "modifier/functions"):
        for stem in _stems(folder):
            relative = f"{folder}/{stem}"
            if folder == "modifier":
                modes = [mode for mode in MODIFIER_OPERATIONS if mode in _fixture(relative)]
            else:
                modes = [FUNCTION_TEST_MODES.get(stem, "OVERWRITR")]
            oblivious = stem not in ORDERED_FUNCTION_TESTS
            for mode in modes:
                run = partial(run_modifier, relative, mode, oblivious=oblivious)
                cases.append(Case(f"{relative}/{mode}", run))

    invalid_specs = _fixture("modifier/validation/specThatShouldFail")
    for mode, operation in MODIFIER_OPERATIONS.items():
        for index, spec in enumerate(invalid_specs):
            run = partial(expect_spec_error, {"operation": operation, "spec": spec})
            cases.append(Case(f"modifier/validation/specThatShouldFail/{index}/{mode}", run))

    for stem in _stems("chainr/integration"):
        relative = f"chainr/integration/{stem}"
        cases.append(Case(relative, partial(run_chain, relative, key_order=stem == "firstSample")))
    for operation, relative in SINGLE_OPERATION_CHAINS.items():
        if operation == "sort":
            run = partial(run_sort, [{"operation": "sort"}])
        else:
            run = partial(run_transform, operation, relative)
        cases.append(Case(f"chainr/single-operation/{relative}", run))
    for relative in REJECTED_CHAINS:
        cases.append(Case(f"chainr/{relative}", partial(expect_rejected_chain, relative)))

    return cases


def _params() -> list[Any]:
    # A missing or changed fixture folder must fail the run, not quietly collect nothing (an
    # empty parametrize would only be reported as a skip).
    if not FIXTURES.is_dir():
        problem = (
            f"Jolt conformance fixtures not found at {FIXTURES}; they belong in "
            f"shared/conformance/jolt beside the repository clone, or set JOLT_CONFORMANCE_DIR"
        )
        return [pytest.param(problem, id="fixtures-missing")]
    cases = collect_cases()
    if len(cases) != EXPECTED_CASE_COUNT:
        problem = f"expected {EXPECTED_CASE_COUNT} runnable cases in {FIXTURES}, found {len(cases)}"
        return [pytest.param(problem, id="fixtures-changed")]
    unknown = KNOWN_DIFFERENCES.keys() - {case.id for case in cases}
    if unknown:
        return [pytest.param(f"KNOWN_DIFFERENCES names no case: {sorted(unknown)}", id="bad-known")]
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_DIFFERENCES[case.id])]
            if case.id in KNOWN_DIFFERENCES
            else [],
        )
        for case in cases
    ]


@pytest.mark.parametrize("case", _params())
def test_conformance(case: Case | str) -> None:
    if isinstance(case, str):
        pytest.fail(case)
    case.run()
