"""Short lowercase names for the contract's enums ("sft", "adapter", "queued", ...).

Users type `method="sft"`, not `TRAINING_METHOD_SFT`; this module is the one mapping both ways,
so the SDK, the CLI and error messages agree on the spelling.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmops.v1 import inference_service_pb2, jobs_pb2, registry_service_pb2, training_service_pb2

__all__ = [
    "choices",
    "dataset_kind",
    "distributed_strategy",
    "finish_reason",
    "job_event_type",
    "job_state",
    "model_kind",
    "short_name",
    "training_method",
]

_PREFIXES = {
    "training_method": "TRAINING_METHOD_",
    "model_kind": "MODEL_KIND_",
    "dataset_kind": "DATASET_KIND_",
    "job_state": "JOB_STATE_",
    "job_event_type": "JOB_EVENT_TYPE_",
    "finish_reason": "FINISH_REASON_",
    "distributed_strategy": "DISTRIBUTED_STRATEGY_",
}

_NAMES: dict[str, list[str]] = {
    "training_method": list(training_service_pb2.TrainingMethod.keys()),
    "model_kind": list(registry_service_pb2.ModelKind.keys()),
    "dataset_kind": list(registry_service_pb2.DatasetKind.keys()),
    "job_state": list(jobs_pb2.JobState.keys()),
    "job_event_type": list(jobs_pb2.JobEventType.keys()),
    "finish_reason": list(inference_service_pb2.FinishReason.keys()),
    "distributed_strategy": list(training_service_pb2.DistributedStrategy.keys()),
}


def choices(kind: str) -> list[str]:
    """The short names an enum accepts, for example `choices("model_kind")`."""
    prefix = _PREFIXES[kind]
    return [name[len(prefix) :].lower() for name in _NAMES[kind] if name != prefix + "UNSPECIFIED"]


def _full_name(kind: str, value: str, what: str) -> str:
    """The proto name for a short or full spelling; ValueError listing the choices otherwise."""
    prefix = _PREFIXES[kind]
    if isinstance(value, str):
        key = value.strip().upper().replace("-", "_")
        for candidate in (prefix + key, key):
            if candidate in _NAMES[kind] and candidate != prefix + "UNSPECIFIED":
                return candidate
    raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(choices(kind))}")


def training_method(value: str) -> training_service_pb2.TrainingMethod.ValueType:
    """`"sft" | "qlora" | "dpo" | "distill"` to `TrainingMethod`."""
    return training_service_pb2.TrainingMethod.Value(
        _full_name("training_method", value, "training method")
    )


def distributed_strategy(value: str) -> training_service_pb2.DistributedStrategy.ValueType:
    """`"ddp" | "fsdp"` to `DistributedStrategy`; "" leaves it unspecified (DDP)."""
    if value == "":
        return training_service_pb2.DISTRIBUTED_STRATEGY_UNSPECIFIED
    return training_service_pb2.DistributedStrategy.Value(
        _full_name("distributed_strategy", value, "distributed strategy")
    )


def model_kind(value: str) -> registry_service_pb2.ModelKind.ValueType:
    """`"base" | "adapter" | "merged"` to `ModelKind`."""
    return registry_service_pb2.ModelKind.Value(_full_name("model_kind", value, "model kind"))


def dataset_kind(value: str) -> registry_service_pb2.DatasetKind.ValueType:
    """`"sft" | "preference" | "eval"` to `DatasetKind`."""
    return registry_service_pb2.DatasetKind.Value(_full_name("dataset_kind", value, "dataset kind"))


def job_state(value: str) -> jobs_pb2.JobState.ValueType:
    """`"queued" | "running" | "succeeded" | ...` to `JobState`."""
    return jobs_pb2.JobState.Value(_full_name("job_state", value, "job state"))


def job_event_type(value: str) -> jobs_pb2.JobEventType.ValueType:
    """`"state_changed" | "metrics" | "checkpoint" | "message"` to `JobEventType`."""
    return jobs_pb2.JobEventType.Value(_full_name("job_event_type", value, "job event type"))


def finish_reason(value: str) -> inference_service_pb2.FinishReason.ValueType:
    """`"stop" | "length"` to `FinishReason`."""
    return inference_service_pb2.FinishReason.Value(
        _full_name("finish_reason", value, "finish reason")
    )


def short_name(name: str, prefixes: Iterable[str] = _PREFIXES.values()) -> str:
    """`MODEL_KIND_ADAPTER` to `adapter`: the display form of a proto enum name.

    Names with no known prefix come back unchanged; `*_UNSPECIFIED` becomes an empty string.
    """
    for prefix in prefixes:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            return "" if rest == "UNSPECIFIED" else rest.lower()
    return name
