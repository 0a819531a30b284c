"""The sub-clients over fake stubs: request shapes, pagination, uploads and error conversion."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from llmops import NotFound, request_id_scope
from llmops._pagination import apaginate, paginate
from llmops.async_client import AsyncDatasets, _AioTransport
from llmops.client import Datasets, Training, _Transport
from llmops.v1 import jobs_pb2, registry_service_pb2, training_service_pb2


class FakeNotFound(grpc.RpcError, grpc.Call):
    """A sync failure as a stub raises it, without rich details."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.NOT_FOUND

    def details(self) -> str:
        return "dataset 'nope' not found"

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


def _datasets(**methods: Recorder) -> Datasets:
    return Datasets(_Transport(timeout=7.0), cast(Any, FakeRegistry(**methods)))


def test_list_follows_page_tokens() -> None:
    pages = Recorder(
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
    datasets = _datasets(ListDatasets=pages)
    assert [d.id for d in datasets.list(kind="sft", page_size=2)] == ["ds-1", "ds-2", "ds-3"]
    assert [c["request"].page_token for c in pages.calls] == ["", "p2"]
    assert all(c["request"].kind == registry_service_pb2.DATASET_KIND_SFT for c in pages.calls)
    assert all(c["timeout"] == 7.0 for c in pages.calls)
    ids = [c["metadata"]["x-request-id"] for c in pages.calls]
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)


def test_list_checks_its_arguments_before_iterating() -> None:
    with pytest.raises(ValueError, match="unknown dataset kind"):
        _datasets().list(kind="chat")


def test_upload_sends_metadata_first_then_chunks(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    content = b'{"prompt": "a", "completion": "b"}\n' * 100
    path.write_bytes(content)
    answer = registry_service_pb2.UploadDatasetResponse(
        dataset=registry_service_pb2.Dataset(id="ds-9", name="rows")
    )
    upload = Recorder(answer, answer)
    datasets = _datasets(UploadDataset=upload)

    assert datasets.upload(path, "sft", name="rows", description="d", chunk_size=1000) == answer
    messages = upload.calls[0]["request"]
    assert messages[0].metadata == registry_service_pb2.DatasetUploadMetadata(
        name="rows", kind=registry_service_pb2.DATASET_KIND_SFT, description="d"
    )
    chunks = [m.chunk for m in messages[1:]]
    assert all(m.WhichOneof("payload") == "chunk" for m in messages[1:])
    assert b"".join(chunks) == content
    assert [len(c) for c in chunks] == [1000, 1000, 1000, 500]
    assert upload.calls[0]["timeout"] > 7.0

    datasets.upload(content, "eval", chunk_size=4096, timeout=3)
    messages = upload.calls[1]["request"]
    assert messages[0].metadata.kind == registry_service_pb2.DATASET_KIND_EVAL
    assert b"".join(m.chunk for m in messages[1:]) == content
    assert upload.calls[1]["timeout"] == 3


def test_upload_of_a_missing_file_fails_before_sending(tmp_path: Path) -> None:
    upload = Recorder()
    with pytest.raises(FileNotFoundError):
        _datasets(UploadDataset=upload).upload(tmp_path / "nope.jsonl", "sft")
    assert upload.calls == []


def test_rpc_errors_become_typed_errors_with_the_sent_request_id() -> None:
    get = Recorder(FakeNotFound())
    with request_id_scope("trace-me"), pytest.raises(NotFound) as info:
        _datasets(GetDataset=get).get("nope")
    assert info.value.request_id == "trace-me"
    assert get.calls[0]["metadata"]["x-request-id"] == "trace-me"
    assert str(info.value) == "NOT_FOUND: dataset 'nope' not found"


def test_training_create_and_wait() -> None:
    job = training_service_pb2.TrainingJob(id="ftjob-1", state=jobs_pb2.JOB_STATE_QUEUED)
    done = training_service_pb2.TrainingJob(id="ftjob-1", state=jobs_pb2.JOB_STATE_SUCCEEDED)
    create = Recorder(job)
    get = Recorder(job, done)
    training = Training(
        _Transport(timeout=5.0),
        cast(Any, FakeRegistry(CreateTrainingJob=create, GetTrainingJob=get)),
    )
    created = training.create(
        method="qlora",
        base_model="llmops-tiny",
        dataset="demo-sft",
        hyperparameters={"max_steps": 3, "lora_r": 8},
        idempotency_key="run-1",
    )
    assert created.id == "ftjob-1"
    request = create.calls[0]["request"]
    assert request.method == training_service_pb2.TRAINING_METHOD_QLORA
    assert request.hyperparameters.lora_r == 8
    assert training.wait("ftjob-1", timeout=5, poll_interval=0.01).state == done.state
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        training.create("sft", "m", "d", hyperparameters={"epochs": 1})
    assert len(create.calls) == 1


def test_pagination_stops_on_a_repeated_token() -> None:
    def fetch(token: str) -> tuple[list[int], str]:
        return [1], "same"

    with pytest.raises(RuntimeError, match="repeated page token"):
        list(paginate(fetch))


class AsyncRecorder(Recorder):
    """The aio flavour: calls return awaitables, request iterators may be async."""

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        async def answer() -> Any:
            items = request
            if isinstance(request, AsyncIterator):
                items = [item async for item in request]
            return Recorder.__call__(self, items, timeout, metadata)

        return answer()


@pytest.mark.asyncio
async def test_async_upload_and_list(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"x" * 2500)
    answer = registry_service_pb2.UploadDatasetResponse(already_existed=True)
    upload = AsyncRecorder(answer)
    pages = AsyncRecorder(
        registry_service_pb2.ListDatasetsResponse(
            datasets=[registry_service_pb2.Dataset(id="a")], next_page_token="n"
        ),
        registry_service_pb2.ListDatasetsResponse(datasets=[registry_service_pb2.Dataset(id="b")]),
    )
    datasets = AsyncDatasets(
        _AioTransport(timeout=4.0),
        cast(Any, FakeRegistry(UploadDataset=upload, ListDatasets=pages)),
    )
    assert (await datasets.upload(path, "sft", chunk_size=1000)).already_existed
    messages = upload.calls[0]["request"]
    assert messages[0].WhichOneof("payload") == "metadata"
    assert [len(m.chunk) for m in messages[1:]] == [1000, 1000, 500]
    assert [d.id async for d in datasets.list()] == ["a", "b"]


@pytest.mark.asyncio
async def test_apaginate() -> None:
    pages = {"": ([1, 2], "t"), "t": ([3], "")}

    async def fetch(token: str) -> tuple[list[int], str]:
        return pages[token]

    assert [i async for i in apaginate(fetch)] == [1, 2, 3]
