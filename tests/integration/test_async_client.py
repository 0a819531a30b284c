"""`AsyncClient` (and, where the CLI does not already drive it, the sync `Client`) against a real
server: every Registry call with its results and typed errors, and the Training, Eval and
Inference calls, which this server answers UNIMPLEMENTED, after the SDK's own local checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

import llmops
from llmops.v1 import eval_service_pb2, registry_service_pb2, training_service_pb2
from tests.conftest import ServerThread
from tests.integration.helpers import jsonl, make_adapter_dir, make_base_model_dir

T = TypeVar("T")

SFT = jsonl(
    [
        {"prompt": "2+2=", "completion": " 4"},
        {"prompt": "3+3=", "completion": " 6"},
        {"prompt": "4+4=", "completion": " 8"},
    ]
)
EVAL = jsonl(
    [{"prompt": "Name in: Ida Holm left.", "reference": " Ida Holm", "task": "extraction"}]
)
JOB = "ftjob-000000000000"
RUN = "eval-000000000000"


async def collect(items: AsyncIterator[T]) -> list[T]:
    return [item async for item in items]


def local_error(pattern: str) -> pytest.RaisesExc[ValueError]:
    """`pytest.raises(ValueError)` for a check the SDK makes before anything is sent."""
    return pytest.raises(ValueError, match=pattern)


# Templates


async def test_templates(server: ServerThread) -> None:
    async with llmops.AsyncClient(server.address, timeout=10) as client:
        assert client.address == server.address and client.timeout == 10
        assert repr(client) == f"AsyncClient(address={server.address!r})"
        assert isinstance(client.channel, grpc.aio.Channel)

        ids = [t.template_id for t in await collect(client.templates.list(page_size=1))]
        assert ids == ["classification", "extraction", "summarization"]
        latest = await client.templates.get("extraction")
        assert (latest.version, latest.task) == (1, "extraction")
        assert "{text}" in latest.template

        first = await client.templates.create("qa", "Q: {text}\nA:", "first", task="qa")
        second = await client.templates.create("qa", "Question: {text}\nAnswer:")
        assert (first.version, second.version) == (1, 2)
        assert (await client.templates.get("qa")).template == "Question: {text}\nAnswer:"
        assert (await client.templates.get("qa", version=1)).description == "first"
        versions = await collect(client.templates.versions("qa", page_size=1))
        assert [(v.version, v.template) for v in versions] == [
            (2, "Question: {text}\nAnswer:"),
            (1, "Q: {text}\nA:"),
        ]

        valid = await client.templates.validate("Sum up: {text}")
        assert valid.valid and list(valid.placeholders) == ["text"] and not valid.problems
        invalid = await client.templates.validate("no placeholder")
        assert not invalid.valid and invalid.problems
        assert [t.template_id async for t in client.templates.list()] == [
            "classification",
            "extraction",
            "qa",
            "summarization",
        ]  # validating stored nothing

        with pytest.raises(llmops.InvalidArgument) as refused:
            await client.templates.create("qa", "no placeholder")
        assert [v.field for v in refused.value.field_violations] == ["prompt_template.template"]
        with pytest.raises(llmops.NotFound) as missing:
            await client.templates.get("qa", version=7)
        assert missing.value.resource_info is not None
        assert missing.value.resource_info.type == "prompt_template"
        with pytest.raises(llmops.NotFound):
            await collect(client.templates.versions("nope"))
        with local_error("template_id is required"):
            await client.templates.get("")
        with local_error("template_id is required"):
            client.templates.versions(" ")
        with local_error("template_id is required"):
            await client.templates.create("", "{text}")


# Datasets


async def test_datasets(server: ServerThread, tmp_path: Path) -> None:
    path = tmp_path / "math.jsonl"
    path.write_bytes(SFT)
    async with llmops.AsyncClient(server.address, timeout=10) as client:
        from_path = await client.datasets.upload(path, "sft", "math", "sums", chunk_size=5)
        assert not from_path.already_existed
        dataset = from_path.dataset
        assert (dataset.name, dataset.kind, dataset.description) == (
            "math",
            registry_service_pb2.DATASET_KIND_SFT,
            "sums",
        )
        assert (dataset.row_count, dataset.size_bytes) == (3, len(SFT))
        from_bytes = await client.datasets.upload(SFT, "sft", chunk_size=7)
        assert from_bytes.already_existed and from_bytes.dataset.id == dataset.id
        as_eval = await client.datasets.upload(EVAL, kind="eval", name="names", chunk_size=3)
        assert dict(as_eval.dataset.task_counts) == {"extraction": 1}

        assert (await client.datasets.get("math")).id == dataset.id
        assert (await client.datasets.get(dataset.id)).sha256 == dataset.sha256
        sft = await collect(client.datasets.list(kind="sft"))
        assert [d.name for d in sft] == ["math", "demo-sft"]
        every = await collect(client.datasets.list(page_size=2))
        assert [d.name for d in every][:2] == ["names", "math"]
        assert {d.name for d in every} == {
            "names",
            "math",
            "demo-sft",
            "demo-preference",
            "demo-eval",
            "demo-preference-test",
        }

        page = await client.datasets.list_page(page_size=1, kind="eval")
        assert [d.name for d in page.datasets] == ["names"] and page.next_page_token
        rest = await client.datasets.list_page(
            page_size=5, page_token=page.next_page_token, kind="eval"
        )
        assert [d.name for d in rest.datasets] == ["demo-eval"] and not rest.next_page_token

        with pytest.raises(llmops.InvalidArgument) as refused:
            await client.datasets.upload(b'{"prompt": 1}\nnope\n', "sft", "bad", chunk_size=4)
        fields = [v.field for v in refused.value.field_violations]
        assert "lines[1].prompt" in fields and "lines[2]" in fields

        await client.datasets.delete("math")
        with pytest.raises(llmops.NotFound) as missing:
            await client.datasets.get("math")
        assert missing.value.resource_info is not None
        assert (missing.value.resource_info.type, missing.value.resource_info.name) == (
            "dataset",
            "math",
        )
        with pytest.raises(llmops.NotFound):
            await client.datasets.delete(dataset.id)

        # Checked before anything is sent.
        with local_error("unknown dataset kind 'tabular'; choose one of: sft, preference, eval"):
            await client.datasets.upload(SFT, "tabular")
        with local_error("chunk_size must be a positive number of bytes, not 0"):
            await client.datasets.upload(SFT, "sft", chunk_size=0)
        with pytest.raises(FileNotFoundError):
            await client.datasets.upload(tmp_path / "missing.jsonl", "sft")
        with local_error("unknown dataset kind 'tabular'"):
            client.datasets.list(kind="tabular")
        with local_error("dataset is required"):
            await client.datasets.get("")
        with local_error("dataset is required"):
            await client.datasets.delete("")


# Models


async def test_models_registration_listing_and_lineage(
    server: ServerThread, tmp_path: Path
) -> None:
    async with llmops.AsyncClient(server.address, timeout=10) as client:
        base_dir = make_base_model_dir(tmp_path)
        base = await client.models.create("base", str(base_dir), description="tiny llama")
        assert (base.name, base.version, base.kind) == (
            "base",
            1,
            registry_service_pb2.MODEL_KIND_BASE,
        )
        assert base.uri == str(base_dir.resolve()) and base.architecture == "LlamaForCausalLM"
        again = await client.models.create("base", str(base_dir), idempotency_key="k-1")
        same = await client.models.create("base", str(base_dir), idempotency_key="k-1")
        assert again.version == 2 and same.id == again.id
        adapter = await client.models.create(
            "ada",
            str(make_adapter_dir(tmp_path)),
            "adapter",
            base_model=base.id,
            metrics={"eval_loss": 0.5},
        )
        assert adapter.origin.base_model == base.id and dict(adapter.metrics) == {"eval_loss": 0.5}
        continued = await client.models.create(
            "ada",
            str(make_adapter_dir(tmp_path, "adapter-2")),
            "adapter",
            origin=registry_service_pb2.ModelOrigin(base_model=base.id, parent_model=adapter.id),
        )
        assert (continued.version, continued.origin.parent_model) == (2, adapter.id)

        assert (await client.models.get("ada")).id == continued.id
        assert (await client.models.get(adapter.id)).name == "ada"
        listed = await collect(client.models.list(page_size=1))
        assert [m.id for m in listed] == [continued.id, adapter.id, again.id, base.id]
        adapters = await collect(client.models.list(kind="adapter"))
        assert [m.id for m in adapters] == [continued.id, adapter.id]
        assert [m.id for m in await collect(client.models.list(name="base"))] == [again.id, base.id]
        on_base = await collect(client.models.list(base_model=base.id))
        assert [m.id for m in on_base] == [continued.id, adapter.id]

        lineage = await client.models.lineage(continued.id)
        assert lineage.model.id == continued.id
        assert [m.id for m in lineage.ancestors] == [base.id, adapter.id]
        assert list(lineage.descendants) == [] and list(lineage.eval_runs) == []
        down = await client.models.lineage("base")  # the newest "base", with no descendants
        assert down.model.id == again.id and list(down.descendants) == []

        with pytest.raises(llmops.FailedPrecondition) as refused:
            await client.models.delete(adapter.id)
        assert [(v.type, v.subject) for v in refused.value.precondition_violations] == [
            ("DEPENDENT_MODEL", f"models/{continued.id}")
        ]
        await client.models.delete(continued.id)
        await client.models.delete(adapter.id)
        with pytest.raises(llmops.NotFound) as missing:
            await client.models.lineage(adapter.id)
        assert missing.value.resource_info is not None
        assert missing.value.resource_info.name == adapter.id

        with pytest.raises(llmops.InvalidArgument) as bad_uri:
            await client.models.create("nothing", str(tmp_path / "no-such-dir"))
        assert [v.field for v in bad_uri.value.field_violations] == ["model.uri"]
        with pytest.raises(llmops.InvalidArgument) as no_base:
            await client.models.create("ada", str(tmp_path / "adapter"), "adapter")
        assert [v.field for v in no_base.value.field_violations] == ["model.origin.base_model"]
        with pytest.raises(llmops.NotFound):
            await client.models.create("x", str(base_dir), base_model="ghost")
        with local_error("unknown model kind 'lora'; choose one of: base, adapter, merged"):
            await client.models.create("x", str(base_dir), "lora")
        with local_error("uri is required"):
            await client.models.create("x", "")
        with local_error("name is required"):
            await client.models.create("", str(base_dir))
        with local_error("unknown model kind 'lora'"):
            client.models.list(kind="lora")
        for call in (client.models.get, client.models.delete, client.models.lineage):
            with local_error("model is required"):
                await call("")


async def test_model_aliases_history_and_rollback(server: ServerThread, tmp_path: Path) -> None:
    async with llmops.AsyncClient(server.address, timeout=10) as client:
        path = str(make_base_model_dir(tmp_path))
        v1 = await client.models.create("tiny", path)
        v2 = await client.models.create("tiny", path)
        other = await client.models.create("other", path)

        first = await client.models.set_alias(v1.id, "production", reason="first release")
        assert (first.model_name, first.alias, first.model, first.updated_by) == (
            "tiny",
            "production",
            v1.id,
            "anonymous",
        )
        moved = await client.models.set_alias("tiny", "production", "v2 is better")
        assert moved.model == v2.id
        await client.models.set_alias(other.id, "staging")
        assert (await client.models.get("tiny@production")).id == v2.id

        mine = await collect(client.models.aliases("tiny"))
        assert [(a.alias, a.model) for a in mine] == [("production", v2.id)]
        every = await collect(client.models.aliases(page_size=1))
        assert [(a.model_name, a.alias) for a in every] == [
            ("other", "staging"),
            ("tiny", "production"),
        ]
        history = await collect(client.models.alias_history("tiny", "production", page_size=1))
        assert [(m.from_model, m.to_model, m.reason, m.forced) for m in history] == [
            (v1.id, v2.id, "v2 is better", False),
            ("", v1.id, "first release", False),
        ]

        back = await client.models.rollback("tiny", "production", reason="v2 regressed")
        assert back.model == v1.id
        assert (await client.models.get("tiny@production")).id == v1.id
        latest = (await collect(client.models.alias_history("tiny", "production")))[0]
        assert (latest.from_model, latest.to_model, latest.reason) == (v2.id, v1.id, "v2 regressed")

        with pytest.raises(llmops.FailedPrecondition) as aliased:
            await client.models.delete(v1.id)
        assert [(v.type, v.subject) for v in aliased.value.precondition_violations] == [
            ("ALIAS", "tiny@production")
        ]
        assert "tiny@production" in str(aliased.value)
        with pytest.raises(llmops.FailedPrecondition) as no_previous:
            await client.models.rollback("other", "staging")
        assert [v.type for v in no_previous.value.precondition_violations] == ["NO_PREVIOUS"]
        with pytest.raises(llmops.InvalidArgument) as bad_alias:
            await client.models.set_alias(v1.id, "Not A Slug")
        assert [v.field for v in bad_alias.value.field_violations] == ["alias"]

        await client.models.delete_alias("tiny", "production")
        assert await collect(client.models.aliases("tiny")) == []
        with pytest.raises(llmops.NotFound) as gone:
            await client.models.delete_alias("tiny", "production")
        assert gone.value.resource_info is not None
        assert gone.value.resource_info.name == "tiny@production"
        with pytest.raises(llmops.NotFound):
            await client.models.rollback("tiny", "canary")
        await client.models.delete(v1.id)

        with local_error("alias is required"):
            await client.models.set_alias(v2.id, "")
        with local_error("model_name is required"):
            await client.models.delete_alias("", "production")
        with local_error("alias is required"):
            client.models.alias_history("tiny", "")
        with local_error("model_name is required"):
            await client.models.rollback("", "production")


# Training, Eval and Inference: local checks, then the server's answers


async def test_training_calls_are_checked_before_they_are_sent(server: ServerThread) -> None:
    async with llmops.AsyncClient(server.address, timeout=10) as client:
        training = client.training
        with pytest.raises(llmops.NotFound):
            await training.create(
                "sft",
                "base",
                "demo-sft",
                "extraction",
                {"max_steps": 10, "lora_r": "auto", "target_modules": "q_proj,v_proj"},
                output_name="tuned",
            )
        with pytest.raises(llmops.NotFound):
            await training.create(
                "distill",
                "base",
                "demo-sft",
                hyperparameters=training_service_pb2.Hyperparameters(max_steps=5),
                teacher_model="teacher",
                template_version=1,
            )
        for missing in (
            training.get(JOB),
            training.cancel(JOB),
            collect(training.events(JOB)),
            collect(training.watch(JOB, 3, timeout=5)),
            training.checkpoints(JOB),
            training.wait(JOB, timeout=5),
            training.pause(JOB),
            training.resume(JOB),
            training.register_checkpoint(JOB, 100),
        ):
            with pytest.raises(llmops.NotFound):
                await missing
        assert await collect(training.list()) == []
        assert await collect(training.list(state="running", method="dpo")) == []

        with local_error("unknown training method 'lora'; choose one of: sft, qlora, dpo, distill"):
            await training.create("lora", "base", "demo-sft")
        with local_error("teacher_model is required for method 'distill'"):
            await training.create("distill", "base", "demo-sft")
        with local_error(
            r"unknown hyperparameter 'learnig_rate' \(did you mean 'learning_rate'\?\)"
        ):
            await training.create("sft", "base", "demo-sft", hyperparameters={"learnig_rate": 1e-4})
        with local_error("hyperparameter max_steps='many'"):
            await training.create("sft", "base", "demo-sft", hyperparameters={"max_steps": "many"})
        with local_error("base_model is required"):
            await training.create("sft", "", "demo-sft")
        with local_error("dataset is required"):
            await training.create("sft", "base", " ")
        with local_error("unknown job state 'done'; choose one of: queued, running"):
            training.list(state="done")
        with local_error("unknown training method 'ppo'"):
            training.list(method="ppo")
        with local_error("poll_interval must be positive, not 0"):
            await training.wait(JOB, poll_interval=0)
        for unary in (training.get, training.cancel, training.pause, training.resume):
            with local_error("id is required"):
                await unary("")
        with local_error("id is required"):
            training.events("")
        with local_error("id is required"):
            training.watch("")
        with local_error("id is required"):
            await training.checkpoints("")
        with local_error("id is required"):
            await training.register_checkpoint("", 1)


async def test_eval_calls_are_checked_then_answered(server: ServerThread) -> None:
    async with llmops.AsyncClient(server.address, timeout=10) as client:
        runs = client.eval
        with pytest.raises(llmops.NotFound):
            await runs.create(
                "ada@staging",
                "demo-eval",
                gate=True,
                task="extraction",
                limit=10,
                generation=eval_service_pb2.GenerationConfig(max_new_tokens=16),
            )
        for missing in (
            runs.get(RUN),
            runs.cancel(RUN),
            collect(runs.events(RUN, page_size=5)),
            collect(runs.watch(RUN)),
            runs.compare(RUN, "eval-111111111111"),
            runs.wait(RUN),
        ):
            with pytest.raises(llmops.NotFound):
                await missing
        assert await collect(runs.list(state="succeeded")) == []
        with pytest.raises(llmops.NotFound):
            await collect(runs.list(model="ada"))

        with local_error("limit must be 0 \\(all\\) or positive, not -1"):
            await runs.create("ada", "demo-eval", limit=-1)
        with local_error("model is required"):
            await runs.create("", "demo-eval")
        with local_error("dataset is required"):
            await runs.create("ada", "")
        with local_error("unknown job state 'done'"):
            runs.list(state="done")
        with local_error("second is required"):
            await runs.compare(RUN, "")
        with local_error("poll_interval must be positive, not -1"):
            await runs.wait(RUN, poll_interval=-1)
        for unary in (runs.get, runs.cancel):
            with local_error("id is required"):
                await unary("")
        with local_error("id is required"):
            runs.events("")
        with local_error("id is required"):
            runs.watch("")


async def test_inference_calls_are_checked_then_resolved(server: ServerThread) -> None:
    async with llmops.AsyncClient(server.address, timeout=10) as client:
        inference = client.inference
        with pytest.raises(llmops.NotFound):
            await inference.generate("base", "2+2=", max_new_tokens=4, stop=["\n"], seed=1)
        with pytest.raises(llmops.NotFound):  # no default model is registered
            await inference.generate(template_id="extraction", text="Ida Holm left.", timeout=5)
        with pytest.raises(llmops.NotFound):
            await collect(inference.stream("base", "2+2=", temperature=0.7, top_p=0.9))
        with pytest.raises(llmops.InvalidArgument):
            await inference.generate("base", "2+2=", temperature=9)
        with local_error("give a prompt, a template_id with text, or messages"):
            await inference.generate("base")
        with local_error("text is rendered into a template: give template_id too"):
            await inference.generate("base", text="Ida Holm left.")
        with local_error("give a prompt, a template_id with text, or messages"):
            inference.stream("base", template_id="extraction")


# The sync Client: the calls the CLI does not make


def test_sync_registry_calls_the_cli_does_not_make(server: ServerThread, tmp_path: Path) -> None:
    with llmops.Client(server.address, timeout=10) as client:
        assert repr(client) == f"Client(address={server.address!r})"
        assert client.timeout == 10 and isinstance(client.channel, grpc.Channel)
        client.templates.create("qa", "Q: {text}\nA:")
        client.templates.create("qa", "Question: {text}\nAnswer:")
        assert [v.version for v in client.templates.versions("qa", page_size=1)] == [2, 1]
        assert client.templates.validate("{text}").valid
        assert not client.templates.validate("{text} {other}").valid

        page = client.datasets.list_page(page_size=2)
        assert len(page.datasets) == 2 and page.next_page_token
        assert len(list(client.datasets.list(page_size=1))) == 4

        base_dir = str(make_base_model_dir(tmp_path))
        base = client.models.create("base", base_dir, metrics={"loss": 1.0}, idempotency_key="b")
        assert client.models.create("base", base_dir, idempotency_key="b").id == base.id
        adapter = client.models.create(
            "ada",
            str(make_adapter_dir(tmp_path)),
            "adapter",
            origin=registry_service_pb2.ModelOrigin(base_model=base.id),
        )
        assert [m.id for m in client.models.list(base_model="base")] == [adapter.id]
        by_name = client.models.create(
            "ada-named",
            str(make_adapter_dir(tmp_path, "named")),
            "adapter",
            origin=registry_service_pb2.ModelOrigin(base_model=base.id, dataset="demo-sft"),
        )
        sft = client.datasets.get("demo-sft")
        assert (by_name.origin.dataset, by_name.origin.dataset_sha256) == (sft.id, sft.sha256)
        with pytest.raises(llmops.NotFound):
            client.models.create(
                "ada-named",
                str(tmp_path / "named"),
                "adapter",
                origin=registry_service_pb2.ModelOrigin(base_model=base.id, dataset="no-such"),
            )
        client.models.delete(by_name.id)
        newer = client.models.create("base", base_dir)  # "base" now names two versions
        assert [m.id for m in client.models.list(base_model="base")] == [adapter.id]
        assert list(client.models.list(base_model=newer.id)) == []
        client.models.delete(newer.id)
        assert [m.id for m in client.models.lineage("base").descendants] == [adapter.id]
        client.models.set_alias(adapter.id, "staging")
        with pytest.raises(llmops.FailedPrecondition) as refused:
            client.models.rollback("ada", "staging")
        assert refused.value.precondition_violations[0].subject == "ada@staging"
        assert [m.to_model for m in client.models.alias_history("ada", "staging")] == [adapter.id]
        client.models.delete_alias("ada", "staging")
        client.models.delete("ada")
        assert [m.id for m in client.models.list()] == [base.id]


def test_sync_training_eval_and_inference_are_checked_then_answered(
    server: ServerThread,
) -> None:
    with llmops.Client(server.address, timeout=10) as client:
        training, runs, inference = client.training, client.eval, client.inference
        for missing in (
            lambda: training.create("qlora", "base", "demo-sft", hyperparameters={"seed": 1}),
            lambda: training.get(JOB),
            lambda: training.cancel(JOB),
            lambda: list(training.events(JOB)),
            lambda: list(training.watch(JOB, timeout=5)),
            lambda: training.checkpoints(JOB),
            lambda: training.wait(JOB, timeout=5),
            lambda: runs.create("ada", "demo-eval", gate=True),
            lambda: runs.get(RUN),
            lambda: list(runs.list(model="ada")),
            lambda: runs.cancel(RUN),
            lambda: list(runs.events(RUN)),
            lambda: list(runs.watch(RUN, 2)),
            lambda: runs.compare(RUN, RUN),
            lambda: runs.wait(RUN),
        ):
            with pytest.raises(llmops.NotFound):
                missing()
        assert list(training.list(state="queued")) == []
        assert list(runs.list()) == []
        for refused in (
            lambda: training.pause(JOB),
            lambda: training.resume(JOB),
            lambda: training.register_checkpoint(JOB, 5, "ckpt"),
        ):
            with pytest.raises(llmops.NotFound):
                refused()
        unknown_model: tuple[Callable[[], object], ...] = (
            lambda: inference.generate("base", "2+2="),
            lambda: list(inference.stream(template_id="extraction", text="Ida left.")),
        )
        for unknown in unknown_model:
            with pytest.raises(llmops.NotFound):
                unknown()

        with local_error("unknown training method 'lora'"):
            training.create("lora", "base", "demo-sft")
        with local_error("unknown hyperparameter 'lora_rank' \\(did you mean 'lora_r'\\?\\)"):
            training.create("sft", "base", "demo-sft", hyperparameters={"lora_rank": 8})
        with local_error("teacher_model is required for method 'distill'"):
            training.create("distill", "base", "demo-sft")
        with local_error("unknown training method 'ppo'"):
            training.list(method="ppo")
        with local_error("poll_interval must be positive"):
            training.wait(JOB, poll_interval=0)
        with local_error("id is required"):
            training.watch("")
        with local_error("limit must be 0 \\(all\\) or positive, not -5"):
            runs.create("ada", "demo-eval", limit=-5)
        with local_error("unknown job state 'finished'"):
            runs.list(state="finished")
        with local_error("first is required"):
            runs.compare("", RUN)
        with local_error("give a prompt, a template_id with text, or messages"):
            inference.generate("base")
        with local_error("text is rendered into a template: give template_id too"):
            inference.stream("base", text="Ida left.")
