"""The vLLM engine's own rules, without a server: which server a base goes to, whether a
server's base is the one asked for, how vLLM's stream lines become token events, and what a
caller gets for each kind of vLLM answer. (Against a real vLLM server:
tests/integration/test_engine_conformance.py under `make test-vllm`.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from llmops_services.errors import FailedPrecondition
from llmops_services.inference.engine import ModelFiles, TokenEvent
from llmops_services.inference.engines import EngineRouter, make_engine
from llmops_services.inference.hf_engine import HFEngine
from llmops_services.inference.vllm_engine import (
    VllmEngine,
    _events,
    _refusal,
    _Refused,
    _ServedBase,
    _Server,
    server_url,
)
from llmops_services.settings import Settings


def settings_of(**values: Any) -> Settings:
    """Settings from keyword values (mypy sees only the environment-filled constructor)."""
    return Settings(**values)


def files(tmp_path: Path, name: str = "tiny", base_id: str = "mdl-1") -> ModelFiles:
    return ModelFiles(base_id=base_id, base_dir=tmp_path / name, base_name=name)


def test_a_base_named_in_vllm_servers_goes_to_its_server_whatever_the_engine(
    tmp_path: Path,
) -> None:
    settings = settings_of(vllm_servers={"tiny": "http://a:1", "mdl-9": "http://b:2"})
    assert server_url(settings, files(tmp_path)) == "http://a:1"
    assert server_url(settings, files(tmp_path, "other", "mdl-9")) == "http://b:2"  # by id
    assert server_url(settings, files(tmp_path, "other", "mdl-2")) == ""  # the HF engine's
    every = settings_of(inference_engine="vllm", vllm_url="http://c:3", vllm_servers={"tiny": "x"})
    assert server_url(every, files(tmp_path, "other", "mdl-2")) == "http://c:3"
    assert server_url(every, files(tmp_path)) == "x"


def test_the_engine_is_made_from_the_settings() -> None:
    assert isinstance(make_engine(settings_of()), HFEngine)
    routed = make_engine(settings_of(vllm_servers={"tiny": "http://a:1"}))
    assert isinstance(routed, EngineRouter) and routed.name == "hf"
    everything = make_engine(settings_of(inference_engine="vllm", vllm_url="http://a:1"))
    assert isinstance(everything, EngineRouter) and everything.name == "vllm"
    with pytest.raises(ValueError, match="LLMOPS_VLLM_URL"):
        settings_of(inference_engine="vllm")


def test_a_servers_base_matches_by_registry_name_id_or_directory(tmp_path: Path) -> None:
    (tmp_path / "tiny").mkdir()
    by_name = _ServedBase(name="tiny", root="/elsewhere", max_model_len=512)
    assert by_name.matches(files(tmp_path))
    assert _ServedBase(name="mdl-1", root="", max_model_len=512).matches(files(tmp_path, "x"))
    by_dir = _ServedBase(name=str(tmp_path / "tiny"), root=str(tmp_path / "tiny"), max_model_len=1)
    assert by_dir.matches(files(tmp_path, "tiny"))
    other = _ServedBase(name="llama", root=str(tmp_path / "llama"), max_model_len=512)
    assert not other.matches(files(tmp_path))


def test_stream_lines_become_token_events_with_the_finish_on_the_last() -> None:
    def line(token_ids: list[int], finish: str | None) -> str:
        choice = {"index": 0, "text": "x", "token_ids": token_ids, "finish_reason": finish}
        return "data: " + json.dumps({"choices": [choice]})

    assert _events(line([5, 6], None)) == [TokenEvent(5), TokenEvent(6)]
    assert _events(line([2], "stop")) == [TokenEvent(2), TokenEvent(None, "stop")]
    assert _events(line([], "length")) == [TokenEvent(None, "length")]
    assert _events(line([7], "abort")) == [TokenEvent(7), TokenEvent(None, "cancelled")]
    assert _events("data: [DONE]") is None
    assert _events("") is None
    assert _events(": keep-alive") is None


async def test_vllm_answers_map_to_the_codes_a_caller_expects() -> None:
    settings = settings_of(inference_engine="vllm", vllm_url="http://v:1")
    async with aiohttp.ClientSession() as client:
        server = _Server("http://v:1/", client, settings)
    assert server.url == "http://v:1"
    body = json.dumps({"error": {"message": "max_tokens too large", "code": 400}})
    refused = _refusal(400, body)
    assert (refused.status, refused.message) == (400, "max_tokens too large")
    assert _refusal(502, "bad gateway").message == "bad gateway"
    codes = {
        status: server._error(_Refused(status, "m")).code for status in (400, 404, 429, 500, 503)
    }
    assert codes == {
        400: grpc.StatusCode.FAILED_PRECONDITION,
        404: grpc.StatusCode.FAILED_PRECONDITION,
        429: grpc.StatusCode.RESOURCE_EXHAUSTED,
        500: grpc.StatusCode.UNAVAILABLE,
        503: grpc.StatusCode.UNAVAILABLE,
    }


async def test_a_base_with_no_vllm_server_is_refused_by_the_vllm_engine(tmp_path: Path) -> None:
    engine = VllmEngine(settings_of())
    with pytest.raises(FailedPrecondition, match="no vLLM server"):
        await engine.tokenizer(files(tmp_path))
    assert engine.describe() == []
    await engine.close()
