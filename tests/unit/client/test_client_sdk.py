"""The sub-clients of both faces over fake stubs: request shapes, pagination, uploads, streams
and error conversion. Each test runs against the sync `Client`'s sub-clients and the async ones
(`face`), which are generated from the same source and must behave the same."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

import llmops
from llmops import NotFound, Unavailable, request_id_scope
from llmops import async_client as aio
from llmops import client as sync
from llmops._pagination import apaginate, paginate
from llmops.v1 import jobs_pb2, registry_service_pb2, training_service_pb2


class FakeRpcError(grpc.RpcError, grpc.Call):
    """A failure as a stub raises it, without rich details."""

    def __init__(
        self, code: grpc.StatusCode = grpc.StatusCode.NOT_FOUND, details: str = "not found"
    ) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


class Recorder:
    """A fake multi-callable: records each call and answers from a list."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        if isinstance(request, Iterator):
            request = list(request)
        self.calls.append({"request": request, "timeout": timeout, "metadata": dict(metadata)})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeRegistry:
    def __init__(self, **methods: Recorder) -> None:
        for name, method in methods.items():
            setattr(self, name, method)


class AsyncRecorder(Recorder):
    """The aio flavour: calls return awaitables, request iterators may be async."""

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        async def answer() -> Any:
            items = request
            if isinstance(request, AsyncIterator):
                items = [item async for item in request]
            return Recorder.__call__(self, items, timeout, metadata)

        return answer()


class FakeStream:
    """A server-streaming call of either face: yields `items`, then raises `error` if given."""

    def __init__(self, items: list[Any], error: Exception | None = None) -> None:
        self.items = items
        self.error = error
        self.cancelled = False

    def _next(self) -> Any:
        if self.items:
            return self.items.pop(0)
        if self.error is not None:
            raise self.error
        return None

    def __iter__(self) -> Iterator[Any]:
        while (item := self._next()) is not None:
            yield item

    async def __aiter__(self) -> AsyncIterator[Any]:
        for item in self:
            yield item

    def cancel(self) -> bool:
        self.cancelled = True
        return True


@dataclass(frozen=True)
class Face:
    """One face of the SDK: its module (`llmops.client` or `llmops.async_client`) and fakes."""

    module: Any
    recorder: type[Recorder]

    @property
    def is_async(self) -> bool:
        return self.module is aio

    def transport(self, timeout: float) -> Any:
        return (aio._AioTransport if self.is_async else sync._Transport)(timeout=timeout)

    def sub_client(self, name: str, timeout: float = 7.0, **methods: Recorder) -> Any:
        cls = getattr(self.module, f"Async{name}" if self.is_async else name)
        return cls(self.transport(timeout), cast(Any, FakeRegistry(**methods)))


@pytest.fixture(params=[sync, aio], ids=["sync", "async"])
def face(request: pytest.FixtureRequest) -> Face:
    return Face(request.param, AsyncRecorder if request.param is aio else Recorder)


async def settle(value: Any) -> Any:
    """What a call of either face comes to: awaited, or its items as a list."""
    if inspect.isawaitable(value):
        return await value
    if isinstance(value, AsyncIterator):
        return [item async for item in value]
    if isinstance(value, Iterator):
        return list(value)
    return value


async def test_list_follows_page_tokens(face: Face) -> None:
    pages = face.recorder(
        registry_service_pb2.ListDatasetsResponse(
            datasets=[
                registry_service_pb2.Dataset(id="ds-1"),
                registry_service_pb2.Dataset(id="ds-2"),
            ],
            next_page_token="p2",
        ),
        registry_service_pb2.ListDatasetsResponse(
            datasets=[registry_service_pb2.Dataset(id="ds-3")], next_page_token=""
        ),
    )
    datasets = face.sub_client("Datasets", ListDatasets=pages)
    listed = await settle(datasets.list(kind="sft", page_size=2))
    assert [d.id for d in listed] == ["ds-1", "ds-2", "ds-3"]
    assert [c["request"].page_token for c in pages.calls] == ["", "p2"]
    assert all(c["request"].kind == registry_service_pb2.DATASET_KIND_SFT for c in pages.calls)
    assert all(c["timeout"] == 7.0 for c in pages.calls)
    ids = [c["metadata"]["x-request-id"] for c in pages.calls]
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)


def test_list_checks_its_arguments_before_iterating(face: Face) -> None:
    with pytest.raises(ValueError, match="unknown dataset kind"):
        face.sub_client("Datasets").list(kind="chat")


async def test_upload_sends_metadata_first_then_chunks(face: Face, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    content = b'{"prompt": "a", "completion": "b"}\n' * 100
    path.write_bytes(content)
    answer = registry_service_pb2.UploadDatasetResponse(
        dataset=registry_service_pb2.Dataset(id="ds-9", name="rows")
    )
    upload = face.recorder(answer, answer)
    datasets = face.sub_client("Datasets", UploadDataset=upload)

    uploaded = await settle(
        datasets.upload(path, "sft", name="rows", description="d", chunk_size=1000)
    )
    assert uploaded == answer
    messages = upload.calls[0]["request"]
    assert messages[0].metadata == registry_service_pb2.DatasetUploadMetadata(
        name="rows", kind=registry_service_pb2.DATASET_KIND_SFT, description="d"
    )
    chunks = [m.chunk for m in messages[1:]]
    assert all(m.WhichOneof("payload") == "chunk" for m in messages[1:])
    assert b"".join(chunks) == content
    assert [len(c) for c in chunks] == [1000, 1000, 1000, 500]
    assert upload.calls[0]["timeout"] > 7.0

    await settle(datasets.upload(content, "eval", chunk_size=4096, timeout=3))
    messages = upload.calls[1]["request"]
    assert messages[0].metadata.kind == registry_service_pb2.DATASET_KIND_EVAL
    assert b"".join(m.chunk for m in messages[1:]) == content
    assert upload.calls[1]["timeout"] == 3


async def test_upload_of_a_missing_file_fails_before_sending(face: Face, tmp_path: Path) -> None:
    upload = face.recorder()
    with pytest.raises(FileNotFoundError):
        await settle(
            face.sub_client("Datasets", UploadDataset=upload).upload(tmp_path / "no", "sft")
        )
    assert upload.calls == []


async def test_rpc_errors_become_typed_errors_with_the_sent_request_id(face: Face) -> None:
    get = face.recorder(FakeRpcError(details="dataset 'nope' not found"))
    with request_id_scope("trace-me"), pytest.raises(NotFound) as info:
        await settle(face.sub_client("Datasets", GetDataset=get).get("nope"))
    assert info.value.request_id == "trace-me"
    assert get.calls[0]["metadata"]["x-request-id"] == "trace-me"
    assert str(info.value) == "NOT_FOUND: dataset 'nope' not found"


async def test_training_create_list_and_wait(face: Face) -> None:
    job = training_service_pb2.TrainingJob(id="ftjob-1", state=jobs_pb2.JOB_STATE_QUEUED)
    done = training_service_pb2.TrainingJob(id="ftjob-1", state=jobs_pb2.JOB_STATE_SUCCEEDED)
    create = face.recorder(job)
    get = face.recorder(job, done)
    pages = face.recorder(training_service_pb2.ListTrainingJobsResponse(training_jobs=[done]))
    training = face.sub_client(
        "Training", 5.0, CreateTrainingJob=create, GetTrainingJob=get, ListTrainingJobs=pages
    )
    created = await settle(
        training.create(
            method="qlora",
            base_model="llmops-tiny",
            dataset="demo-sft",
            hyperparameters={"max_steps": 3, "lora_r": 8},
            idempotency_key="run-1",
        )
    )
    handles = llmops.AsyncTrainingJobHandle if face.is_async else llmops.TrainingJobHandle
    assert isinstance(created, handles) and created.id == "ftjob-1"
    request = create.calls[0]["request"]
    assert request.method == training_service_pb2.TRAINING_METHOD_QLORA
    assert request.hyperparameters.lora_r == 8
    waited = await settle(training.wait("ftjob-1", timeout=5, poll_interval=0.01))
    assert waited.state == done.state
    listed = await settle(training.list())
    assert listed == [done] and all(isinstance(h, handles) for h in listed)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        await settle(training.create("sft", "m", "d", hyperparameters={"epochs": 1}))
    assert len(create.calls) == 1


async def test_stream_errors_are_typed_and_the_stream_is_cancelled(face: Face) -> None:
    """A failure mid-stream leaves as the same typed error on both faces, with the request id,
    after the messages that came before it; the call is cancelled either way."""
    events = [jobs_pb2.JobEvent(sequence=1), jobs_pb2.JobEvent(sequence=2)]
    broken = FakeStream(list(events), FakeRpcError(grpc.StatusCode.UNAVAILABLE, "cut"))
    watch = Recorder(broken)  # a stream is returned at once by both faces' stubs
    training = face.sub_client("Training", WatchTrainingJob=watch)
    seen: list[jobs_pb2.JobEvent] = []
    with request_id_scope("stream-1"), pytest.raises(Unavailable) as info:
        stream = training.watch("ftjob-1")
        if face.is_async:
            async for event in stream:
                seen.append(event)
        else:
            seen.extend(stream)
    assert seen == events and broken.cancelled
    assert info.value.request_id == "stream-1" and str(info.value) == "UNAVAILABLE: cut"
    assert watch.calls[0]["timeout"] is None  # a watch has no deadline

    failing = Recorder(FakeRpcError(grpc.StatusCode.NOT_FOUND, "no job"))  # fails to start
    with pytest.raises(NotFound):
        await settle(face.sub_client("Training", WatchTrainingJob=failing).watch("ftjob-2"))

    whole = FakeStream(list(events))
    first = face.sub_client("Training", WatchTrainingJob=Recorder(whole)).watch("ftjob-3")
    assert (await anext(first) if face.is_async else next(first)) == events[0]
    await first.aclose() if face.is_async else first.close()  # a caller that stops early
    assert whole.cancelled


def test_pagination_stops_on_a_repeated_token() -> None:
    def fetch(token: str) -> tuple[list[int], str]:
        return [1], "same"

    with pytest.raises(RuntimeError, match="repeated page token"):
        list(paginate(fetch))


async def test_apaginate() -> None:
    pages = {"": ([1, 2], "t"), "t": ([3], "")}

    async def fetch(token: str) -> tuple[list[int], str]:
        return pages[token]

    assert [i async for i in apaginate(fetch)] == [1, 2, 3]
