"""Python SDK for LLM Customization Ops: `Client`, `AsyncClient` and typed errors.

Exports load lazily, so `import llmops.templates` (which the servers use) and the generated
`llmops.v1` stubs do not pull in the whole client (nor importlib.metadata for `__version__`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmops._channel import request_id_scope
    from llmops._jobs import (
        AsyncEvalRunHandle,
        AsyncJobHandle,
        AsyncMergeJobHandle,
        AsyncTrainingJobHandle,
        EvalRunHandle,
        JobHandle,
        MergeJobHandle,
        TrainingJobHandle,
    )
    from llmops._version import __version__
    from llmops.async_client import AsyncClient
    from llmops.client import Client
    from llmops.errors import (
        Aborted,
        AlreadyExists,
        Cancelled,
        DeadlineExceeded,
        ErrorInfo,
        FailedPrecondition,
        FieldViolation,
        Internal,
        InvalidArgument,
        LlmopsError,
        NotFound,
        PermissionDenied,
        PreconditionViolation,
        ResourceExhausted,
        ResourceInfo,
        Unauthenticated,
        Unavailable,
        Unimplemented,
        from_rpc_error,
    )
    from llmops.settings import ClientSettings

_EXPORTS = {
    "__version__": "llmops._version",
    "Client": "llmops.client",
    "AsyncClient": "llmops.async_client",
    "ClientSettings": "llmops.settings",
    "request_id_scope": "llmops._channel",
    **{
        name: "llmops._jobs"
        for name in (
            "AsyncEvalRunHandle",
            "AsyncJobHandle",
            "AsyncMergeJobHandle",
            "AsyncTrainingJobHandle",
            "EvalRunHandle",
            "JobHandle",
            "MergeJobHandle",
            "TrainingJobHandle",
        )
    },
    **{
        name: "llmops.errors"
        for name in (
            "Aborted",
            "AlreadyExists",
            "Cancelled",
            "DeadlineExceeded",
            "ErrorInfo",
            "FailedPrecondition",
            "FieldViolation",
            "Internal",
            "InvalidArgument",
            "LlmopsError",
            "NotFound",
            "PermissionDenied",
            "PreconditionViolation",
            "ResourceExhausted",
            "ResourceInfo",
            "Unauthenticated",
            "Unavailable",
            "Unimplemented",
            "from_rpc_error",
        )
    },
}

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "AsyncEvalRunHandle",
    "AsyncJobHandle",
    "AsyncMergeJobHandle",
    "AsyncTrainingJobHandle",
    "Cancelled",
    "Client",
    "ClientSettings",
    "DeadlineExceeded",
    "ErrorInfo",
    "EvalRunHandle",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "JobHandle",
    "LlmopsError",
    "MergeJobHandle",
    "NotFound",
    "PermissionDenied",
    "PreconditionViolation",
    "ResourceExhausted",
    "ResourceInfo",
    "TrainingJobHandle",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "__version__",
    "from_rpc_error",
    "request_id_scope",
]


def __getattr__(name: str) -> Any:
    """Imports an export on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmops' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
