"""RegistryService dataset RPCs against a real server: uploads, refusals, listing, deletion."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from llmops.v1 import registry_service_pb2 as pb
from llmops.v1.registry_service_pb2_grpc import RegistryServiceStub
from llmops_services.db.tables import DatasetRow, JobRow
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import (
    Registry,
    add_job,
    db_of,
    expect_error,
    jsonl,
    set_job_state,
    upload,
    upload_requests,
)
from tests.stored import is_stored, local_copy, stored_keys

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SEEDED = {
    "demo-sft": pb.DATASET_KIND_SFT,
    "demo-preference": pb.DATASET_KIND_PREFERENCE,
    "demo-eval": pb.DATASET_KIND_EVAL,
    "demo-preference-test": pb.DATASET_KIND_PREFERENCE,
}

SFT_PAIRS = jsonl(
    [
        {
            "prompt": "Extract the name.\nText: Zoë Müller came.\nName:",
            "completion": " Zoë Müller",
            "task": "extraction",
        },
        {
            "prompt": "Topic of: the match ended 2-1.",
            "completion": " sports",
            "task": "classification",
        },
        {"prompt": "Topic of: 東京 ramen shops.", "completion": " food", "task": "classification"},
        {"prompt": "Say hello.", "completion": " Hello!"},
    ]
)
SFT_CHAT = jsonl(
    [
        {
            "messages": [
                {"role": "system", "content": "You extract names."},
                {"role": "user", "content": "Ana Silva moved to Lisbon."},
                {"role": "assistant", "content": "Ana Silva"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Topic: chess?"},
                {"role": "assistant", "content": "sports"},
            ],
            "task": "classification",
        },
    ]
)
PREFERENCE = jsonl(
    [
        {
            "prompt": "Summarize: rain all day.",
            "chosen": " It rained.",
            "rejected": " Sunny.",
            "task": "summarization",
        },
        {"prompt": "Name in: Bo Li won.", "chosen": " Bo Li", "rejected": " Li Bo"},
    ]
)
EVAL = jsonl(
    [
        {"prompt": "Name in: Eva Berg left.", "reference": " Eva Berg", "task": "extraction"},
        {"prompt": "Name in: Tom Hale came.", "reference": " Tom Hale", "task": "extraction"},
        {"prompt": "Topic: a new phone.", "reference": " technology", "task": "classification"},
    ]
)
# Valid both as sft (prompt, completion) and as eval (prompt, reference).
SFT_AND_EVAL = jsonl([{"prompt": "2+2?", "completion": " 4", "reference": " 4"}])


def spool_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "spool").glob("**/*"))


def dataset_count(server: ServerThread) -> int:
    return db_of(server).run_sync(lambda s: s.scalar(select(func.count(DatasetRow.id))) or 0)


# Uploads


@pytest.mark.parametrize(
    ("data", "kind", "rows", "tasks", "chunk_size"),
    [
        (SFT_PAIRS, pb.DATASET_KIND_SFT, 4, {"extraction": 1, "classification": 2}, 7),
        (SFT_CHAT, pb.DATASET_KIND_SFT, 2, {"classification": 1}, 50),
        (PREFERENCE, pb.DATASET_KIND_PREFERENCE, 2, {"summarization": 1}, 1),
        (EVAL, pb.DATASET_KIND_EVAL, 3, {"extraction": 2, "classification": 1}, 1 << 20),
    ],
    ids=["sft-pairs", "sft-chat", "preference", "eval"],
)
async def test_upload_in_chunks_records_stats(
    registry: Registry,
    data_dir: Path,
    data: bytes,
    kind: pb.DatasetKind.ValueType,
    rows: int,
    tasks: dict[str, int],
    chunk_size: int,
) -> None:
    response = await upload(
        registry, data, kind, name="my-data.v1", description="for tests", chunk_size=chunk_size
    )
    assert not response.already_existed
    dataset = response.dataset
    assert dataset.id.startswith("ds-")
    assert dataset.name == "my-data.v1"
    assert dataset.kind == kind
    assert dataset.description == "for tests"
    assert dataset.row_count == rows
    assert dataset.size_bytes == len(data)
    assert dataset.sha256 == hashlib.sha256(data).hexdigest()
    assert dataset.approx_tokens > 0
    assert dict(dataset.task_counts) == tasks
    assert dataset.create_time.seconds > 0
    assert local_copy(data_dir, dataset.uri).read_bytes() == data
    assert spool_files(data_dir) == []

    fetched = await registry.GetDataset(pb.GetDatasetRequest(dataset=dataset.id))
    assert fetched == dataset


async def test_upload_without_a_name_gets_a_default_name(registry: Registry) -> None:
    response = await upload(registry, EVAL, pb.DATASET_KIND_EVAL)
    sha = hashlib.sha256(EVAL).hexdigest()
    assert response.dataset.name == f"eval-{sha[:12]}"


async def test_upload_accepts_crlf_bom_and_blank_lines(registry: Registry) -> None:
    data = b"\xef\xbb\xbf" + EVAL.replace(b"\n", b"\r\n\r\n")
    response = await upload(registry, data, pb.DATASET_KIND_EVAL, chunk_size=5)
    assert response.dataset.row_count == 3
    assert response.dataset.size_bytes == len(data)


async def test_identical_upload_returns_the_existing_dataset(
    registry: Registry, server: ServerThread
) -> None:
    first = await upload(registry, SFT_PAIRS, pb.DATASET_KIND_SFT, name="pairs")
    before = dataset_count(server)
    again = await upload(registry, SFT_PAIRS, pb.DATASET_KIND_SFT, name="pairs", chunk_size=3)
    assert again.already_existed
    assert again.dataset == first.dataset
    # Another name for the same bytes and kind still finds the stored dataset.
    renamed = await upload(registry, SFT_PAIRS, pb.DATASET_KIND_SFT, name="pairs-copy")
    assert renamed.already_existed
    assert renamed.dataset.id == first.dataset.id
    assert renamed.dataset.name == "pairs"
    assert dataset_count(server) == before


async def test_the_same_bytes_as_another_kind_is_a_new_dataset(
    registry: Registry, data_dir: Path
) -> None:
    as_sft = await upload(registry, SFT_AND_EVAL, pb.DATASET_KIND_SFT)
    as_eval = await upload(registry, SFT_AND_EVAL, pb.DATASET_KIND_EVAL)
    assert not as_eval.already_existed
    assert as_eval.dataset.id != as_sft.dataset.id
    assert as_eval.dataset.sha256 == as_sft.dataset.sha256
    assert as_eval.dataset.name != as_sft.dataset.name
    assert as_eval.dataset.kind == pb.DATASET_KIND_EVAL
    # The bytes are stored once and outlive the deletion of one of the two datasets.
    assert as_eval.dataset.uri == as_sft.dataset.uri
    stored = as_sft.dataset.uri
    await registry.DeleteDataset(pb.DeleteDatasetRequest(dataset=as_sft.dataset.id))
    assert is_stored(data_dir, stored)
    fetched = await registry.GetDataset(pb.GetDatasetRequest(dataset=as_eval.dataset.id))
    assert fetched == as_eval.dataset
    await registry.DeleteDataset(pb.DeleteDatasetRequest(dataset=as_eval.dataset.id))
    assert not is_stored(data_dir, stored)


async def test_a_different_file_under_a_taken_name_already_exists(
    registry: Registry, server: ServerThread, data_dir: Path
) -> None:
    await upload(registry, EVAL, pb.DATASET_KIND_EVAL, name="taken")
    before = dataset_count(server)
    details = await expect_error(
        upload(registry, PREFERENCE, pb.DATASET_KIND_PREFERENCE, name="taken"),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert details.resource_info is not None
    assert details.resource_info.resource_type == "dataset"
    assert details.resource_info.resource_name == "taken"
    await expect_error(
        upload(registry, SFT_PAIRS, pb.DATASET_KIND_SFT, name="demo-sft"),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert dataset_count(server) == before
    # Nothing of the refused files is left behind: not in the spool, not in the store.
    assert spool_files(data_dir) == []
    for refused in (PREFERENCE, SFT_PAIRS):
        digest = hashlib.sha256(refused).hexdigest()
        assert [key for key in stored_keys(data_dir) if digest in key] == []


# Refusals of the rows


@pytest.mark.parametrize(
    ("data", "kind", "violations"),
    [
        pytest.param(
            jsonl([{"prompt": "a", "completion": "b"}]) + b'{"prompt": "a", "completion": \n',
            pb.DATASET_KIND_SFT,
            {"lines[2]": "invalid JSON"},
            id="bad-json",
        ),
        pytest.param(
            b'["prompt", "completion"]\n',
            pb.DATASET_KIND_SFT,
            {"lines[1]": "expected a JSON object, got array"},
            id="not-an-object",
        ),
        pytest.param(
            jsonl([{"prompt": 1, "completion": "b"}, {"prompt": "a", "completion": ["b"]}]),
            pb.DATASET_KIND_SFT,
            {
                "lines[1].prompt": "expected a string, got number",
                "lines[2].completion": "expected a string, got array",
            },
            id="wrong-types",
        ),
        pytest.param(
            jsonl([{"prompt": "a"}, {"completion": "b"}, {"text": "c"}]),
            pb.DATASET_KIND_SFT,
            {
                "lines[1].completion": "missing required field",
                "lines[2].prompt": "missing required field",
                "lines[3]": "needs prompt and completion, or messages",
            },
            id="sft-missing-fields",
        ),
        pytest.param(
            jsonl(
                [
                    {"messages": [{"role": "user", "content": "hi"}]},
                    {
                        "messages": [
                            {"role": "robot", "content": "x"},
                            {"role": "assistant", "content": "y"},
                        ]
                    },
                ]
            ),
            pb.DATASET_KIND_SFT,
            {
                "lines[1].messages[0].role": "the last message must be from the assistant",
                "lines[2].messages[0].role": "must be one of system, user, assistant",
            },
            id="sft-chat-roles",
        ),
        pytest.param(
            jsonl(
                [
                    {"prompt": "p", "chosen": "same", "rejected": "same"},
                    {"prompt": "p", "chosen": "c"},
                ]
            ),
            pb.DATASET_KIND_PREFERENCE,
            {
                "lines[1].rejected": "must differ from chosen",
                "lines[2].rejected": "missing required field",
            },
            id="preference-fields",
        ),
        pytest.param(
            jsonl(
                [{"prompt": "p", "reference": " "}, {"prompt": "p", "reference": "r", "task": 3}]
            ),
            pb.DATASET_KIND_EVAL,
            {
                "lines[1].reference": "must not be empty",
                "lines[2].task": "expected a string, got number",
            },
            id="eval-fields",
        ),
        pytest.param(
            jsonl([{"prompt": "a", "completion": "b"}])
            + b'{"prompt": "\xff\xfe", "completion": "b"}\n',
            pb.DATASET_KIND_SFT,
            {"lines[2]": "not valid UTF-8"},
            id="not-utf8",
        ),
        pytest.param(
            b'{"prompt": NaN, "completion": "b"}\n',
            pb.DATASET_KIND_SFT,
            {"lines[1]": "invalid JSON"},
            id="nan",
        ),
    ],
)
async def test_invalid_rows_are_refused_naming_each_line(
    registry: Registry,
    server: ServerThread,
    data_dir: Path,
    data: bytes,
    kind: pb.DatasetKind.ValueType,
    violations: dict[str, str],
) -> None:
    before = dataset_count(server)
    details = await expect_error(upload(registry, data, kind, name="bad", chunk_size=9), INVALID)
    assert list(details.violations) == list(violations)
    for field, expected in violations.items():
        assert expected in details.violations[field], (field, details.violations[field])
    assert details.error_info is not None
    assert details.error_info.reason == "DATASET_INVALID"
    assert dataset_count(server) == before
    assert spool_files(data_dir) == []
    await expect_error(
        registry.GetDataset(pb.GetDatasetRequest(dataset="bad")), grpc.StatusCode.NOT_FOUND
    )


@pytest.mark.parametrize("data", [b"", b"\n\n   \n\t\r\n"], ids=["empty", "blank-only"])
async def test_a_file_without_rows_is_refused(
    registry: Registry, server: ServerThread, data_dir: Path, data: bytes
) -> None:
    before = dataset_count(server)
    details = await expect_error(upload(registry, data, pb.DATASET_KIND_SFT), INVALID)
    assert len(details.fields) == 1
    assert "dataset has no rows" in details.violations[details.fields[0]]
    assert dataset_count(server) == before
    assert spool_files(data_dir) == []


# Refusals of the stream


async def test_the_first_message_must_be_metadata(
    registry: Registry, server: ServerThread, data_dir: Path
) -> None:
    before = dataset_count(server)
    details = await expect_error(registry.UploadDataset(upload_requests(None, [EVAL])), INVALID)
    assert details.fields == ["metadata"]
    details = await expect_error(registry.UploadDataset(upload_requests(None, [])), INVALID)
    assert details.fields == ["metadata"]
    assert dataset_count(server) == before
    assert spool_files(data_dir) == []


async def test_metadata_sent_twice_is_refused(
    registry: Registry, server: ServerThread, data_dir: Path
) -> None:
    metadata = pb.DatasetUploadMetadata(name="twice", kind=pb.DATASET_KIND_EVAL)

    async def requests() -> AsyncIterator[pb.UploadDatasetRequest]:
        yield pb.UploadDatasetRequest(metadata=metadata)
        yield pb.UploadDatasetRequest(chunk=EVAL[:10])
        yield pb.UploadDatasetRequest(metadata=metadata)
        yield pb.UploadDatasetRequest(chunk=EVAL[10:])

    before = dataset_count(server)
    details = await expect_error(registry.UploadDataset(requests()), INVALID)
    assert details.fields == ["metadata"]
    assert dataset_count(server) == before
    assert spool_files(data_dir) == []


async def test_metadata_without_a_kind_is_refused(registry: Registry) -> None:
    metadata = pb.DatasetUploadMetadata(name="no-kind")
    details = await expect_error(registry.UploadDataset(upload_requests(metadata, [EVAL])), INVALID)
    assert details.fields == ["metadata.kind"]


@pytest.mark.parametrize("name", ["has space", "-lead", "a@b", "a/b", "x" * 129, "ünï"])
async def test_an_invalid_name_is_refused(registry: Registry, data_dir: Path, name: str) -> None:
    details = await expect_error(upload(registry, EVAL, pb.DATASET_KIND_EVAL, name=name), INVALID)
    assert details.fields == ["metadata.name"]
    assert spool_files(data_dir) == []


# Limits, on a server of its own with small ones


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[ServerThread]:
    settings = make_settings(
        tmp_path / "limited",
        seed_sample_data=False,
        max_dataset_bytes=2000,
        max_dataset_rows=5,
        max_dataset_line_bytes=120,
        max_dataset_problems=3,
    )
    running = ServerThread(settings).start()
    yield running
    running.stop()


@pytest.fixture
async def limited_registry(limited: ServerThread) -> AsyncIterator[Registry]:
    async with grpc.aio.insecure_channel(limited.address) as channel:
        stub: Registry = RegistryServiceStub(channel)
        yield stub


def eval_rows(count: int) -> bytes:
    return jsonl({"prompt": f"q{i}", "reference": f"a{i}"} for i in range(count))


async def test_limits_allow_an_upload_within_them(
    limited_registry: Registry, limited: ServerThread
) -> None:
    response = await upload(limited_registry, eval_rows(5), pb.DATASET_KIND_EVAL)
    assert response.dataset.row_count == 5
    assert dataset_count(limited) == 1


async def test_an_upload_over_max_bytes_is_refused(
    limited_registry: Registry, limited: ServerThread
) -> None:
    # Refused at the fifth chunk; the client still has more to send when the refusal comes.
    data = b"\n" * 3000 + eval_rows(1)
    details = await expect_error(
        upload(limited_registry, data, pb.DATASET_KIND_EVAL, chunk_size=500), INVALID
    )
    assert details.fields == ["chunk"]
    assert "2000" in details.violations["chunk"]
    assert dataset_count(limited) == 0
    assert spool_files(limited.settings.data_dir) == []


async def test_an_upload_over_max_rows_is_refused(
    limited_registry: Registry, limited: ServerThread
) -> None:
    details = await expect_error(
        upload(limited_registry, eval_rows(8), pb.DATASET_KIND_EVAL), INVALID
    )
    assert details.fields == ["lines[6]"]
    assert "more than 5 rows" in details.violations["lines[6]"]
    assert dataset_count(limited) == 0
    assert spool_files(limited.settings.data_dir) == []


async def test_a_line_over_max_line_bytes_is_refused(
    limited_registry: Registry, limited: ServerThread
) -> None:
    data = eval_rows(1) + jsonl([{"prompt": "p" * 200, "reference": "r"}]) + eval_rows(1)
    details = await expect_error(upload(limited_registry, data, pb.DATASET_KIND_EVAL), INVALID)
    assert details.fields == ["lines[2]"]
    assert "longer than 120 bytes" in details.violations["lines[2]"]
    assert dataset_count(limited) == 0


async def test_problems_listed_are_capped(
    limited_registry: Registry, limited: ServerThread
) -> None:
    data = b"".join(json.dumps({"prompt": f"q{i}"}).encode() + b"\n" for i in range(5))
    details = await expect_error(upload(limited_registry, data, pb.DATASET_KIND_EVAL), INVALID)
    assert details.fields == ["lines[1].reference", "lines[2].reference", "lines[3].reference"]
    assert "more than 3" in details.message
    assert dataset_count(limited) == 0
    assert spool_files(limited.settings.data_dir) == []


# Get, list, delete


async def test_get_by_id_and_by_name(registry: Registry) -> None:
    created = (await upload(registry, PREFERENCE, pb.DATASET_KIND_PREFERENCE, name="prefs")).dataset
    assert await registry.GetDataset(pb.GetDatasetRequest(dataset=created.id)) == created
    assert await registry.GetDataset(pb.GetDatasetRequest(dataset="prefs")) == created
    seeded = await registry.GetDataset(pb.GetDatasetRequest(dataset="demo-sft"))
    assert seeded.kind == pb.DATASET_KIND_SFT
    assert seeded.row_count == 1200
    assert set(seeded.task_counts) == {"classification", "extraction", "summarization"}


async def test_get_unknown_or_empty(registry: Registry) -> None:
    for ref in ("no-such", "ds-000000000000"):
        details = await expect_error(
            registry.GetDataset(pb.GetDatasetRequest(dataset=ref)), grpc.StatusCode.NOT_FOUND
        )
        assert details.resource_info is not None
        assert details.resource_info.resource_type == "dataset"
        assert details.resource_info.resource_name == ref
    details = await expect_error(registry.GetDataset(pb.GetDatasetRequest()), INVALID)
    assert details.fields == ["dataset"]


async def test_list_newest_first_paged_and_filtered(registry: Registry) -> None:
    listed = await registry.ListDatasets(pb.ListDatasetsRequest())
    assert {d.name: d.kind for d in listed.datasets} == SEEDED
    assert listed.next_page_token == ""

    a = (await upload(registry, SFT_PAIRS, pb.DATASET_KIND_SFT, name="a")).dataset
    b = (await upload(registry, EVAL, pb.DATASET_KIND_EVAL, name="b")).dataset
    c = (await upload(registry, SFT_CHAT, pb.DATASET_KIND_SFT, name="c")).dataset

    everything = await registry.ListDatasets(pb.ListDatasetsRequest())
    names = [d.name for d in everything.datasets]
    assert names[:3] == ["c", "b", "a"]
    assert set(names[3:]) == set(SEEDED)

    paged: list[str] = []
    token = ""
    while True:
        page = await registry.ListDatasets(pb.ListDatasetsRequest(page_size=2, page_token=token))
        assert len(page.datasets) <= 2
        paged += [d.name for d in page.datasets]
        token = page.next_page_token
        if not token:
            break
    assert paged == names

    sft = await registry.ListDatasets(pb.ListDatasetsRequest(kind=pb.DATASET_KIND_SFT))
    assert [d.id for d in sft.datasets][:2] == [c.id, a.id]
    assert [d.name for d in sft.datasets] == ["c", "a", "demo-sft"]
    evals = await registry.ListDatasets(
        pb.ListDatasetsRequest(kind=pb.DATASET_KIND_EVAL, page_size=1)
    )
    assert [d.id for d in evals.datasets] == [b.id]
    second = await registry.ListDatasets(
        pb.ListDatasetsRequest(
            kind=pb.DATASET_KIND_EVAL, page_size=1, page_token=evals.next_page_token
        )
    )
    assert [d.name for d in second.datasets] == ["demo-eval"]
    assert second.next_page_token == ""

    details = await expect_error(
        registry.ListDatasets(
            pb.ListDatasetsRequest(kind=pb.DATASET_KIND_SFT, page_token=evals.next_page_token)
        ),
        INVALID,
    )
    assert details.fields == ["page_token"]


async def test_delete_then_get_is_not_found(registry: Registry, data_dir: Path) -> None:
    created = (await upload(registry, EVAL, pb.DATASET_KIND_EVAL, name="gone")).dataset
    assert is_stored(data_dir, created.uri)
    await registry.DeleteDataset(pb.DeleteDatasetRequest(dataset="gone"))
    for ref in (created.id, "gone"):
        await expect_error(
            registry.GetDataset(pb.GetDatasetRequest(dataset=ref)), grpc.StatusCode.NOT_FOUND
        )
    assert not is_stored(data_dir, created.uri)
    listed = await registry.ListDatasets(pb.ListDatasetsRequest())
    assert created.id not in {d.id for d in listed.datasets}
    details = await expect_error(
        registry.DeleteDataset(pb.DeleteDatasetRequest(dataset=created.id)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert details.resource_info is not None
    assert details.resource_info.resource_name == created.id
    details = await expect_error(registry.DeleteDataset(pb.DeleteDatasetRequest()), INVALID)
    assert details.fields == ["dataset"]
    # The same bytes can be uploaded again under the freed name.
    again = await upload(registry, EVAL, pb.DATASET_KIND_EVAL, name="gone")
    assert not again.already_existed
    assert again.dataset.id != created.id


async def test_delete_is_refused_while_a_job_uses_the_dataset(
    registry: Registry, server: ServerThread
) -> None:
    created = (await upload(registry, SFT_PAIRS, pb.DATASET_KIND_SFT, name="busy")).dataset
    validation = (await upload(registry, SFT_CHAT, pb.DATASET_KIND_SFT, name="busy-val")).dataset
    db = db_of(server)
    add_job(db, JobRow(id="ftjob-test", kind="training", state="RUNNING", dataset_id=created.id))
    add_job(
        db,
        JobRow(
            id="ftjob-val",
            kind="training",
            state="QUEUED",
            dataset_id="ds-000000000000",
            validation_dataset_id=validation.id,
        ),
    )

    details = await expect_error(
        registry.DeleteDataset(pb.DeleteDatasetRequest(dataset="busy")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details.subjects == ["jobs/ftjob-test"]
    assert details.precondition_failure is not None
    assert details.precondition_failure.violations[0].type == "IN_USE"
    details = await expect_error(
        registry.DeleteDataset(pb.DeleteDatasetRequest(dataset=validation.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details.subjects == ["jobs/ftjob-val"]
    assert await registry.GetDataset(pb.GetDatasetRequest(dataset="busy")) == created

    for state in ("PAUSED", "CANCELLING"):
        set_job_state(db, "ftjob-test", state)
        await expect_error(
            registry.DeleteDataset(pb.DeleteDatasetRequest(dataset="busy")),
            grpc.StatusCode.FAILED_PRECONDITION,
        )

    set_job_state(db, "ftjob-test", "SUCCEEDED")
    await registry.DeleteDataset(pb.DeleteDatasetRequest(dataset="busy"))
    await expect_error(
        registry.GetDataset(pb.GetDatasetRequest(dataset="busy")), grpc.StatusCode.NOT_FOUND
    )
    set_job_state(db, "ftjob-val", "FAILED")
    await registry.DeleteDataset(pb.DeleteDatasetRequest(dataset="busy-val"))
