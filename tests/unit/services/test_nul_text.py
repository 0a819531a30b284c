"""Every place a string lives in a request is searched for NUL: fields, nested messages,
repeated fields, map keys and values, and the Struct of hyperparameters and metadata."""

from __future__ import annotations

from google.protobuf import struct_pb2

from llmops.v1 import inference_service_pb2 as ipb
from llmops.v1 import registry_service_pb2 as rpb
from llmops_services.runtime.nul_text import fields_with_nul


def test_clean_requests_have_none() -> None:
    model = rpb.Model(name="tiny", uri="/models/tiny", metrics={"loss": 1.0})
    assert fields_with_nul(rpb.CreateModelRequest(model=model)) == []


def test_nul_is_found_wherever_a_string_lives() -> None:
    model = rpb.Model(name="ti\x00ny", uri="/ok")
    model.origin.hyperparameters.update({"note": "a\x00", "list": ["b", "c\x00"]})
    request = rpb.CreateModelRequest(model=model, idempotency_key="\x00")
    assert sorted(fields_with_nul(request)) == [
        "idempotency_key",
        "model.name",
        "model.origin.hyperparameters.fields['list'].list_value.values[1].string_value",
        "model.origin.hyperparameters.fields['note'].string_value",
    ]
    chat = ipb.GenerateRequest(
        model="m",
        messages=[ipb.ChatMessage(role="user", content="x"), ipb.ChatMessage(content="\x00")],
    )
    assert fields_with_nul(chat) == ["messages[1].content"]
    keyed = struct_pb2.Struct()
    keyed.update({"k\x00": 1})
    assert fields_with_nul(keyed) == ["fields['k\\x00']"]
