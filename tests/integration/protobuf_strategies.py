"""Hypothesis strategies for any protobuf message, built from its descriptor, for fuzzing every
RPC: strings mix generated text with hostile values (path traversal, absolute paths, store URIs
that climb out, NUL, huge), integers reach their type's limits, enums take values no one
declared, floats include NaN and infinities, nesting is bounded. No library generates messages
from descriptors for current protobuf (hypothesis-protobuf is unmaintained and predates upb), so
this is ours; what it generates is plain protobuf, serialized as any client would send it."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

HOSTILE_STRINGS = [
    "",
    " ",
    "../../../../etc/passwd",
    "/etc/passwd",
    "..",
    "store://../../outside",
    "store:///etc",
    "file:///etc/passwd",
    "a/../../b",
    "name@production",
    "name@",
    "@alias",
    "llmops-tiny",
    "demo-sft",
    "summarization",
    "\x00",
    "nul\x00inside",
    "\u202e\u200b\ufeff",
    "x" * 70_000,
    "😀" * 300,
    "{{ 7*7 }}{% for x in range(10**9) %}",
    "-1",
    "9" * 40,
    "NaN",
]
INT_LIMITS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
MAX_DEPTH = 3
MAX_ITEMS = 3


def text() -> st.SearchStrategy[str]:
    generated = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
    return st.one_of(generated, st.sampled_from(HOSTILE_STRINGS))


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [low, high, 0, -1, 1, 2, 7, 64, 4096, 10**9]
    return st.one_of(
        st.sampled_from([v for v in edges if low <= v <= high]), st.integers(low, high)
    )


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """Values for one non-message field."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return text()
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        declared = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(declared), st.integers(-3, 1000))
    low, high = INT_LIMITS[kind]
    return integers(low, high)


@st.composite
def message(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    """A message of `descriptor`'s type with some of its fields set to generated values."""
    made = GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _fill_map(draw, made, field, depth)
        elif field.message_type is not None:
            if depth >= MAX_DEPTH:
                continue
            values = [draw(message(field.message_type, depth + 1))]
            if field.is_repeated:
                values += draw(st.lists(message(field.message_type, depth + 1), max_size=2))
                for value in values:
                    getattr(made, field.name).add().CopyFrom(value)
            else:
                getattr(made, field.name).CopyFrom(values[0])
        elif field.is_repeated:
            getattr(made, field.name).extend(draw(st.lists(scalar(field), max_size=MAX_ITEMS)))
        else:
            setattr(made, field.name, draw(scalar(field)))
    return made


def _fill_map(draw: st.DrawFn, made: Message, field: FieldDescriptor, depth: int) -> None:
    entry = field.message_type
    assert entry is not None
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    target = getattr(made, field.name)
    for _ in range(draw(st.integers(0, MAX_ITEMS))):
        key = draw(scalar(key_field))
        if value_field.message_type is not None:
            if depth < MAX_DEPTH:
                target[key].CopyFrom(draw(message(value_field.message_type, depth + 1)))
        else:
            target[key] = draw(scalar(value_field))
