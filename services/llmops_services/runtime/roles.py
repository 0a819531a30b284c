"""The least role each RPC needs, written out method by method: the one place to read or change
who may call what. Roles rank `reader` < `writer` < `admin` (`auth.ROLES`).

- `reader`: reads, lists, watches, validation, comparison and generation.
- `writer`: every change (create, update, upload, register, merge, cancel, pause, resume, setting,
  rolling back or deleting an alias).
- `admin`: deleting a model or a dataset, which loses lineage that other models, jobs and eval
  runs depend on (as MLflow's registry asks for MANAGE to delete a registered model); forcing a
  protected alias move is checked by the promotion gate itself (`eval/promotion.py`), and
  registering a model with `trust_remote_code` by `RegistryService.CreateModel` itself.

Every RPC of the `llmops.v1` services must have a row: the server refuses to start with one that
has none (`calls.resolve_role`), so a new RPC cannot be served before someone decides its role.
Health and reflection stay open and are not listed. docs/security.md shows this table with each
RPC's REST route (`scripts/gen_security_table.py` writes it; a unit test fails when it is stale).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

PACKAGE: Final = "llmops.v1"
"""The package whose every RPC must be in METHOD_ROLES."""

TABLE_MODULE: Final = "services/llmops_services/runtime/roles.py"

# Sorted by service, then method (tests/unit/test_roles_table.py checks the order and that the
# rows are exactly the RPCs of the contract).
METHOD_ROLES: Final[Mapping[str, str]] = MappingProxyType(
    {
        # EvalService
        "/llmops.v1.EvalService/CancelEvalRun": "writer",
        "/llmops.v1.EvalService/CompareEvalRuns": "reader",
        "/llmops.v1.EvalService/CreateEvalRun": "writer",
        "/llmops.v1.EvalService/GetEvalRun": "reader",
        "/llmops.v1.EvalService/ListEvalRunEvents": "reader",
        "/llmops.v1.EvalService/ListEvalRuns": "reader",
        "/llmops.v1.EvalService/WatchEvalRun": "reader",
        # InferenceService
        "/llmops.v1.InferenceService/Generate": "reader",
        "/llmops.v1.InferenceService/ListServedModels": "reader",
        "/llmops.v1.InferenceService/StreamGenerate": "reader",
        # RegistryService
        "/llmops.v1.RegistryService/CreateModel": "writer",
        "/llmops.v1.RegistryService/CreatePromptTemplate": "writer",
        "/llmops.v1.RegistryService/DeleteDataset": "admin",
        "/llmops.v1.RegistryService/DeleteModel": "admin",
        "/llmops.v1.RegistryService/DeleteModelAlias": "writer",
        "/llmops.v1.RegistryService/GetDataset": "reader",
        "/llmops.v1.RegistryService/GetModel": "reader",
        "/llmops.v1.RegistryService/GetModelLineage": "reader",
        "/llmops.v1.RegistryService/GetPromptTemplate": "reader",
        "/llmops.v1.RegistryService/ListAliasHistory": "reader",
        "/llmops.v1.RegistryService/ListDatasets": "reader",
        "/llmops.v1.RegistryService/ListModelAliases": "reader",
        "/llmops.v1.RegistryService/ListModels": "reader",
        "/llmops.v1.RegistryService/ListPromptTemplateVersions": "reader",
        "/llmops.v1.RegistryService/ListPromptTemplates": "reader",
        "/llmops.v1.RegistryService/RollbackModelAlias": "writer",
        "/llmops.v1.RegistryService/SetModelAlias": "writer",
        "/llmops.v1.RegistryService/UploadDataset": "writer",
        "/llmops.v1.RegistryService/ValidatePromptTemplate": "reader",
        # TrainingService
        "/llmops.v1.TrainingService/CancelMergeJob": "writer",
        "/llmops.v1.TrainingService/CancelTrainingJob": "writer",
        "/llmops.v1.TrainingService/CreateTrainingJob": "writer",
        "/llmops.v1.TrainingService/GetMergeJob": "reader",
        "/llmops.v1.TrainingService/GetTrainingJob": "reader",
        "/llmops.v1.TrainingService/ListMergeJobEvents": "reader",
        "/llmops.v1.TrainingService/ListMergeJobs": "reader",
        "/llmops.v1.TrainingService/ListTrainingJobCheckpoints": "reader",
        "/llmops.v1.TrainingService/ListTrainingJobEvents": "reader",
        "/llmops.v1.TrainingService/ListTrainingJobs": "reader",
        "/llmops.v1.TrainingService/MergeAdapter": "writer",
        "/llmops.v1.TrainingService/PauseTrainingJob": "writer",
        "/llmops.v1.TrainingService/RegisterCheckpoint": "writer",
        "/llmops.v1.TrainingService/ResumeTrainingJob": "writer",
        "/llmops.v1.TrainingService/WatchMergeJob": "reader",
        "/llmops.v1.TrainingService/WatchTrainingJob": "reader",
    }
)


class MissingRoleError(LookupError):
    """An RPC of the `llmops.v1` services without a row in METHOD_ROLES."""

    def __init__(self, method: str) -> None:
        super().__init__(
            f"RPC {method} has no role in METHOD_ROLES ({TABLE_MODULE}): add a row for it "
            "(reader, writer or admin) before it can be served, then run "
            "scripts/gen_security_table.py to update docs/security.md"
        )
        self.method = method
