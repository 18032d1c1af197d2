"""The Jolt Mapping Step adapter (order_cancel.mapping) and the example ERP mapping."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from pyjolt import Chainr, SpecError

from fakes.data import make_plan
from order_cancel.runtime.jolt import DEFAULT_MAX_ARRAY_INDEX, JoltMapping, MappingError, load_spec_file

ROOT = Path(__file__).resolve().parents[2]
ERP_CANCEL_MAPPING = ROOT / "include" / "flows" / "mappings" / "erp_cancel.json"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- loading specs -------------------------------------------------------------------------------


def test_chain_from_file(tmp_path):
    path = write(
        tmp_path / "chain.json",
        """
        [
          {"operation": "shift", "spec": {"order": {"number": "orderNumber"}}},
          {"operation": "default", "spec": {"reason": "Not specified"}}
        ]
        """,
    )
    mapping = JoltMapping(load_spec_file(path), source=str(path))
    assert mapping.apply({"order": {"number": "429453007"}}) == {
        "orderNumber": "429453007",
        "reason": "Not specified",
    }


def test_single_operation_file_is_a_one_step_chain(tmp_path):
    path = write(tmp_path / "one.json", '{"operation": "shift", "spec": {"pk": "cancellationId"}}')
    assert JoltMapping(load_spec_file(path), source=str(path)).apply({"pk": 7}) == {"cancellationId": 7}


def test_comments_outside_strings_are_ignored(tmp_path):
    path = write(
        tmp_path / "commented.json",
        """
        // the ERP wants a link back to Omnitron
        [{"operation": "default", /* no spec key yet */ "spec": {
            "link": "https://omnitron.example//orders/*?a=1"  // both kept: they are in a string
        }}]
        """,
    )
    assert load_spec_file(path) == [
        {"operation": "default", "spec": {"link": "https://omnitron.example//orders/*?a=1"}}
    ]


def test_inline_spec_from_flow_yaml():
    flow = yaml.safe_load(
        """
        mapping:
          - operation: shift
            spec:
              pk: cancellationId
              reason:
                subject: reason
          - operation: default
            spec:
              reason: Not specified
        """
    )
    mapping = JoltMapping(flow["mapping"])
    assert mapping.apply({"pk": 7, "reason": {"subject": "Vazgeçtim."}}) == {
        "cancellationId": 7,
        "reason": "Vazgeçtim.",
    }
    assert mapping.apply({"pk": 8, "reason": None}) == {"cancellationId": 8, "reason": "Not specified"}


def test_inline_single_operation():
    mapping = JoltMapping({"operation": "modify-overwrite-beta", "spec": {"currency": "=toUpper"}})
    assert mapping.apply({"currency": "try"}) == {"currency": "TRY"}


def test_bad_json_names_the_file_and_position(tmp_path):
    path = write(tmp_path / "broken.json", '[\n  {"operation": "shift",}\n]\n')
    with pytest.raises(MappingError, match=rf"{re.escape(str(path))}: invalid JSON at line 2 column 25"):
        load_spec_file(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(MappingError, match=r"nope\.json: cannot read it"):
        load_spec_file(tmp_path / "nope.json")


def test_file_must_hold_an_array_or_object(tmp_path):
    path = write(tmp_path / "number.json", "42")
    expected = rf"{re.escape(str(path))}: expected a JSON array or object, got int"
    with pytest.raises(MappingError, match=expected):
        load_spec_file(path)


# --- validation at construction --------------------------------------------------------------------


def test_unknown_operation_names_it_with_its_index_and_source():
    spec = [
        {"operation": "shift", "spec": {"pk": "cancellationId"}},
        {"operation": "shfit", "spec": {"order": "order"}},
    ]
    with pytest.raises(MappingError) as raised:
        JoltMapping(spec, source="flows/acme.yaml: mapping")
    message = str(raised.value)
    assert message.startswith("Jolt spec flows/acme.yaml: mapping: operation 1: unknown operation 'shfit'")
    assert "modify-overwrite-beta" in message  # lists the valid names


def test_invalid_operation_spec_names_index_operation_and_pyjolt_reason():
    spec = [
        {"operation": "default", "spec": {"reason": "Not specified"}},
        {"operation": "shift", "spec": {"pk": 42}},
    ]
    with pytest.raises(MappingError) as raised:
        JoltMapping(spec)
    assert str(raised.value).startswith(
        "Jolt spec <inline>: operation 1 ('shift'): invalid spec: Invalid Shiftr spec RHS."
    )
    assert isinstance(raised.value.__cause__, SpecError)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ([], "the chain is empty"),
        (None, "expected a list of operations or one operation object, got NoneType"),
        ("shift", "expected a list of operations or one operation object, got str"),
        ({"pk": "cancellationId"}, 'it has no "operation" key'),
        ({"operation": None}, "operation 0: unknown operation None"),
        ({"operation": ["shift"]}, r"operation 0: unknown operation \['shift'\]"),
        ([{"operation": "shift"}], r"operation 0 \('shift'\): missing \"spec\""),
        ([{"operation": "shift", "spec": {"a": "b"}}, "default"], "operation 1: expected an object, got str"),
        ({"operation": "default", "spec": {"tuna*": "marlin"}}, "invalid spec"),
    ],
)
def test_malformed_chains_are_rejected(spec, problem):
    with pytest.raises(MappingError, match=problem):
        JoltMapping(spec)


def test_sort_needs_no_spec():
    assert list(JoltMapping([{"operation": "sort"}]).apply({"b": 1, "a": 2})) == ["a", "b"]


# --- applying --------------------------------------------------------------------------------------


def test_transform_failure_is_a_mapping_error_naming_the_source():
    # A mapping written for one plan, given a page of plans.
    mapping = JoltMapping({"operation": "default", "spec": {"reason": "Not specified"}}, source="erp.json")
    with pytest.raises(MappingError, match=r"^Jolt spec erp\.json: transform failed: .*top level Json Array"):
        mapping.apply([make_plan(1), make_plan(2)])


def test_context_values_are_readable_with_caret():
    mapping = JoltMapping({"operation": "modify-default-beta", "spec": {"company": "^erp.company"}})
    assert mapping.apply({}, {"erp": {"company": "ACME-TR"}}) == {"company": "ACME-TR"}


def test_one_mapping_serves_many_documents_without_leaking_state():
    # Jolt's ChainrTest.testReuseChainr: "[#2]" counters must restart for every document.
    mapping = JoltMapping({"operation": "shift", "spec": {"attributeMap": {"*": {"$": "attributes[#2]"}}}})
    document = {"attributeMap": {"attribute1": 1, "attribute2": 2, "attribute3": 3}}
    for _ in range(2):
        assert mapping.apply(document) == {"attributes": ["attribute1", "attribute2", "attribute3"]}
    assert document == {"attributeMap": {"attribute1": 1, "attribute2": 2, "attribute3": 3}}


# --- the array index guard -------------------------------------------------------------------------

# Output paths whose array index comes from the data, and a plan fragment that sets it to `index`.
INDEX_ATTACKS = {
    "input key via [&1]": (
        {"order": {"extra_field": {"*": {"$": "flags[&1]"}}}},
        lambda index: {"order": {"extra_field": {index: True}}},
    ),
    "part of a key via [&(0,1)]": (
        {"order": {"extra_field": {"line_*": "lines[&(0,1)]"}}},
        lambda index: {"order": {"extra_field": {f"line_{index}": "SKU-700"}}},
    ),
    "input value via [@(...)]": (
        {
            "cancellationplanorderitem_set": {
                "*": {"order_item": {"product": {"sku": "lines[@(2,extra_field.erp_line)].sku"}}}
            }
        },
        lambda index: {
            "cancellationplanorderitem_set": [
                {"order_item": {"extra_field": {"erp_line": index}, "product": {"sku": "SKU-700"}}}
            ]
        },
    ),
    "signed index slips past a digits-only check": (
        {"order": {"extra_field": {"*": {"$": "flags[&1]"}}}},
        lambda index: {"order": {"extra_field": {f"+{index}": True}}},
    ),
}


@pytest.mark.parametrize("attack", INDEX_ATTACKS)
def test_index_from_data_above_the_limit_is_refused(attack):
    # 50_000 is cheap even if the guard were gone (the test would then fail, not hang).
    spec, plan = INDEX_ATTACKS[attack]
    mapping = JoltMapping({"operation": "shift", "spec": spec}, source="erp.json")
    with pytest.raises(MappingError, match=r"output array index 50000 exceeds max_array_index=10000"):
        mapping.apply(plan("50000"))


@pytest.mark.parametrize("attack", INDEX_ATTACKS)
def test_index_at_the_limit_is_written(attack):
    spec, plan = INDEX_ATTACKS[attack]
    result = JoltMapping({"operation": "shift", "spec": spec}, max_array_index=3).apply(plan("3"))
    (written,) = result.values()
    assert len(written) == 4 and written[:3] == [None, None, None]


def test_guard_only_acts_inside_apply():
    spec, plan = INDEX_ATTACKS["input key via [&1]"]
    index = DEFAULT_MAX_ARRAY_INDEX + 1
    # Plain pyjolt in the same process keeps its own behaviour.
    result = Chainr.from_spec([{"operation": "shift", "spec": spec}]).apply(plan(str(index)))
    assert len(result["flags"]) == index + 1


def test_realistic_attack_is_stopped_within_a_memory_limit():
    """A plan whose order item names ERP line 999999999: without the guard pyjolt pads a list to
    10^9 elements (~8 GB). Run in a child process capped at 1 GiB so a regression fails, not OOMs."""
    spec = [
        {
            "operation": "shift",
            "spec": {
                "order": {"number": "orderNumber"},
                "cancellationplanorderitem_set": {
                    "*": {
                        "order_item": {
                            "product": {"sku": "lines[@(2,extra_field.erp_line)].sku"},
                            "quantity": "lines[@(1,extra_field.erp_line)].quantity",
                        }
                    }
                },
            },
        }
    ]
    plan = make_plan(7, items=1)
    plan["cancellationplanorderitem_set"][0]["order_item"]["extra_field"] = {"erp_line": 999999999}
    child = textwrap.dedent(
        """
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from order_cancel.runtime.jolt import JoltMapping, MappingError
        spec, plan = json.load(sys.stdin)
        try:
            JoltMapping(spec, source="erp.json").apply(plan)
        except MappingError as exc:
            print(exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    result = subprocess.run(
        [sys.executable, "-c", child],
        input=json.dumps([spec, plan]),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("Jolt spec erp.json: output array index 999999999 exceeds max_array_index=10000")


# --- the example ERP mapping -----------------------------------------------------------------------


def test_example_erp_mapping_turns_a_plan_into_the_erp_body():
    mapping = JoltMapping(load_spec_file(ERP_CANCEL_MAPPING), source=str(ERP_CANCEL_MAPPING))
    plan = make_plan(7, items=2)
    assert mapping.apply(plan) == {
        "cancellationId": 7,
        "orderNumber": "429453007",
        "channelId": 1,
        "type": "cancel",
        "refundAmount": "1499.88",
        "shippingRefundAmount": "0.00",
        "currency": "TRY",
        "reason": "Vazgeçtim.",
        "requestedAt": "2023-02-07T08:06:59.000000Z",
        "lines": [
            {
                "planItemId": 701,
                "orderItemId": 100701,
                "sku": "SKU-700",
                "description": "Erkek Pamuklu Tişört",
                "quantity": 1,
                "unitPrice": "199.90",
            },
            {
                "planItemId": 702,
                "orderItemId": 100702,
                "sku": "SKU-701",
                "description": "Kadın Kot Pantolon",
                "quantity": 2,
                "unitPrice": "649.99",
            },
        ],
    }


@pytest.mark.parametrize("reason", [None, "missing", {"subject": None}])
def test_example_erp_mapping_defaults_a_missing_reason(reason):
    mapping = JoltMapping(load_spec_file(ERP_CANCEL_MAPPING), source=str(ERP_CANCEL_MAPPING))
    plan = make_plan(8, items=1)
    if reason == "missing":
        del plan["reason"]
    else:
        plan["reason"] = reason
    body = mapping.apply(plan)
    assert body["reason"] == "Not specified"
    assert [line["sku"] for line in body["lines"]] == ["SKU-701"]
