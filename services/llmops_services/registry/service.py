"""RegistryService: validate, run one transaction, answer with contract messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from google.protobuf import empty_pb2, json_format
from sqlalchemy.orm import Session

from llmops.templates import placeholders, validate_template
from llmops.v1 import registry_service_pb2 as pb
from llmops.v1 import registry_service_pb2_grpc as pb_grpc
from llmops_services.context import Platform
from llmops_services.db.tables import ModelAliasRow, ModelRow
from llmops_services.errors import FieldViolation, InvalidArgument, PermissionDenied
from llmops_services.eval import promotion
from llmops_services.registry import convert, datasets, models, templates
from llmops_services.registry.names import check_slug, require
from llmops_services.runtime.context import Context, current_principal
from llmops_services.runtime.pagination import page_of
from llmops_services.runtime.server import ServiceBinding


class RegistryService(pb_grpc.RegistryServiceServicer):
    """Prompt templates, datasets, models and aliases."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.db = platform.db
        self.limits = datasets.limits_of(platform.settings)
        self.template_cache = templates.TemplateCache(platform.settings.template_cache_seconds)

    # Prompt templates

    async def ListPromptTemplates(
        self, request: pb.ListPromptTemplatesRequest, context: Context
    ) -> pb.ListPromptTemplatesResponse:
        page = page_of(request.page_size, request.page_token)
        rows = await self.db.run(lambda s: templates.list_latest(s, page))
        return pb.ListPromptTemplatesResponse(
            prompt_templates=[convert.prompt_template(r) for r in rows[: page.limit]],
            next_page_token=page.next_token(len(rows)),
        )

    async def GetPromptTemplate(
        self, request: pb.GetPromptTemplateRequest, context: Context
    ) -> pb.PromptTemplate:
        cached = self.template_cache.get(request.template_id, request.version)
        if cached is not None:  # only valid requests were ever cached
            return cached
        require("template_id", request.template_id)
        _check_version(request.version)
        row = await self.db.run(
            lambda s: templates.get_template(s, request.template_id, request.version)
        )
        message = convert.prompt_template(row)
        self.template_cache.put(message, latest=request.version == 0)
        return message

    async def ListPromptTemplateVersions(
        self, request: pb.ListPromptTemplateVersionsRequest, context: Context
    ) -> pb.ListPromptTemplateVersionsResponse:
        require("template_id", request.template_id)
        page = page_of(request.page_size, request.page_token, request.template_id)
        rows = await self.db.run(lambda s: templates.list_versions(s, request.template_id, page))
        return pb.ListPromptTemplateVersionsResponse(
            prompt_templates=[convert.prompt_template(r) for r in rows[: page.limit]],
            next_page_token=page.next_token(len(rows)),
        )

    async def CreatePromptTemplate(
        self, request: pb.CreatePromptTemplateRequest, context: Context
    ) -> pb.PromptTemplate:
        if not request.HasField("prompt_template"):
            require("prompt_template", "")
        given = request.prompt_template
        require("prompt_template.template_id", given.template_id)
        row = await self.db.run(
            lambda s: templates.create_version(
                s, given.template_id, given.template, given.description, given.task
            )
        )
        self.template_cache.invalidate(row.template_id)
        return convert.prompt_template(row)

    async def ValidatePromptTemplate(
        self, request: pb.ValidatePromptTemplateRequest, context: Context
    ) -> pb.ValidatePromptTemplateResponse:
        problems = validate_template(request.template)
        found = placeholders(request.template) if not problems else []
        return pb.ValidatePromptTemplateResponse(
            valid=not problems, problems=problems, placeholders=found
        )

    # Datasets

    async def UploadDataset(
        self,
        request_iterator: AsyncIterator[pb.UploadDatasetRequest],
        context: Context,
    ) -> pb.UploadDatasetResponse:
        settings = self.platform.settings
        upload = await datasets.receive_upload(
            request_iterator, settings.data_dir / "spool", settings.max_dataset_bytes
        )
        try:
            stats = await asyncio.to_thread(
                datasets.validate_file, upload.path, upload.kind, self.limits
            )
            row, existed = await asyncio.to_thread(
                datasets.store_dataset, self.db, self.platform.store, upload, stats
            )
        finally:
            upload.path.unlink(missing_ok=True)
        return pb.UploadDatasetResponse(dataset=convert.dataset(row), already_existed=existed)

    async def GetDataset(self, request: pb.GetDatasetRequest, context: Context) -> pb.Dataset:
        require("dataset", request.dataset)
        return convert.dataset(
            await self.db.run(lambda s: datasets.find_dataset(s, request.dataset))
        )

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: Context
    ) -> pb.ListDatasetsResponse:
        kind = convert.DATASET_KIND_NAMES.get(request.kind, "")
        page = page_of(request.page_size, request.page_token, kind)
        rows = await self.db.run(lambda s: datasets.list_datasets(s, kind, page))
        return pb.ListDatasetsResponse(
            datasets=[convert.dataset(r) for r in rows[: page.limit]],
            next_page_token=page.next_token(len(rows)),
        )

    async def DeleteDataset(
        self, request: pb.DeleteDatasetRequest, context: Context
    ) -> empty_pb2.Empty:
        require("dataset", request.dataset)
        uri = await self.db.run(lambda s: datasets.delete_dataset(s, request.dataset))
        if uri:
            self.platform.store.delete(uri)
        return empty_pb2.Empty()

    # Models

    async def CreateModel(self, request: pb.CreateModelRequest, context: Context) -> pb.Model:
        if not request.HasField("model"):
            require("model", "")
        given = request.model
        require("model.name", given.name)
        kind = convert.MODEL_KIND_NAMES.get(given.kind, "")
        if not kind:
            raise InvalidArgument(
                "model.kind is required",
                violations=[FieldViolation("model.kind", "must be BASE, ADAPTER or MERGED")],
            )
        if given.trust_remote_code and (principal := current_principal()).role != "admin":
            # the model's own code would run in every worker and Inference process that loads it
            raise PermissionDenied(
                f"only an admin may register a model with trust_remote_code; key "
                f"{principal.key_id} is {principal.role}"
            )
        origin = given.origin
        lineage: dict[str, object] = {
            "dataset_id": origin.dataset or None,
            "dataset_sha256": origin.dataset_sha256,
            "method": origin.method,
            "hyperparameters": json_format.MessageToDict(origin.hyperparameters),
            "training_job_id": origin.training_job,
            "merge_job_id": origin.merge_job,
            "attempt": origin.attempt,
            "checkpoint_step": origin.checkpoint_step,
            "template_id": origin.template_id,
            "template_version": origin.template_version,
        }

        def work(session: Session) -> pb.Model:
            if origin.dataset and not origin.dataset.startswith("ds-"):
                # a dataset named by its name is recorded by id, with its hash when not given
                dataset = datasets.find_dataset(session, origin.dataset)
                lineage["dataset_id"] = dataset.id
                lineage["dataset_sha256"] = origin.dataset_sha256 or dataset.sha256
            row = models.create_model(
                session,
                self.platform.store,
                name=given.name,
                kind=kind,
                uri=given.uri,
                description=given.description,
                base_model=origin.base_model,
                parent_model=origin.parent_model,
                teacher_model=origin.teacher_model,
                lineage=lineage,
                metrics=dict(given.metrics),
                idempotency_key=request.idempotency_key,
                trust_remote_code=given.trust_remote_code,
            )
            return self._model(session, row)

        return await self.db.run(work)

    def _model(self, session: Session, row: ModelRow) -> pb.Model:
        return convert.model(row, models.aliases_of(session, [row.id])[row.id])

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.Model:
        require("model", request.model)
        return await self.db.run(lambda s: self._model(s, models.find_model(s, request.model)))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        kind = convert.MODEL_KIND_NAMES.get(request.kind, "")
        page = page_of(
            request.page_size, request.page_token, kind, request.name, request.base_model
        )

        def work(session: Session) -> pb.ListModelsResponse:
            rows = models.list_models(session, kind, request.name, request.base_model, page)
            shown = rows[: page.limit]
            aliases = models.aliases_of(session, [r.id for r in shown])
            return pb.ListModelsResponse(
                models=[convert.model(r, aliases[r.id]) for r in shown],
                next_page_token=page.next_token(len(rows)),
            )

        return await self.db.run(work)

    async def DeleteModel(
        self, request: pb.DeleteModelRequest, context: Context
    ) -> empty_pb2.Empty:
        require("model", request.model)
        uri = await self.db.run(lambda s: models.delete_model(s, request.model))
        if uri:
            self.platform.store.delete(uri)
        return empty_pb2.Empty()

    async def SetModelAlias(
        self, request: pb.SetModelAliasRequest, context: Context
    ) -> pb.ModelAlias:
        require("model", request.model)
        require("alias", request.alias)
        principal = current_principal()

        def work(session: Session) -> ModelAliasRow:
            check_slug("alias", request.alias)
            model = models.find_model(session, request.model)
            allowed = promotion.check_move(
                self.platform, session, model, request.alias, request.force, principal
            )
            return models.set_alias(
                session,
                model.id,
                request.alias,
                principal.key_id,
                request.reason,
                forced=allowed.forced,
                eval_run=allowed.eval_run,
            )

        return convert.model_alias(await self.db.run(work))

    async def DeleteModelAlias(
        self, request: pb.DeleteModelAliasRequest, context: Context
    ) -> empty_pb2.Empty:
        require("model_name", request.model_name)
        require("alias", request.alias)
        principal = current_principal()
        if request.alias in self.platform.settings.protected_aliases and principal.role != "admin":
            # taking a protected alias needs a passing gate or an admin; removing it (and so
            # what `name@production` serves) is no lighter a change
            raise PermissionDenied(
                f"only an admin may delete the protected alias {request.alias!r}; key "
                f"{principal.key_id} is {principal.role}"
            )
        await self.db.run(
            lambda s: models.delete_alias(s, request.model_name, request.alias, principal.key_id)
        )
        return empty_pb2.Empty()

    async def ListModelAliases(
        self, request: pb.ListModelAliasesRequest, context: Context
    ) -> pb.ListModelAliasesResponse:
        page = page_of(request.page_size, request.page_token, request.model_name)
        rows = await self.db.run(lambda s: models.list_aliases(s, request.model_name, page))
        return pb.ListModelAliasesResponse(
            aliases=[convert.model_alias(r) for r in rows[: page.limit]],
            next_page_token=page.next_token(len(rows)),
        )

    async def ListAliasHistory(
        self, request: pb.ListAliasHistoryRequest, context: Context
    ) -> pb.ListAliasHistoryResponse:
        require("model_name", request.model_name)
        require("alias", request.alias)
        page = page_of(request.page_size, request.page_token, request.model_name, request.alias)
        rows = await self.db.run(
            lambda s: models.alias_history(s, request.model_name, request.alias, page)
        )
        return pb.ListAliasHistoryResponse(
            moves=[convert.alias_move(r) for r in rows[: page.limit]],
            next_page_token=page.next_token(len(rows)),
        )

    async def RollbackModelAlias(
        self, request: pb.RollbackModelAliasRequest, context: Context
    ) -> pb.ModelAlias:
        require("model_name", request.model_name)
        require("alias", request.alias)
        principal = current_principal()
        reason = request.reason or "rollback"

        def work(session: Session) -> pb.ModelAlias:
            target = models.rollback_target(session, request.model_name, request.alias)
            allowed = promotion.check_move(
                self.platform,
                session,
                models.find_model(session, target),
                request.alias,
                request.force,
                principal,
            )
            return convert.model_alias(
                models.set_alias(
                    session,
                    target,
                    request.alias,
                    principal.key_id,
                    reason,
                    forced=allowed.forced,
                    eval_run=allowed.eval_run,
                )
            )

        return await self.db.run(work)

    async def GetModelLineage(
        self, request: pb.GetModelLineageRequest, context: Context
    ) -> pb.ModelLineage:
        require("model", request.model)

        def work(session: Session) -> pb.ModelLineage:
            root = models.find_model(session, request.model)
            ancestors, descendants, evals = models.lineage(session, root)
            everyone = [root, *ancestors, *descendants]
            aliases = models.aliases_of(session, [r.id for r in everyone])
            pointers = models.list_aliases_of_model(session, root.id)
            return pb.ModelLineage(
                model=convert.model(root, aliases[root.id]),
                ancestors=[convert.model(r, aliases[r.id]) for r in ancestors],
                descendants=[convert.model(r, aliases[r.id]) for r in descendants],
                eval_runs=evals,
                aliases=[convert.model_alias(p) for p in pointers],
            )

        return await self.db.run(work)


def _check_version(version: int) -> None:
    if version < 0:
        raise InvalidArgument(
            "version must not be negative", violations=[FieldViolation("version", "must be >= 0")]
        )


def binding(platform: Platform) -> ServiceBinding:
    """How to host the registry on a server."""
    servicer = RegistryService(platform)
    return ServiceBinding(
        full_name=pb.DESCRIPTOR.services_by_name["RegistryService"].full_name,
        add_to_server=lambda server: pb_grpc.add_RegistryServiceServicer_to_server(
            servicer, server
        ),
    )
