"""RegistryService model RPCs against a real server: registration, aliases, deletion, lineage;
and registry data surviving a restart."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

from llmops.v1 import registry_service_pb2 as pb
from llmops.v1.registry_service_pb2_grpc import RegistryServiceStub
from llmops_services.db.tables import JobRow
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import (
    Registry,
    add_job,
    base_model,
    db_of,
    expect_error,
    jsonl,
    make_adapter_dir,
    make_base_model_dir,
    safetensors_bytes,
    set_job_state,
    upload,
)
from tests.stored import is_stored, put_tree

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def adapter_request(
    name: str,
    uri: Path | str,
    base: str,
    *,
    parent: str = "",
    teacher: str = "",
    idempotency_key: str = "",
) -> pb.CreateModelRequest:
    return pb.CreateModelRequest(
        model=pb.Model(
            name=name,
            kind=pb.MODEL_KIND_ADAPTER,
            uri=str(uri),
            origin=pb.ModelOrigin(base_model=base, parent_model=parent, teacher_model=teacher),
        ),
        idempotency_key=idempotency_key,
    )


async def model_count(registry: Registry) -> int:
    listed = await registry.ListModels(pb.ListModelsRequest(page_size=1000))
    return len(listed.models)


async def get(registry: Registry, ref: str) -> pb.Model:
    model: pb.Model = await registry.GetModel(pb.GetModelRequest(model=ref))
    return model


# Registration


async def test_register_a_base_model_from_a_local_dir(registry: Registry, tmp_path: Path) -> None:
    path = make_base_model_dir(tmp_path)
    first = await registry.CreateModel(base_model("tiny", path, description="a tiny llama"))
    assert first.id.startswith("mdl-")
    assert first.name == "tiny"
    assert first.version == 1
    assert first.kind == pb.MODEL_KIND_BASE
    assert first.description == "a tiny llama"
    assert first.uri == str(path.resolve())
    assert first.architecture == "LlamaForCausalLM"
    assert len(first.tokenizer_sha256) == 64
    assert first.size_bytes == len(safetensors_bytes())
    assert first.create_time.seconds > 0
    assert list(first.aliases) == []
    assert first.origin.base_model == ""
    assert first.origin.dataset == ""
    assert first.origin.method == ""
    assert dict(first.origin.hyperparameters) == {}

    second = await registry.CreateModel(base_model("tiny", path))
    assert second.version == 2
    assert second.id != first.id
    assert second.tokenizer_sha256 == first.tokenizer_sha256
    assert await get(registry, "tiny") == second
    assert await get(registry, first.id) == first
    assert await get(registry, second.id) == second


async def test_tokenizer_hash_tells_tokenizers_apart(registry: Registry, tmp_path: Path) -> None:
    a = await registry.CreateModel(base_model("a", make_base_model_dir(tmp_path, "a", "tok-1")))
    b = await registry.CreateModel(base_model("b", make_base_model_dir(tmp_path, "b", "tok-1")))
    c = await registry.CreateModel(base_model("c", make_base_model_dir(tmp_path, "c", "tok-2")))
    assert a.tokenizer_sha256 == b.tokenizer_sha256 != c.tokenizer_sha256


async def test_register_from_a_file_url_and_from_a_remote_url(
    registry: Registry, tmp_path: Path
) -> None:
    path = make_base_model_dir(tmp_path)
    local = await registry.CreateModel(base_model("local", f"file://{path}"))
    assert local.uri == str(path)
    assert local.architecture == "LlamaForCausalLM"
    # A remote URL cannot be inspected from here; it is recorded as given.
    remote = await registry.CreateModel(base_model("remote", "s3://bucket/models/tiny"))
    assert remote.uri == "s3://bucket/models/tiny"
    assert remote.architecture == ""
    assert remote.size_bytes == 0


async def test_register_refusals_name_the_field(registry: Registry, tmp_path: Path) -> None:
    good = make_base_model_dir(tmp_path, "good")
    no_config = make_base_model_dir(tmp_path, "no-config")
    (no_config / "config.json").unlink()
    bad_config = make_base_model_dir(tmp_path, "bad-config")
    (bad_config / "config.json").write_text("{not json")
    torch_only = make_base_model_dir(tmp_path, "torch-only")
    (torch_only / "model.safetensors").unlink()
    (torch_only / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    adapter_dir = make_adapter_dir(tmp_path)

    cases: list[tuple[pb.CreateModelRequest, str, str]] = [
        (pb.CreateModelRequest(), "model", "required"),
        (base_model("", good), "model.name", "required"),
        (base_model("a@b", good), "model.name", "letters"),
        (base_model("has space", good), "model.name", "letters"),
        (
            pb.CreateModelRequest(model=pb.Model(name="x", uri=str(good))),
            "model.kind",
            "BASE, ADAPTER or MERGED",
        ),
        (base_model("x", ""), "model.uri", "required"),
        (base_model("x", tmp_path / "missing"), "model.uri", "no such directory"),
        (base_model("x", good / "config.json"), "model.uri", "no such directory"),
        (base_model("x", no_config), "model.uri", "config.json"),
        (base_model("x", bad_config), "model.uri", "JSON"),
        (base_model("x", torch_only), "model.uri", "safetensors"),
        (base_model("x", adapter_dir), "model.uri", "config.json"),
        (adapter_request("x", adapter_dir, ""), "model.origin.base_model", "required"),
    ]
    for request, field, description in cases:
        details = await expect_error(registry.CreateModel(request), INVALID)
        assert details.fields == [field], (request, details.violations)
        assert description in details.violations[field], (request, details.violations)
    assert await model_count(registry) == 0


async def test_only_safe_loadable_models_and_sane_adapters_are_registered(
    registry: Registry, tmp_path: Path
) -> None:
    """Weights only as safetensors under the names the loaders read (a stray safetensors file
    beside a pickle is not enough), no custom code, and LoRA adapters of a sane shape."""
    base = await registry.CreateModel(base_model("base", make_base_model_dir(tmp_path, "base")))
    stray = make_base_model_dir(tmp_path, "stray")
    (stray / "model.safetensors").rename(stray / "other.safetensors")
    (stray / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    pickled_adapter = make_adapter_dir(tmp_path, "pickled")
    (pickled_adapter / "adapter_model.safetensors").rename(pickled_adapter / "w.safetensors")
    (pickled_adapter / "adapter_model.bin").write_bytes(b"\x80\x02pickle")

    def adapter_with(name: str, **changes: object) -> Path:
        path = make_adapter_dir(tmp_path, name)
        config = json.loads((path / "adapter_config.json").read_text())
        (path / "adapter_config.json").write_text(json.dumps({**config, **changes}))
        return path

    cases: list[tuple[pb.CreateModelRequest, str]] = [
        (base_model("x", stray), "needs model.safetensors"),
        (adapter_request("x", pickled_adapter, base.id), "needs adapter_model.safetensors"),
        (adapter_request("x", adapter_with("huge", r=100_000), base.id), "rank"),
        (adapter_request("x", adapter_with("zero", r=0), base.id), "rank"),
        (adapter_request("x", adapter_with("prefix", peft_type="PREFIX_TUNING"), base.id), "LORA"),
        (adapter_request("x", adapter_with("regex", target_modules=".*"), base.id), "target"),
        (adapter_request("x", adapter_with("many", target_modules=["q"] * 65), base.id), "target"),
        (adapter_request("x", adapter_with("alpha", lora_alpha=-1), base.id), "lora_alpha"),
    ]
    for request, description in cases:
        details = await expect_error(registry.CreateModel(request), INVALID)
        assert details.fields and set(details.fields) == {"model.uri"}, details.violations
        assert description in " ".join(details.violations.values()), (request, details)
    linear = adapter_with("linear", target_modules="all-linear", r=16)
    assert (await registry.CreateModel(adapter_request("ok", linear, base.id))).name == "ok"
    assert await model_count(registry) == 2


async def test_a_model_that_ships_code_is_registered_only_as_trusted(
    registry: Registry, tmp_path: Path
) -> None:
    """An `auto_map` in config.json is code that loading would import: refused unless the
    model is registered with trust_remote_code (auth is off here, so the caller is an admin;
    tests/integration/test_roles.py refuses it to a writer). Adapters take their base's."""
    custom = make_base_model_dir(tmp_path, "custom")
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    details = await expect_error(registry.CreateModel(base_model("custom", custom)), INVALID)
    assert set(details.fields) == {"model.trust_remote_code"}, details.violations
    assert (
        "needs trust_remote_code, set by an admin" in details.violations["model.trust_remote_code"]
    )
    assert await model_count(registry) == 0

    trusted = base_model("custom", custom)
    trusted.model.trust_remote_code = True
    base = await registry.CreateModel(trusted)
    assert base.trust_remote_code
    plain = await registry.CreateModel(base_model("plain", make_base_model_dir(tmp_path)))
    assert not plain.trust_remote_code

    adapter_dir = make_adapter_dir(tmp_path)
    adapter = await registry.CreateModel(adapter_request("tuned", adapter_dir, base.id))
    assert adapter.trust_remote_code  # its base's, shown where it is read
    assert not (
        await registry.CreateModel(adapter_request("t2", adapter_dir, plain.id))
    ).trust_remote_code
    marked = adapter_request("t3", adapter_dir, plain.id)
    marked.model.trust_remote_code = True
    details = await expect_error(registry.CreateModel(marked), INVALID)
    assert set(details.fields) == {"model.trust_remote_code"}, details.violations
    assert await model_count(registry) == 4


async def test_unknown_references_are_not_found(registry: Registry, tmp_path: Path) -> None:
    adapter_dir = make_adapter_dir(tmp_path)
    base = await registry.CreateModel(base_model("base", make_base_model_dir(tmp_path)))
    for request, ref in [
        (adapter_request("x", adapter_dir, "no-such-base"), "no-such-base"),
        (adapter_request("x", adapter_dir, "mdl-000000000000"), "mdl-000000000000"),
        (adapter_request("x", adapter_dir, "base@production"), "base@production"),
        (adapter_request("x", adapter_dir, base.id, parent="no-parent"), "no-parent"),
        (adapter_request("x", adapter_dir, base.id, teacher="no-teacher"), "no-teacher"),
    ]:
        details = await expect_error(registry.CreateModel(request), NOT_FOUND)
        assert details.resource_info is not None
        assert details.resource_info.resource_type == "model"
        assert details.resource_info.resource_name == ref
    assert await model_count(registry) == 1


async def test_register_an_adapter_with_its_lineage(registry: Registry, tmp_path: Path) -> None:
    base = await registry.CreateModel(base_model("base", make_base_model_dir(tmp_path)))
    dataset = await registry.GetDataset(pb.GetDatasetRequest(dataset="demo-sft"))
    hyperparameters = struct_pb2.Struct()
    hyperparameters.update(
        {
            "learning_rate": 0.0002,
            "lora_r": 16,
            "target_modules": ["q_proj", "v_proj"],
            "auto": True,
        }
    )
    request = pb.CreateModelRequest(
        model=pb.Model(
            name="extractor",
            kind=pb.MODEL_KIND_ADAPTER,
            uri=str(make_adapter_dir(tmp_path)),
            description="LoRA SFT on demo-sft",
            origin=pb.ModelOrigin(
                base_model="base",
                dataset=dataset.id,
                dataset_sha256=dataset.sha256,
                method="sft",
                hyperparameters=hyperparameters,
                training_job="ftjob-abc",
                attempt=2,
                checkpoint_step=120,
                template_id="extraction",
                template_version=1,
            ),
            metrics={"train_loss": 0.25, "eval_exact_match": 1.0},
        )
    )
    adapter = await registry.CreateModel(request)
    assert adapter.kind == pb.MODEL_KIND_ADAPTER
    assert adapter.version == 1
    assert adapter.architecture == ""
    assert adapter.size_bytes == len(safetensors_bytes())
    # An adapter without tokenizer files shares its base model's tokenizer.
    assert adapter.tokenizer_sha256 == base.tokenizer_sha256
    origin = adapter.origin
    assert origin.base_model == base.id
    assert origin.dataset == dataset.id
    assert origin.dataset_sha256 == dataset.sha256
    assert origin.method == "sft"
    assert dict(origin.hyperparameters) == {
        "learning_rate": 0.0002,
        "lora_r": 16.0,
        "target_modules": ["q_proj", "v_proj"],
        "auto": True,
    }
    assert origin.training_job == "ftjob-abc"
    assert origin.attempt == 2
    assert origin.checkpoint_step == 120
    assert (origin.template_id, origin.template_version) == ("extraction", 1)
    assert dict(adapter.metrics) == {"train_loss": 0.25, "eval_exact_match": 1.0}
    assert await get(registry, "extractor") == adapter
    assert await get(registry, adapter.id) == adapter


async def test_idempotency_key_returns_the_same_model(registry: Registry, tmp_path: Path) -> None:
    base = await registry.CreateModel(base_model("base", make_base_model_dir(tmp_path)))
    adapter_dir = make_adapter_dir(tmp_path)
    first = await registry.CreateModel(
        adapter_request("ada", adapter_dir, base.id, idempotency_key="job-1/attempt-1")
    )
    again = await registry.CreateModel(
        adapter_request("ada", adapter_dir, base.id, idempotency_key="job-1/attempt-1")
    )
    assert again == first
    other = await registry.CreateModel(
        adapter_request("ada", adapter_dir, base.id, idempotency_key="job-1/attempt-2")
    )
    assert other.id != first.id
    assert other.version == 2
    assert await model_count(registry) == 3


# Listing


async def test_list_newest_first_paged_and_filtered(registry: Registry, tmp_path: Path) -> None:
    assert await model_count(registry) == 0
    base_v1 = await registry.CreateModel(base_model("base", make_base_model_dir(tmp_path, "b")))
    base_v2 = await registry.CreateModel(base_model("base", make_base_model_dir(tmp_path, "b2")))
    other = await registry.CreateModel(base_model("other", make_base_model_dir(tmp_path, "o")))
    adapter_dir = make_adapter_dir(tmp_path)
    on_base = await registry.CreateModel(adapter_request("ada", adapter_dir, "base"))
    on_other = await registry.CreateModel(adapter_request("ada", adapter_dir, other.id))
    newest_first = [on_other.id, on_base.id, other.id, base_v2.id, base_v1.id]

    everything = await registry.ListModels(pb.ListModelsRequest())
    assert [m.id for m in everything.models] == newest_first
    assert everything.next_page_token == ""

    paged: list[str] = []
    token = ""
    while True:
        page = await registry.ListModels(pb.ListModelsRequest(page_size=2, page_token=token))
        assert len(page.models) <= 2
        paged += [m.id for m in page.models]
        token = page.next_page_token
        if not token:
            break
    assert paged == newest_first

    async def ids(**filters: object) -> list[str]:
        response = await registry.ListModels(pb.ListModelsRequest(**filters))  # type: ignore[arg-type]
        return [m.id for m in response.models]

    assert await ids(kind=pb.MODEL_KIND_ADAPTER) == [on_other.id, on_base.id]
    assert await ids(kind=pb.MODEL_KIND_BASE) == [other.id, base_v2.id, base_v1.id]
    assert await ids(kind=pb.MODEL_KIND_MERGED) == []
    assert await ids(name="base") == [base_v2.id, base_v1.id]
    assert await ids(name="ada") == [on_other.id, on_base.id]
    assert await ids(base_model="base") == [on_base.id]
    assert await ids(base_model=base_v2.id) == [on_base.id]
    assert await ids(base_model=base_v1.id) == []
    assert await ids(base_model="other", kind=pb.MODEL_KIND_ADAPTER) == [on_other.id]
    assert await ids(name="ada", base_model=other.id) == [on_other.id]

    details = await expect_error(
        registry.ListModels(pb.ListModelsRequest(base_model="no-such")), NOT_FOUND
    )
    assert details.resource_info is not None
    assert details.resource_info.resource_name == "no-such"

    first = await registry.ListModels(pb.ListModelsRequest(name="base", page_size=1))
    assert first.next_page_token
    rest = await registry.ListModels(
        pb.ListModelsRequest(name="base", page_size=1, page_token=first.next_page_token)
    )
    assert [m.id for m in rest.models] == [base_v1.id]
    details = await expect_error(
        registry.ListModels(
            pb.ListModelsRequest(name="other", page_size=1, page_token=first.next_page_token)
        ),
        INVALID,
    )
    assert details.fields == ["page_token"]
    details = await expect_error(
        registry.ListModels(pb.ListModelsRequest(page_token="bogus")), INVALID
    )
    assert details.fields == ["page_token"]


async def test_get_refusals(registry: Registry) -> None:
    details = await expect_error(registry.GetModel(pb.GetModelRequest()), INVALID)
    assert details.fields == ["model"]
    for ref in ("no-such", "mdl-000000000000", "no-such@production"):
        details = await expect_error(registry.GetModel(pb.GetModelRequest(model=ref)), NOT_FOUND)
        assert details.resource_info is not None
        assert details.resource_info.resource_type == "model"
        assert details.resource_info.resource_name == ref


# Aliases


async def test_alias_lifecycle(registry: Registry, tmp_path: Path) -> None:
    path = make_base_model_dir(tmp_path)
    v1 = await registry.CreateModel(base_model("base", path))
    v2 = await registry.CreateModel(base_model("base", path))

    staging = await registry.SetModelAlias(
        pb.SetModelAliasRequest(model=v1.id, alias="staging", reason="first candidate")
    )
    assert (staging.model_name, staging.alias, staging.model) == ("base", "staging", v1.id)
    assert staging.updated_by == "anonymous"
    assert staging.update_time.seconds > 0
    resolved = await get(registry, "base@staging")
    assert resolved.id == v1.id
    assert list(resolved.aliases) == ["staging"]
    assert list((await get(registry, "base")).aliases) == []

    moved = await registry.SetModelAlias(
        pb.SetModelAliasRequest(model="base", alias="staging", reason="v2 is better")
    )
    assert moved.model == v2.id
    assert (await get(registry, "base@staging")).id == v2.id
    assert list((await get(registry, v1.id)).aliases) == []
    assert list((await get(registry, v2.id)).aliases) == ["staging"]

    # Pointing an alias where it already points is not a move.
    same = await registry.SetModelAlias(pb.SetModelAliasRequest(model=v2.id, alias="staging"))
    assert same.model == v2.id

    await registry.SetModelAlias(pb.SetModelAliasRequest(model=v1.id, alias="production"))
    aliases = await registry.ListModelAliases(pb.ListModelAliasesRequest(model_name="base"))
    assert [(a.alias, a.model) for a in aliases.aliases] == [
        ("production", v1.id),
        ("staging", v2.id),
    ]
    assert list((await get(registry, v1.id)).aliases) == ["production"]

    history = await registry.ListAliasHistory(
        pb.ListAliasHistoryRequest(model_name="base", alias="staging")
    )
    moves = [(m.from_model, m.to_model, m.actor, m.reason) for m in history.moves]
    assert moves == [
        (v1.id, v2.id, "anonymous", "v2 is better"),
        ("", v1.id, "anonymous", "first candidate"),
    ]
    for move in history.moves:
        assert (move.model_name, move.alias) == ("base", "staging")
        assert move.create_time.seconds > 0
        assert not move.forced

    back = await registry.RollbackModelAlias(
        pb.RollbackModelAliasRequest(model_name="base", alias="staging", reason="v2 regressed")
    )
    assert back.model == v1.id
    assert (await get(registry, "base@staging")).id == v1.id
    history = await registry.ListAliasHistory(
        pb.ListAliasHistoryRequest(model_name="base", alias="staging", page_size=1)
    )
    assert [(m.from_model, m.to_model, m.reason) for m in history.moves] == [
        (v2.id, v1.id, "v2 regressed")
    ]
    assert history.next_page_token

    # Without a reason, a rollback says so in the history.
    await registry.RollbackModelAlias(
        pb.RollbackModelAliasRequest(model_name="base", alias="staging")
    )
    assert (await get(registry, "base@staging")).id == v2.id
    history = await registry.ListAliasHistory(
        pb.ListAliasHistoryRequest(model_name="base", alias="staging")
    )
    assert len(history.moves) == 4
    assert history.moves[0].reason == "rollback"

    await registry.DeleteModelAlias(pb.DeleteModelAliasRequest(model_name="base", alias="staging"))
    await expect_error(registry.GetModel(pb.GetModelRequest(model="base@staging")), NOT_FOUND)
    history = await registry.ListAliasHistory(
        pb.ListAliasHistoryRequest(model_name="base", alias="staging")
    )
    assert (history.moves[0].from_model, history.moves[0].to_model) == (v2.id, "")
    assert history.moves[0].actor == "anonymous"
    aliases = await registry.ListModelAliases(pb.ListModelAliasesRequest(model_name="base"))
    assert [a.alias for a in aliases.aliases] == ["production"]
    details = await expect_error(
        registry.DeleteModelAlias(pb.DeleteModelAliasRequest(model_name="base", alias="staging")),
        NOT_FOUND,
    )
    assert details.resource_info is not None
    assert details.resource_info.resource_name == "base@staging"


async def test_rollback_refusals(registry: Registry, tmp_path: Path) -> None:
    v1 = await registry.CreateModel(base_model("base", make_base_model_dir(tmp_path)))
    await registry.SetModelAlias(pb.SetModelAliasRequest(model=v1.id, alias="canary"))
    details = await expect_error(
        registry.RollbackModelAlias(
            pb.RollbackModelAliasRequest(model_name="base", alias="canary")
        ),
        PRECONDITION,
    )
    assert details.subjects == ["base@canary"]
    assert (await get(registry, "base@canary")).id == v1.id

    details = await expect_error(
        registry.RollbackModelAlias(pb.RollbackModelAliasRequest(model_name="base", alias="never")),
        NOT_FOUND,
    )
    assert details.resource_info is not None
    assert details.resource_info.resource_name == "base@never"
    for request, field in [
        (pb.RollbackModelAliasRequest(alias="canary"), "model_name"),
        (pb.RollbackModelAliasRequest(model_name="base"), "alias"),
    ]:
        details = await expect_error(registry.RollbackModelAlias(request), INVALID)
        assert details.fields == [field]


async def test_alias_refusals(registry: Registry, tmp_path: Path) -> None:
    v1 = await registry.CreateModel(base_model("base", make_base_model_dir(tmp_path)))
    for alias in ("Production", "prod!", "has space", "-x", "a" * 64, "x@y"):
        details = await expect_error(
            registry.SetModelAlias(pb.SetModelAliasRequest(model=v1.id, alias=alias)), INVALID
        )
        assert details.fields == ["alias"], alias
    details = await expect_error(
        registry.SetModelAlias(pb.SetModelAliasRequest(model=v1.id)), INVALID
    )
    assert details.fields == ["alias"]
    details = await expect_error(
        registry.SetModelAlias(pb.SetModelAliasRequest(alias="prod")), INVALID
    )
    assert details.fields == ["model"]
    details = await expect_error(
        registry.SetModelAlias(pb.SetModelAliasRequest(model="no-such", alias="prod")), NOT_FOUND
    )
    assert details.resource_info is not None
    assert details.resource_info.resource_name == "no-such"
    details = await expect_error(
        registry.DeleteModelAlias(pb.DeleteModelAliasRequest(model_name="base")), INVALID
    )
    assert details.fields == ["alias"]
    for request in (
        pb.ListAliasHistoryRequest(alias="prod"),
        pb.ListAliasHistoryRequest(model_name="base"),
    ):
        await expect_error(registry.ListAliasHistory(request), INVALID)
    aliases = await registry.ListModelAliases(pb.ListModelAliasesRequest())
    assert list(aliases.aliases) == []


async def test_list_aliases_of_every_name_paged(registry: Registry, tmp_path: Path) -> None:
    path = make_base_model_dir(tmp_path)
    a = await registry.CreateModel(base_model("alpha", path))
    b = await registry.CreateModel(base_model("beta", path))
    for model, alias in ((b, "prod"), (a, "staging"), (a, "prod")):
        await registry.SetModelAlias(pb.SetModelAliasRequest(model=model.id, alias=alias))
    seen: list[tuple[str, str, str]] = []
    token = ""
    while True:
        page = await registry.ListModelAliases(
            pb.ListModelAliasesRequest(page_size=1, page_token=token)
        )
        seen += [(x.model_name, x.alias, x.model) for x in page.aliases]
        token = page.next_page_token
        if not token:
            break
    assert seen == [("alpha", "prod", a.id), ("alpha", "staging", a.id), ("beta", "prod", b.id)]
    first = await registry.ListModelAliases(pb.ListModelAliasesRequest(page_size=1))
    details = await expect_error(
        registry.ListModelAliases(
            pb.ListModelAliasesRequest(
                model_name="beta", page_size=1, page_token=first.next_page_token
            )
        ),
        INVALID,
    )
    assert details.fields == ["page_token"]


# Deletion


async def test_delete_is_refused_while_depended_on(
    registry: Registry, server: ServerThread, tmp_path: Path
) -> None:
    path = make_base_model_dir(tmp_path)
    base = await registry.CreateModel(base_model("base", path))
    await registry.SetModelAlias(pb.SetModelAliasRequest(model=base.id, alias="staging"))
    adapter = await registry.CreateModel(
        adapter_request("ada", make_adapter_dir(tmp_path), base.id)
    )
    db = db_of(server)
    add_job(db, JobRow(id="evaljob-1", kind="eval", state="RUNNING", model_id=base.id))

    details = await expect_error(
        registry.DeleteModel(pb.DeleteModelRequest(model="base")), PRECONDITION
    )
    assert details.subjects == ["base@staging", f"models/{adapter.id}", "jobs/evaljob-1"]
    assert details.precondition_failure is not None
    assert [v.type for v in details.precondition_failure.violations] == [
        "ALIAS",
        "DEPENDENT_MODEL",
        "IN_USE",
    ]
    set_job_state(db, "evaljob-1", "SUCCEEDED")

    await registry.DeleteModelAlias(pb.DeleteModelAliasRequest(model_name="base", alias="staging"))
    details = await expect_error(
        registry.DeleteModel(pb.DeleteModelRequest(model=base.id)), PRECONDITION
    )
    assert details.subjects == [f"models/{adapter.id}"]

    await registry.DeleteModel(pb.DeleteModelRequest(model="ada"))
    await expect_error(registry.GetModel(pb.GetModelRequest(model=adapter.id)), NOT_FOUND)
    await registry.DeleteModel(pb.DeleteModelRequest(model=base.id))
    await expect_error(registry.GetModel(pb.GetModelRequest(model=base.id)), NOT_FOUND)
    assert await model_count(registry) == 0
    # A model registered from the user's own directory leaves that directory alone.
    assert (path / "model.safetensors").is_file()


async def test_delete_by_name_removes_the_newest_version(
    registry: Registry, tmp_path: Path
) -> None:
    path = make_base_model_dir(tmp_path)
    v1 = await registry.CreateModel(base_model("base", path))
    v2 = await registry.CreateModel(base_model("base", path))
    await registry.DeleteModel(pb.DeleteModelRequest(model="base"))
    assert (await get(registry, "base")).id == v1.id
    await expect_error(registry.GetModel(pb.GetModelRequest(model=v2.id)), NOT_FOUND)
    details = await expect_error(registry.DeleteModel(pb.DeleteModelRequest()), INVALID)
    assert details.fields == ["model"]
    details = await expect_error(
        registry.DeleteModel(pb.DeleteModelRequest(model="no-such")), NOT_FOUND
    )
    assert details.resource_info is not None
    assert details.resource_info.resource_name == "no-such"


async def test_rollback_to_a_deleted_model_is_refused(registry: Registry, tmp_path: Path) -> None:
    path = make_base_model_dir(tmp_path)
    v1 = await registry.CreateModel(base_model("base", path))
    v2 = await registry.CreateModel(base_model("base", path))
    await registry.SetModelAlias(pb.SetModelAliasRequest(model=v1.id, alias="prod"))
    await registry.SetModelAlias(pb.SetModelAliasRequest(model=v2.id, alias="prod"))
    await registry.DeleteModel(pb.DeleteModelRequest(model=v1.id))
    details = await expect_error(
        registry.RollbackModelAlias(pb.RollbackModelAliasRequest(model_name="base", alias="prod")),
        PRECONDITION,
    )
    assert details.subjects == ["base@prod"]
    assert (await get(registry, "base@prod")).id == v2.id


async def test_delete_keeps_store_files_another_model_uses(
    registry: Registry, data_dir: Path, tmp_path: Path
) -> None:
    put_tree(data_dir, make_base_model_dir(tmp_path), "models/tiny")
    v1 = await registry.CreateModel(base_model("tiny", "store://models/tiny"))
    v2 = await registry.CreateModel(base_model("tiny", "store://models/tiny"))
    assert v1.uri == v2.uri == "store://models/tiny"
    assert v1.architecture == "LlamaForCausalLM"
    await registry.DeleteModel(pb.DeleteModelRequest(model=v1.id))
    assert is_stored(data_dir, "store://models/tiny/model.safetensors")
    await registry.DeleteModel(pb.DeleteModelRequest(model=v2.id))
    assert not is_stored(data_dir, "store://models/tiny")


async def test_delete_keeps_store_files_nested_in_or_around_another_model(
    registry: Registry, data_dir: Path, tmp_path: Path
) -> None:
    outer, inner, sibling = "jobs/ftjob_1", "jobs/ftjob_1/ckpt-10", "jobs/ftjobx1/m"
    for key in (outer, inner, sibling):
        put_tree(data_dir, make_base_model_dir(tmp_path / key, key.rsplit("/", 1)[-1]), key)
    final = await registry.CreateModel(base_model("final", "store://jobs/ftjob_1"))
    checkpoint = await registry.CreateModel(base_model("ckpt", "store://jobs/ftjob_1/ckpt-10"))
    # `_` is a LIKE wildcard: `ftjobx1/m` must not count as inside `ftjob_1`.
    await registry.CreateModel(base_model("sibling", "store://jobs/ftjobx1/m"))

    await registry.DeleteModel(pb.DeleteModelRequest(model=checkpoint.id))
    assert is_stored(data_dir, f"store://{inner}/model.safetensors")
    await registry.DeleteModel(pb.DeleteModelRequest(model=final.id))
    assert not is_stored(data_dir, f"store://{outer}")
    assert is_stored(data_dir, f"store://{sibling}/model.safetensors")


# Lineage


async def test_lineage_both_ways(registry: Registry, server: ServerThread, tmp_path: Path) -> None:
    base = await registry.CreateModel(base_model("base", make_base_model_dir(tmp_path, "b")))
    teacher = await registry.CreateModel(base_model("teacher", make_base_model_dir(tmp_path, "t")))
    adapter = await registry.CreateModel(
        adapter_request("ada", make_adapter_dir(tmp_path, "a1"), "base")
    )
    continued = await registry.CreateModel(
        adapter_request("ada", make_adapter_dir(tmp_path, "a2"), base.id, parent=adapter.id)
    )
    distilled = await registry.CreateModel(
        adapter_request("student", make_adapter_dir(tmp_path, "a3"), base.id, teacher="teacher")
    )
    merged = await registry.CreateModel(
        pb.CreateModelRequest(
            model=pb.Model(
                name="ada-merged",
                kind=pb.MODEL_KIND_MERGED,
                uri=str(make_base_model_dir(tmp_path, "m")),
                origin=pb.ModelOrigin(base_model=base.id, parent_model=adapter.id),
            )
        )
    )
    await registry.SetModelAlias(pb.SetModelAliasRequest(model=adapter.id, alias="staging"))
    await registry.SetModelAlias(pb.SetModelAliasRequest(model=adapter.id, alias="production"))
    add_job(db_of(server), JobRow(id="eval-1", kind="eval", state="SUCCEEDED", model_id=adapter.id))

    lineage = await registry.GetModelLineage(pb.GetModelLineageRequest(model="ada@staging"))
    assert lineage.model.id == adapter.id
    assert list(lineage.model.aliases) == ["production", "staging"]
    assert [m.id for m in lineage.ancestors] == [base.id]
    assert [m.id for m in lineage.descendants] == [continued.id, merged.id]
    assert list(lineage.eval_runs) == ["eval-1"]
    assert [(a.model_name, a.alias, a.model) for a in lineage.aliases] == [
        ("ada", "production", adapter.id),
        ("ada", "staging", adapter.id),
    ]

    lineage = await registry.GetModelLineage(pb.GetModelLineageRequest(model=base.id))
    assert lineage.ancestors == []
    assert [m.id for m in lineage.descendants] == [
        adapter.id,
        continued.id,
        distilled.id,
        merged.id,
    ]
    assert list(lineage.aliases) == []

    lineage = await registry.GetModelLineage(pb.GetModelLineageRequest(model=continued.id))
    assert [m.id for m in lineage.ancestors] == [base.id, adapter.id]
    assert lineage.descendants == []

    lineage = await registry.GetModelLineage(pb.GetModelLineageRequest(model="student"))
    assert [m.id for m in lineage.ancestors] == [base.id, teacher.id]
    lineage = await registry.GetModelLineage(pb.GetModelLineageRequest(model="teacher"))
    assert [m.id for m in lineage.descendants] == [distilled.id]

    details = await expect_error(
        registry.GetModelLineage(pb.GetModelLineageRequest(model="no-such")), NOT_FOUND
    )
    assert details.resource_info is not None
    await expect_error(registry.GetModelLineage(pb.GetModelLineageRequest()), INVALID)


# Restart


async def test_registry_data_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = make_base_model_dir(tmp_path)
    data = jsonl([{"prompt": "Name in: Ida Holm left.", "reference": " Ida Holm"}])

    first = ServerThread(make_settings(data_dir)).start()
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            registry: Registry = RegistryServiceStub(channel)
            dataset = (await upload(registry, data, pb.DATASET_KIND_EVAL, name="kept")).dataset
            model = await registry.CreateModel(base_model("kept-model", path))
            await registry.SetModelAlias(
                pb.SetModelAliasRequest(model=model.id, alias="production", reason="ship")
            )
            template = await registry.CreatePromptTemplate(
                pb.CreatePromptTemplateRequest(
                    prompt_template=pb.PromptTemplate(template_id="extraction", template="{text}")
                )
            )
            before = await registry.ListDatasets(pb.ListDatasetsRequest())
    finally:
        first.stop()

    second = ServerThread(make_settings(data_dir)).start()
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            registry = RegistryServiceStub(channel)
            assert await registry.GetDataset(pb.GetDatasetRequest(dataset="kept")) == dataset
            again = await upload(registry, data, pb.DATASET_KIND_EVAL, name="kept")
            assert again.already_existed
            after = await registry.ListDatasets(pb.ListDatasetsRequest())
            assert after == before
            assert sorted(d.name for d in after.datasets) == [
                "demo-eval",
                "demo-preference",
                "demo-preference-test",
                "demo-sft",
                "kept",
            ]
            resolved = await get(registry, "kept-model@production")
            assert resolved.id == model.id
            assert list(resolved.aliases) == ["production"]
            history = await registry.ListAliasHistory(
                pb.ListAliasHistoryRequest(model_name="kept-model", alias="production")
            )
            assert [(m.to_model, m.reason) for m in history.moves] == [(model.id, "ship")]
            latest = await registry.GetPromptTemplate(
                pb.GetPromptTemplateRequest(template_id="extraction")
            )
            assert latest == template
            templates = await registry.ListPromptTemplates(pb.ListPromptTemplatesRequest())
            assert len(templates.prompt_templates) == 3
    finally:
        second.stop()
