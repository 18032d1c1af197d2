"""Models in Airflow's task state store: JSON text when small, else zlib-compressed and
base64-encoded, in pieces when it is still large.

The index is written last and names a slot of its own, so that a task lost while saving leaves the
previous value whole.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any, TypeVar

from pydantic import BaseModel

# A state value is stored in pieces of at most this many characters of JSON text, so that Airflow's
# [state_store] max_value_storage_bytes (64 KB by default) is never exceeded once JSON-encoded again.
_STATE_PIECE = 30_000
_PACKED = "zlib+base64"
M = TypeVar("M", bound=BaseModel)


def save_state(state: Any, key: str, value: BaseModel) -> None:
    """`value` under `key` in the task state store `state`."""
    text = value.model_dump_json()
    if len(text) <= _STATE_PIECE:
        state.set(key, {"value": text})
        return
    # A batch's checkpoint is hundreds of plans' records, mostly repeated keys: compressed it needs
    # a fraction of the pieces, each a round trip to the API server.
    packed = base64.b64encode(zlib.compress(text.encode(), level=1)).decode("ascii")
    if len(packed) <= _STATE_PIECE:
        state.set(key, {"packed": packed, "encoding": _PACKED})
        return
    previous = state.get(key) or {}
    slot = 1 - previous.get("slot", 1)
    pieces = [packed[start : start + _STATE_PIECE] for start in range(0, len(packed), _STATE_PIECE)]
    for index, piece in enumerate(pieces):
        state.set(f"{key}.{slot}.{index}", piece)
    state.set(key, {"slot": slot, "pieces": len(pieces), "encoding": _PACKED})


def load_state(state: Any, key: str, model: type[M]) -> M | None:
    index = state.get(key)
    if not index:
        return None
    if "value" in index:
        return model.model_validate_json(index["value"])
    if "packed" in index:
        return model.model_validate_json(zlib.decompress(base64.b64decode(index["packed"])))
    joined = "".join(state.get(f"{key}.{index['slot']}.{n}") for n in range(index["pieces"]))
    if index.get("encoding") != _PACKED:  # saved by an earlier version, as plain JSON text
        return model.model_validate_json(joined)
    return model.model_validate_json(zlib.decompress(base64.b64decode(joined)))
