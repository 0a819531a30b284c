"""Models, their versions by name, aliases with history, and lineage both ways."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from llmops.tiny_models import BUILD_COMMAND, TINY_MODEL_NAMES
from llmops_services.artifacts import STORE_SCHEME, ArtifactStore, UnsafeKey
from llmops_services.db.tables import AliasMoveRow, JobRow, ModelAliasRow, ModelRow, utcnow
from llmops_services.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from llmops_services.registry.datasets import ACTIVE_JOB_STATES
from llmops_services.registry.names import check_name, check_slug, new_id
from llmops_services.runtime.pagination import Page

_MODEL_ID = re.compile(r"^mdl-[0-9a-f]{12}$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt")
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors",)
MAX_LORA_RANK = 1024
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_.]{1,128}$")


def find_model(session: Session, ref: str) -> ModelRow:
    """A model by id, by name (its newest version) or by `name@alias`."""
    row: ModelRow | None = None
    if _MODEL_ID.match(ref):
        row = session.get(ModelRow, ref)
    elif "@" in ref:
        name, _, alias = ref.partition("@")
        pointer = session.get(ModelAliasRow, (name, alias))
        row = session.get(ModelRow, pointer.model_id) if pointer else None
    else:
        row = session.scalars(
            select(ModelRow).where(ModelRow.name == ref).order_by(ModelRow.version.desc()).limit(1)
        ).first()
    if row is None:
        name = ref.partition("@")[0]
        hint = f"; build it with `{BUILD_COMMAND}`" if name in TINY_MODEL_NAMES else ""
        raise NotFound(f"model {ref!r} not found{hint}", resource_type="model", resource_name=ref)
    return row


def aliases_of(session: Session, model_ids: Iterable[str]) -> dict[str, list[str]]:
    """The aliases pointing at each of `model_ids`."""
    ids = list(model_ids)
    found: dict[str, list[str]] = {model_id: [] for model_id in ids}
    if ids:
        rows = session.scalars(select(ModelAliasRow).where(ModelAliasRow.model_id.in_(ids))).all()
        for row in rows:
            found[row.model_id].append(row.alias)
    return found


def _inspect_local_dir(
    field: str, path: Path, kind: str, *, trust_remote_code: bool
) -> tuple[str, str, int]:
    """Checks a local model directory; returns architecture, tokenizer sha256 and weight bytes.

    A model that ships code (an `auto_map` in its config.json) is accepted only when it is
    registered with `trust_remote_code`, which only an admin may set (`RegistryService`)."""
    if not path.is_dir():
        raise InvalidArgument(
            f"{path} is not a directory", violations=[FieldViolation(field, "no such directory")]
        )
    marker = "adapter_config.json" if kind == "adapter" else "config.json"
    if not (path / marker).is_file():
        raise InvalidArgument(
            f"{path} has no {marker}",
            violations=[FieldViolation(field, f"a {kind} model directory needs {marker}")],
        )
    weights = sorted(path.glob("*.safetensors"))
    expected = ADAPTER_WEIGHTS if kind == "adapter" else MODEL_WEIGHTS
    if not any((path / name).is_file() for name in expected):
        raise InvalidArgument(
            f"{path} has no {' or '.join(expected)}",
            violations=[
                FieldViolation(
                    field,
                    f"needs {' or '.join(expected)}: only safetensors weights are loaded, never "
                    "pickles (*.bin, *.pt)",
                )
            ],
        )
    config = _json_object(field, path / marker)
    architecture = ""
    if kind == "adapter":
        _check_adapter_config(field, path, config)
    else:
        architecture = str((config.get("architectures") or [""])[0])
        if "auto_map" in config and not trust_remote_code:
            raise InvalidArgument(
                f"{path}/config.json names code of its own (auto_map), which runs when the model "
                "loads: an admin must register it with trust_remote_code set",
                violations=[
                    FieldViolation(
                        "model.trust_remote_code",
                        "a model that ships code needs trust_remote_code, set by an admin",
                    )
                ],
            )
    digest = hashlib.sha256()
    tokenizer_found = False
    for name in _TOKENIZER_FILES:
        candidate = path / name
        if candidate.is_file():
            tokenizer_found = True
            digest.update(name.encode())
            digest.update(candidate.read_bytes())
    tokenizer = digest.hexdigest() if tokenizer_found else ""
    return architecture, tokenizer, sum(w.stat().st_size for w in weights)


def _json_object(field: str, file: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(
            f"{file} is not valid JSON",
            violations=[FieldViolation(field, f"{file.name} must be a JSON object")],
        ) from exc
    if not isinstance(loaded, dict):
        raise InvalidArgument(
            f"{file} is not a JSON object",
            violations=[FieldViolation(field, f"{file.name} must be a JSON object")],
        )
    return loaded


def _check_adapter_config(field: str, path: Path, config: dict[str, Any]) -> None:
    """What the engines can serve and train on: a LoRA adapter of a sane rank whose target
    modules are names (not patterns that could match anything: regexes are refused)."""
    problems: list[str] = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type must be LORA, not {config.get('peft_type')!r}")
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= MAX_LORA_RANK:
        problems.append(f"r (the LoRA rank) must be an integer in 1..{MAX_LORA_RANK}")
    alpha = config.get("lora_alpha", 8)
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not 0 < alpha <= 1e6:
        problems.append("lora_alpha must be a positive number")
    targets = config.get("target_modules")
    names_ok = isinstance(targets, list) and 0 < len(targets) <= 64
    if names_ok and isinstance(targets, list):
        names_ok = all(isinstance(t, str) and _MODULE_NAME.match(t) for t in targets)
    if targets != "all-linear" and not names_ok:
        problems.append(
            'target_modules must be "all-linear" or a list of up to 64 module names '
            "(letters, digits, _ and .)"
        )
    if problems:
        raise InvalidArgument(
            f"{path}/adapter_config.json is not an adapter this platform serves: "
            + "; ".join(problems),
            violations=[FieldViolation(field, problem) for problem in problems],
        )


def _local_dir(uri: str, store: ArtifactStore) -> Path | None:
    """The local directory behind a URI, or None for a remote URL (not inspected)."""
    if uri.startswith(STORE_SCHEME):
        try:
            return store.local_path(uri)
        except UnsafeKey as exc:
            raise InvalidArgument(
                str(exc), violations=[FieldViolation("model.uri", "not a valid artifact URI")]
            ) from exc
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" in uri:
        return None
    return Path(uri).expanduser().resolve()


def create_model(
    session: Session,
    store: ArtifactStore,
    *,
    name: str,
    kind: str,
    uri: str,
    description: str,
    base_model: str,
    parent_model: str,
    teacher_model: str,
    lineage: dict[str, object],
    metrics: dict[str, float],
    idempotency_key: str,
    trust_remote_code: bool = False,
) -> ModelRow:
    """Registers the next version of `name`, after checking its files and references.

    `trust_remote_code` (the caller checked that an admin asked for it) is refused on an
    adapter, which carries no code and always takes its base model's setting; a merged model
    of a trusted base is trusted too."""
    if idempotency_key:
        earlier = session.scalars(
            select(ModelRow).where(ModelRow.idempotency_key == idempotency_key)
        ).first()
        if earlier is not None:
            return earlier
    check_name("model.name", name)
    if not uri:
        raise InvalidArgument(
            "model.uri is required", violations=[FieldViolation("model.uri", "required")]
        )
    if kind == "adapter" and not base_model:
        raise InvalidArgument(
            "an adapter needs its base model",
            violations=[FieldViolation("model.origin.base_model", "required for adapters")],
        )
    references: dict[str, str | None] = {}
    for field, ref in (
        ("model.origin.base_model", base_model),
        ("model.origin.parent_model", parent_model),
        ("model.origin.teacher_model", teacher_model),
    ):
        references[field] = find_model(session, ref).id if ref else None
    base = session.get(ModelRow, references["model.origin.base_model"] or "")
    if kind == "adapter" and trust_remote_code:
        raise InvalidArgument(
            "an adapter carries no code: it loads with its base model's trust_remote_code",
            violations=[
                FieldViolation("model.trust_remote_code", "not set on adapters; set on the base")
            ],
        )
    if kind != "base" and base is not None:
        trust_remote_code = trust_remote_code or base.trust_remote_code
    local = _local_dir(uri, store)
    architecture, tokenizer, size = "", "", 0
    if local is not None:
        architecture, tokenizer, size = _inspect_local_dir(
            "model.uri", local, kind, trust_remote_code=trust_remote_code
        )
        if not uri.startswith(STORE_SCHEME):
            uri = str(local)
    lock_name(session, name)
    version = (
        session.scalar(select(func.max(ModelRow.version)).where(ModelRow.name == name)) or 0
    ) + 1
    row = ModelRow(
        id=new_id("mdl"),
        name=name,
        version=version,
        kind=kind,
        description=description,
        uri=uri,
        base_model_id=references["model.origin.base_model"],
        parent_model_id=references["model.origin.parent_model"],
        teacher_model_id=references["model.origin.teacher_model"],
        metrics=metrics,
        architecture=architecture,
        tokenizer_sha256=tokenizer,
        size_bytes=size,
        trust_remote_code=trust_remote_code,
        idempotency_key=idempotency_key or None,
        **lineage,
    )
    if kind == "adapter" and not row.tokenizer_sha256 and base is not None:
        row.tokenizer_sha256 = base.tokenizer_sha256
    session.add(row)
    session.flush()
    return row


def list_models(
    session: Session, kind: str, name: str, base_model: str, page: Page
) -> list[ModelRow]:
    """Models, newest first, with optional filters."""
    query = select(ModelRow)
    if kind:
        query = query.where(ModelRow.kind == kind)
    if name:
        query = query.where(ModelRow.name == name)
    if base_model:
        query = query.where(ModelRow.base_model_id.in_(_base_ids(session, base_model)))
    query = query.order_by(ModelRow.create_time.desc(), ModelRow.version.desc(), ModelRow.id)
    return list(session.scalars(query.offset(page.offset).limit(page.limit + 1)).all())


def _base_ids(session: Session, ref: str) -> list[str]:
    """The models a `base_model` filter means: a bare name means every version of that name
    (models trained on `llmops-tiny` v1 are still trained on `llmops-tiny`); an id or
    `name@alias` means that one model."""
    if _MODEL_ID.match(ref) or "@" in ref:
        return [find_model(session, ref).id]
    ids = list(session.scalars(select(ModelRow.id).where(ModelRow.name == ref)).all())
    return ids or [find_model(session, ref).id]  # NOT_FOUND when there is none


def delete_model(session: Session, ref: str) -> str:
    """Deletes a model unless an alias, another model or an unfinished job depends on it.

    Returns the artifact-store URI whose files go with it: "" when its files are not in the store
    or when another model's files are, or lie inside, or enclose them.
    """
    row = find_model(session, ref)
    blockers: list[PreconditionViolation] = []
    for pointer in session.scalars(select(ModelAliasRow).where(ModelAliasRow.model_id == row.id)):
        blockers.append(
            PreconditionViolation(
                "ALIAS", f"{pointer.model_name}@{pointer.alias}", "alias points at it"
            )
        )
    dependents = session.scalars(
        select(ModelRow.id).where(
            or_(
                ModelRow.base_model_id == row.id,
                ModelRow.parent_model_id == row.id,
                ModelRow.teacher_model_id == row.id,
            )
        )
    ).all()
    blockers += [
        PreconditionViolation("DEPENDENT_MODEL", f"models/{d}", "built on it") for d in dependents
    ]
    jobs = session.scalars(
        select(JobRow.id).where(
            or_(JobRow.model_id == row.id, JobRow.teacher_model_id == row.id),
            JobRow.state.in_(ACTIVE_JOB_STATES),
        )
    ).all()
    blockers += [PreconditionViolation("IN_USE", f"jobs/{j}", "job uses it") for j in jobs]
    if blockers:
        raise FailedPrecondition(
            f"model {row.id} ({row.name} v{row.version}) is still depended on: "
            + ", ".join(b.subject for b in blockers),
            violations=blockers,
        )
    session.delete(row)
    return _own_store_uri(session, row)


def _own_store_uri(session: Session, row: ModelRow) -> str:
    """The model's store URI if no other model's files are there, inside it or around it."""
    if not row.uri.startswith(STORE_SCHEME):
        return ""
    parts = row.uri[len(STORE_SCHEME) :].split("/")
    enclosing = [STORE_SCHEME + "/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    overlapping = session.scalars(
        select(ModelRow.id)
        .where(
            ModelRow.id != row.id,
            or_(
                ModelRow.uri.in_(enclosing),
                ModelRow.uri.startswith(row.uri + "/", autoescape=True),
            ),
        )
        .limit(1)
    ).first()
    return "" if overlapping else row.uri


def set_alias(
    session: Session,
    model_ref: str,
    alias: str,
    actor: str,
    reason: str,
    forced: bool = False,
    eval_run: str = "",
) -> ModelAliasRow:
    """Points `<model name>@alias` at the model and records the move."""
    check_slug("alias", alias)
    row = find_model(session, model_ref)
    lock_name(session, row.name)
    pointer = session.get(ModelAliasRow, (row.name, alias), populate_existing=True)
    previous = pointer.model_id if pointer else ""
    if pointer is not None and pointer.model_id == row.id:
        return pointer
    if pointer is None:
        pointer = ModelAliasRow(model_name=row.name, alias=alias, model_id=row.id, updated_by=actor)
        session.add(pointer)
    else:
        pointer.model_id = row.id
        pointer.update_time = utcnow()
        pointer.updated_by = actor
    session.add(
        AliasMoveRow(
            model_name=row.name,
            alias=alias,
            from_model=previous,
            to_model=row.id,
            actor=actor,
            reason=reason,
            forced=forced,
            eval_run=eval_run,
        )
    )
    session.flush()
    return pointer


def lock_name(session: Session, model_name: str) -> None:
    """Takes the lock that orders the changes to one model name, its new versions and its alias
    moves: the rows of its versions, in id order (so two callers never wait on each other
    crosswise), until the transaction ends.

    A move reads where the alias points and records `from -> to`; two replicas moving it at once
    on PostgreSQL would both read the same `from`, and the history would fork. A registration
    reads the highest version and takes the next. With the lock each sees the one before it
    (the first version of a new name, with no row to lock yet, is settled by the database's
    retry of the loser, `Database.run_sync`). SQLite (one writer at a time) ignores the clause."""
    session.execute(
        select(ModelRow.id)
        .where(ModelRow.name == model_name)
        .order_by(ModelRow.id)
        .with_for_update()
    )


def delete_alias(session: Session, model_name: str, alias: str, actor: str) -> None:
    """Removes an alias and records the move."""
    lock_name(session, model_name)
    pointer = session.get(ModelAliasRow, (model_name, alias), populate_existing=True)
    if pointer is None:
        raise NotFound(
            f"alias {model_name}@{alias} not found",
            resource_type="model_alias",
            resource_name=f"{model_name}@{alias}",
        )
    session.add(
        AliasMoveRow(
            model_name=model_name,
            alias=alias,
            from_model=pointer.model_id,
            to_model="",
            actor=actor,
        )
    )
    session.delete(pointer)


def list_aliases(session: Session, model_name: str, page: Page) -> list[ModelAliasRow]:
    """Aliases by model name and alias."""
    query = select(ModelAliasRow)
    if model_name:
        query = query.where(ModelAliasRow.model_name == model_name)
    query = query.order_by(ModelAliasRow.model_name, ModelAliasRow.alias)
    return list(session.scalars(query.offset(page.offset).limit(page.limit + 1)).all())


def alias_history(session: Session, model_name: str, alias: str, page: Page) -> list[AliasMoveRow]:
    """Moves of one alias, newest first."""
    query = (
        select(AliasMoveRow)
        .where(AliasMoveRow.model_name == model_name, AliasMoveRow.alias == alias)
        .order_by(AliasMoveRow.id.desc())
    )
    return list(session.scalars(query.offset(page.offset).limit(page.limit + 1)).all())


def rollback_target(session: Session, model_name: str, alias: str) -> str:
    """The model the alias pointed at before its last move."""
    lock_name(session, model_name)
    last = session.scalars(
        select(AliasMoveRow)
        .where(AliasMoveRow.model_name == model_name, AliasMoveRow.alias == alias)
        .order_by(AliasMoveRow.id.desc())
        .limit(1)
    ).first()
    if last is None:
        raise NotFound(
            f"alias {model_name}@{alias} has no history",
            resource_type="model_alias",
            resource_name=f"{model_name}@{alias}",
        )
    if not last.from_model or session.get(ModelRow, last.from_model) is None:
        raise FailedPrecondition(
            f"alias {model_name}@{alias} has no earlier model to roll back to",
            violations=[
                PreconditionViolation("NO_PREVIOUS", f"{model_name}@{alias}", "no earlier model")
            ],
        )
    return last.from_model


def lineage(session: Session, root: ModelRow) -> tuple[list[ModelRow], list[ModelRow], list[str]]:
    """Ancestors (nearest first), descendants (breadth first) and eval runs of a model."""
    ancestors: list[ModelRow] = []
    seen = {root.id}
    frontier = [root]
    while frontier:
        parents: list[ModelRow] = []
        for row in frontier:
            for ref in (row.base_model_id, row.parent_model_id, row.teacher_model_id):
                if ref and ref not in seen and (found := session.get(ModelRow, ref)) is not None:
                    seen.add(ref)
                    parents.append(found)
        ancestors += parents
        frontier = parents
    descendants: list[ModelRow] = []
    frontier_ids = [root.id]
    seen_down = {root.id}
    while frontier_ids:
        children = session.scalars(
            select(ModelRow)
            .where(
                or_(
                    ModelRow.base_model_id.in_(frontier_ids),
                    ModelRow.parent_model_id.in_(frontier_ids),
                    ModelRow.teacher_model_id.in_(frontier_ids),
                )
            )
            .order_by(ModelRow.create_time)
        ).all()
        fresh = [c for c in children if c.id not in seen_down]
        seen_down.update(c.id for c in fresh)
        descendants += fresh
        frontier_ids = [c.id for c in fresh]
    evals = session.scalars(
        select(JobRow.id)
        .where(JobRow.kind == "eval", JobRow.model_id == root.id)
        .order_by(JobRow.create_time)
    ).all()
    return ancestors, descendants, list(evals)


def list_aliases_of_model(session: Session, model_id: str) -> list[ModelAliasRow]:
    """The alias rows pointing at one model."""
    return list(
        session.scalars(
            select(ModelAliasRow)
            .where(ModelAliasRow.model_id == model_id)
            .order_by(ModelAliasRow.model_name, ModelAliasRow.alias)
        ).all()
    )
