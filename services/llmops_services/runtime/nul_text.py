"""Finds NUL characters (U+0000) in a request's strings, which no request needs and PostgreSQL
cannot store in a text column: refused up front as INVALID_ARGUMENT naming the field, rather than
failing deep in a query (a model reference with a NUL in it would otherwise end as INTERNAL on
PostgreSQL, and as "not found" on SQLite)."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["fields_with_nul"]

_NUL = "\x00"


def fields_with_nul(message: Message, prefix: str = "") -> list[str]:
    """The paths (`model.name`, `messages[2].content`, `metadata["k"]`) of every string field,
    map key or map value of `message`, nested messages included, that holds a NUL."""
    found: list[str] = []
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            found += _in_map(field, value, path)
        elif field.is_repeated:
            for index, item in enumerate(value):
                found += _in_value(field, item, f"{path}[{index}]")
        else:
            found += _in_value(field, value, path)
    return found


def _in_value(field: FieldDescriptor, value: Any, path: str) -> list[str]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return [path] if _NUL in value else []
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return fields_with_nul(value, f"{path}.")
    return []


def _in_map(field: FieldDescriptor, entries: Any, path: str) -> list[str]:
    entry_type = field.message_type
    assert entry_type is not None  # a map field's entries are messages
    key_field = entry_type.fields_by_name["key"]
    value_field = entry_type.fields_by_name["value"]
    found: list[str] = []
    for key, value in entries.items():
        entry = f"{path}[{key!r}]"
        if key_field.type == FieldDescriptor.TYPE_STRING and _NUL in key:
            found.append(entry)
        found += _in_value(value_field, value, entry)
    return found
