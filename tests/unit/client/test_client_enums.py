"""Short enum names, hyperparameter dicts and the shared request builders."""

from __future__ import annotations

import pytest

from llmops import _requests as req
from llmops import enums
from llmops.hyperparameters import hyperparameter_names, hyperparameters_from_dict
from llmops.v1 import (
    inference_service_pb2,
    jobs_pb2,
    registry_service_pb2,
    training_service_pb2,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sft", training_service_pb2.TRAINING_METHOD_SFT),
        ("qlora", training_service_pb2.TRAINING_METHOD_QLORA),
        ("dpo", training_service_pb2.TRAINING_METHOD_DPO),
        ("distill", training_service_pb2.TRAINING_METHOD_DISTILL),
        ("SFT", training_service_pb2.TRAINING_METHOD_SFT),
        (" Dpo ", training_service_pb2.TRAINING_METHOD_DPO),
        ("TRAINING_METHOD_QLORA", training_service_pb2.TRAINING_METHOD_QLORA),
    ],
)
def test_training_method(value: str, expected: int) -> None:
    assert enums.training_method(value) == expected


def test_model_and_dataset_kinds() -> None:
    assert enums.model_kind("base") == registry_service_pb2.MODEL_KIND_BASE
    assert enums.model_kind("adapter") == registry_service_pb2.MODEL_KIND_ADAPTER
    assert enums.model_kind("merged") == registry_service_pb2.MODEL_KIND_MERGED
    assert enums.dataset_kind("sft") == registry_service_pb2.DATASET_KIND_SFT
    assert enums.dataset_kind("preference") == registry_service_pb2.DATASET_KIND_PREFERENCE
    assert enums.dataset_kind("eval") == registry_service_pb2.DATASET_KIND_EVAL


def test_job_states_and_others() -> None:
    expected = {
        "queued": jobs_pb2.JOB_STATE_QUEUED,
        "running": jobs_pb2.JOB_STATE_RUNNING,
        "succeeded": jobs_pb2.JOB_STATE_SUCCEEDED,
        "failed": jobs_pb2.JOB_STATE_FAILED,
        "cancelling": jobs_pb2.JOB_STATE_CANCELLING,
        "cancelled": jobs_pb2.JOB_STATE_CANCELLED,
        "paused": jobs_pb2.JOB_STATE_PAUSED,
    }
    assert {name: enums.job_state(name) for name in expected} == expected
    assert enums.job_event_type("state-changed") == jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED
    assert enums.finish_reason("length") == inference_service_pb2.FINISH_REASON_LENGTH


@pytest.mark.parametrize("value", ["lora", "", "unspecified", "TRAINING_METHOD_UNSPECIFIED"])
def test_unknown_values_list_the_choices(value: str) -> None:
    with pytest.raises(ValueError) as info:
        enums.training_method(value)
    assert str(info.value) == (
        f"unknown training method {value!r}; choose one of: sft, qlora, dpo, distill"
    )


def test_choices_and_short_names() -> None:
    assert enums.choices("model_kind") == ["base", "adapter", "merged"]
    assert enums.choices("dataset_kind") == ["sft", "preference", "eval"]
    assert enums.short_name("MODEL_KIND_ADAPTER") == "adapter"
    assert enums.short_name("JOB_STATE_UNSPECIFIED") == ""
    assert enums.short_name("plain text") == "plain text"


# Hyperparameters


def test_hyperparameters_from_dict() -> None:
    hp = hyperparameters_from_dict(
        {
            "learning_rate": 2e-4,
            "max_steps": 300,
            "lora_r": 16,
            "target_modules": ["q_proj", "v_proj"],
            "packing": True,
            "lr_scheduler_type": "cosine",
            "seed": None,
            "beta": "auto",
        }
    )
    assert hp.learning_rate == pytest.approx(2e-4)
    assert hp.max_steps == 300
    assert hp.lora_r == 16
    assert list(hp.target_modules) == ["q_proj", "v_proj"]
    assert hp.packing is True
    assert hp.lr_scheduler_type == "cosine"
    assert not hp.HasField("seed")  # None leaves it to the platform
    assert not hp.HasField("beta")  # so does "auto"
    assert not hp.HasField("lora_alpha")


def test_hyperparameters_from_text() -> None:
    hp = hyperparameters_from_dict(
        {"learning_rate": "1e-4", "max_steps": "10", "packing": "false", "target_modules": "a, b"}
    )
    assert hp.learning_rate == pytest.approx(1e-4)
    assert hp.max_steps == 10
    assert hp.HasField("packing") and hp.packing is False
    assert list(hp.target_modules) == ["a", "b"]


def test_empty_hyperparameters() -> None:
    assert hyperparameters_from_dict(None) == training_service_pb2.Hyperparameters()
    assert hyperparameters_from_dict({}) == training_service_pb2.Hyperparameters()


def test_unknown_hyperparameter_names_the_key_and_a_suggestion() -> None:
    with pytest.raises(ValueError) as info:
        hyperparameters_from_dict({"learnig_rate": 1e-4, "max_steps": 5})
    message = str(info.value)
    assert message.startswith(
        "unknown hyperparameter 'learnig_rate' (did you mean 'learning_rate'?); known: "
    )
    assert "max_steps" in message


def test_several_unknown_hyperparameters() -> None:
    with pytest.raises(ValueError, match=r"unknown hyperparameters 'foo', 'bar'"):
        hyperparameters_from_dict({"foo": 1, "bar": 2})


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"max_steps": "many"}, "max_steps"),
        ({"max_steps": 1.5}, "max_steps"),
        ({"lora_r": True}, "lora_r"),
        ({"packing": "maybe"}, "packing"),
        ({"learning_rate": [1]}, "learning_rate"),
    ],
)
def test_wrong_hyperparameter_types(values: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=f"^hyperparameter {key}="):
        hyperparameters_from_dict(values)


def test_hyperparameter_names_follow_the_contract() -> None:
    names = hyperparameter_names()
    assert names[0] == "learning_rate"
    assert {"max_steps", "lora_r", "lora_alpha", "beta", "temperature", "seed"} <= set(names)


# Request builders (shared by Client and AsyncClient)


def _training(**overrides: object) -> training_service_pb2.CreateTrainingJobRequest:
    args: dict[str, object] = {
        "method": "sft",
        "base_model": "llmops-tiny",
        "dataset": "demo-sft",
        "template_id": "extraction",
        "template_version": 0,
        "hyperparameters": {"max_steps": 300},
        "validation_dataset": "",
        "teacher_model": "",
        "output_name": "",
        "idempotency_key": "run-1",
        "parent_model": "",
    }
    args.update(overrides)
    return req.create_training_job(**args)  # type: ignore[arg-type]


def test_create_training_job_request() -> None:
    request = _training()
    assert request.method == training_service_pb2.TRAINING_METHOD_SFT
    assert request.base_model == "llmops-tiny"
    assert request.hyperparameters.max_steps == 300
    assert request.idempotency_key == "run-1"


def test_create_training_job_checks_locally() -> None:
    with pytest.raises(ValueError, match="unknown hyperparameter 'steps'"):
        _training(hyperparameters={"steps": 3})
    with pytest.raises(ValueError, match="unknown training method 'ppo'"):
        _training(method="ppo")
    with pytest.raises(ValueError, match="teacher_model is required"):
        _training(method="distill")
    with pytest.raises(ValueError, match="dataset is required"):
        _training(dataset="")
    assert _training(method="distill", teacher_model="big").teacher_model == "big"


def test_hyperparameters_message_passes_through() -> None:
    hp = training_service_pb2.Hyperparameters(lora_r=4)
    assert _training(hyperparameters=hp).hyperparameters.lora_r == 4


def test_list_filters() -> None:
    assert req.list_datasets(None, 0, "").kind == registry_service_pb2.DATASET_KIND_UNSPECIFIED
    assert req.list_datasets("eval", 10, "t").kind == registry_service_pb2.DATASET_KIND_EVAL
    models = req.list_models("adapter", "extractor", None, 0, "")
    assert models.kind == registry_service_pb2.MODEL_KIND_ADAPTER
    assert models.name == "extractor"
    jobs = req.list_training_jobs("running", "dpo", 0, "")
    assert jobs.state == jobs_pb2.JOB_STATE_RUNNING
    assert jobs.method == training_service_pb2.TRAINING_METHOD_DPO
    with pytest.raises(ValueError, match="unknown job state 'done'"):
        req.list_eval_runs(None, "done", 0, "")


def test_create_model_request() -> None:
    request = req.create_model(
        name="tiny",
        uri="/models/tiny",
        kind="adapter",
        description="d",
        base_model="mdl-1",
        origin=None,
        metrics={"loss": 0.5},
        idempotency_key="k",
    )
    assert request.model.kind == registry_service_pb2.MODEL_KIND_ADAPTER
    assert request.model.origin.base_model == "mdl-1"
    assert dict(request.model.metrics) == {"loss": 0.5}
    with pytest.raises(ValueError, match="unknown model kind 'lora'"):
        req.create_model(
            name="x",
            uri="u",
            kind="lora",
            description="",
            base_model="",
            origin=None,
            metrics=None,
            idempotency_key="",
        )


def test_generate_request() -> None:
    request = req.generate(
        model="m",
        template_id="extraction",
        text="Ada lives in London.",
        sampling={
            "max_new_tokens": 16,
            "top_k": 5,
            "repetition_penalty": 1.2,
            "n": 2,
            "stop": ["\n"],
        },
    )
    assert request.template_id == "extraction"
    assert request.sampling.max_new_tokens == 16
    assert (request.sampling.top_k, request.sampling.repetition_penalty) == (5, 1.2)
    assert request.sampling.n == 2
    assert list(request.sampling.stop) == ["\n"]
    with pytest.raises(ValueError, match="give a prompt"):
        req.generate(model="", sampling={})
    with pytest.raises(ValueError, match="give template_id too"):
        req.generate(model="", text="x", sampling={})


def test_chat_request_takes_dicts_pairs_and_messages() -> None:
    message = inference_service_pb2.ChatMessage(role="assistant", content="Hi.")
    messages: req.ChatMessages = [
        {"role": "system", "content": "Be brief."},
        ("user", "Hello"),
        message,
    ]
    request = req.generate(model="m", messages=messages, sampling={})
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief."),
        ("user", "Hello"),
        ("assistant", "Hi."),
    ]
    with pytest.raises(ValueError, match="not both"):
        req.generate(model="m", prompt="x", messages=messages, sampling={})


def test_upload_metadata_and_chunk_size() -> None:
    first = req.upload_metadata("preference", "prefs", "d")
    assert first.WhichOneof("payload") == "metadata"
    assert first.metadata.kind == registry_service_pb2.DATASET_KIND_PREFERENCE
    assert req.chunk_message(b"ab").WhichOneof("payload") == "chunk"
    with pytest.raises(ValueError, match="unknown dataset kind 'chat'"):
        req.upload_metadata("chat", "", "")
    with pytest.raises(ValueError, match="chunk_size"):
        req.check_chunk_size(0)
