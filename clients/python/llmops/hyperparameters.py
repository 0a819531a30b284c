"""Plain dicts of hyperparameters to the contract's `Hyperparameters` message.

Checked locally so that a typo (`learnig_rate`) fails before a job is queued, with the
closest known name suggested, instead of as a server-side INVALID_ARGUMENT later.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from llmops.v1 import training_service_pb2

__all__ = ["AUTO", "hyperparameter_names", "hyperparameters_from_dict"]

AUTO = "auto"
"""A value that leaves the field unset, so the platform chooses it and records its choice."""

_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def hyperparameter_names() -> list[str]:
    """Every hyperparameter the contract knows, in field order."""
    return [f.name for f in training_service_pb2.Hyperparameters.DESCRIPTOR.fields]


def hyperparameters_from_dict(
    values: Mapping[str, object] | None,
) -> training_service_pb2.Hyperparameters:
    """Builds `Hyperparameters` from a dict such as `{"max_steps": 300, "lora_r": 16}`.

    `None` or `"auto"` leave a field unset (auto). Numbers may be given as strings ("1e-4"),
    as JSON allows; booleans as "true"/"false"; lists as "q_proj,v_proj". Raises ValueError
    naming the key for unknown names and wrong types.
    """
    message = training_service_pb2.Hyperparameters()
    if not values:
        return message
    known = hyperparameter_names()
    unknown = [key for key in values if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
            f"known: {', '.join(known)}"
        )
    fields = training_service_pb2.Hyperparameters.DESCRIPTOR.fields_by_name
    for key, value in values.items():
        if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
            continue
        value = _coerce_text(fields[key], value)
        try:
            json_format.ParseDict({key: value}, message, ignore_unknown_fields=False)
        except json_format.ParseError as err:
            reason = str(err).split(" at ", 1)[0]
            raise ValueError(f"hyperparameter {key}={value!r}: {reason}") from None
    return message


def _coerce_text(field: FieldDescriptor, value: object) -> object:
    """Reads the text forms a command line produces: `true`/`false`, `q_proj,v_proj`."""
    if not isinstance(value, str):
        return value
    if field.is_repeated:
        return [part.strip() for part in value.split(",") if part.strip()]
    if field.type == FieldDescriptor.TYPE_BOOL and value.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[value.strip().lower()]
    return value
