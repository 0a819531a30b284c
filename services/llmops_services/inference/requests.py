"""Generate's checks and resolution: sampling in range, the prompt (verbatim or rendered into a
template), and the model reference resolved through the Registry on every request."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from llmops.templates import render
from llmops.v1 import inference_service_pb2 as pb
from llmops_services.artifacts import STORE_SCHEME, ArtifactStore, UnsafeKey
from llmops_services.db.tables import ModelAliasRow, ModelRow
from llmops_services.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
)
from llmops_services.inference.engine import ChatTurn, ModelFiles, Sampling
from llmops_services.registry import models, templates
from llmops_services.settings import Settings

DEFAULT_MAX_NEW_TOKENS = 64
MAX_TEMPERATURE = 2.0
MAX_STOPS = 8
MAX_STOP_CHARS = 256
MAX_TOP_K = 1000
MAX_REPETITION_PENALTY = 2.0
MAX_CHOICES = 8
MAX_MESSAGES = 256
CHAT_ROLES = ("system", "user", "assistant")
DEFAULT_ALIAS = "production"
_OTHER_KINDS = re.compile(r"^(ds|ftjob|eval|merge)-[0-9a-f]{12}$")
_KIND_NAMES = {
    "ds": "a dataset",
    "ftjob": "a training job",
    "eval": "an eval run",
    "merge": "a merge job",
}


@dataclass(frozen=True)
class Generation:
    """A checked request: sampling with defaults filled in, its stop strings, and how many
    answers it wants."""

    sampling: Sampling
    stop: tuple[str, ...]
    n: int = 1

    def for_choice(self, index: int) -> Sampling:
        """Answer `index`'s sampling: a seeded request samples answer i with seed + i."""
        if self.sampling.seed is None or index == 0:
            return self.sampling
        return dataclasses.replace(self.sampling, seed=self.sampling.seed + index)


@dataclass(frozen=True)
class Target:
    """The model a reference resolved to (its id) and the files to serve it from."""

    model_id: str
    files: ModelFiles


def check_sampling(given: pb.SamplingParams, settings: Settings, prefix: str = "") -> Generation:
    """Sampling with defaults for unset (zero) values; every value out of range is named."""
    field = f"{prefix}sampling."
    limit = settings.inference_max_new_tokens
    problems = []
    if not 0 <= given.max_new_tokens <= limit:
        problems.append(
            FieldViolation(f"{field}max_new_tokens", f"must be 1..{limit} (0 means 64)")
        )
    if not 0 <= given.temperature <= MAX_TEMPERATURE:
        problems.append(
            FieldViolation(f"{field}temperature", f"must be 0..{MAX_TEMPERATURE:g} (0 is greedy)")
        )
    if not 0 <= given.top_p <= 1:
        problems.append(FieldViolation(f"{field}top_p", "must be in (0, 1] (0 means 1)"))
    if not 0 <= given.top_k <= MAX_TOP_K:
        problems.append(FieldViolation(f"{field}top_k", f"must be 0..{MAX_TOP_K} (0 is no cut)"))
    if not 0 <= given.repetition_penalty <= MAX_REPETITION_PENALTY:
        problems.append(
            FieldViolation(
                f"{field}repetition_penalty",
                f"must be in (0, {MAX_REPETITION_PENALTY:g}] (0 means 1, no penalty)",
            )
        )
    if not 0 <= given.n <= MAX_CHOICES:
        problems.append(FieldViolation(f"{field}n", f"must be 1..{MAX_CHOICES} (0 means 1)"))
    if len(given.stop) > MAX_STOPS:
        problems.append(FieldViolation(f"{field}stop", f"at most {MAX_STOPS} stop strings"))
    for index, stop in enumerate(given.stop):
        if not 1 <= len(stop) <= MAX_STOP_CHARS:
            problems.append(
                FieldViolation(f"{field}stop[{index}]", f"must be 1..{MAX_STOP_CHARS} characters")
            )
    if problems:
        raise InvalidArgument("sampling settings out of range", violations=problems)
    sampling = Sampling(
        max_new_tokens=given.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        temperature=given.temperature,
        top_p=given.top_p or 1.0,
        top_k=given.top_k,
        repetition_penalty=given.repetition_penalty or 1.0,
        seed=given.seed or None,
    )
    return Generation(sampling=sampling, stop=tuple(given.stop), n=given.n or 1)


def chat_of(request: pb.GenerateRequest, prefix: str = "") -> list[ChatTurn] | None:
    """The request's conversation when it gives `messages` (checked), else None; a request
    with messages must not also give a prompt, template or text."""
    if not request.messages:
        return None
    field = f"{prefix}messages"
    problems = [
        FieldViolation(f"{prefix}{other}", "not with messages")
        for other in ("prompt", "template_id", "text")
        if getattr(request, other)
    ]
    if len(request.messages) > MAX_MESSAGES:
        problems.append(FieldViolation(field, f"at most {MAX_MESSAGES} messages"))
    for index, message in enumerate(request.messages):
        if message.role not in CHAT_ROLES:
            problems.append(
                FieldViolation(f"{field}[{index}].role", f"must be one of {', '.join(CHAT_ROLES)}")
            )
    if problems:
        raise InvalidArgument(
            "give messages, or a prompt or template, not both; roles are " + ", ".join(CHAT_ROLES),
            violations=problems,
        )
    return [ChatTurn(role=m.role, content=m.content) for m in request.messages]


def prompt_of(session: Session, request: pb.GenerateRequest, prefix: str = "") -> str:
    """The prompt as the model gets it: `prompt` verbatim, or `text` (else `prompt`) rendered
    into the template's `{text}`."""
    if not request.template_id:
        if request.text:
            raise InvalidArgument(
                "text is rendered into a template; give template_id too",
                violations=[FieldViolation(f"{prefix}template_id", "required with text")],
            )
        if not request.prompt:
            raise InvalidArgument(
                "give a prompt, or a template_id with text",
                violations=[FieldViolation(f"{prefix}prompt", "required without template_id")],
            )
        return request.prompt
    if request.text and request.prompt:
        raise InvalidArgument(
            "with a template, give text or prompt for its {text}, not both",
            violations=[FieldViolation(f"{prefix}prompt", "not with both template_id and text")],
        )
    filling = request.text or request.prompt
    if not filling:
        raise InvalidArgument(
            "a template needs the text for its {text}",
            violations=[FieldViolation(f"{prefix}text", "required with template_id")],
        )
    row = templates.get_template(session, request.template_id, request.template_version)
    return render(row.template, filling)


def _default_reference(session: Session, settings: Settings) -> str:
    name = settings.inference_default_model
    if session.get(ModelAliasRow, (name, DEFAULT_ALIAS)) is not None:
        return f"{name}@{DEFAULT_ALIAS}"
    return name


def _local_dir(store: ArtifactStore, row: ModelRow, field: str) -> Path:
    """Where a model's files are on this machine."""
    uri = row.uri
    try:
        if uri.startswith(STORE_SCHEME):
            return store.local_path(uri)
    except UnsafeKey as exc:
        raise FailedPrecondition(
            f"model {row.id}'s files are not servable here: {exc}",
            violations=[PreconditionViolation("MODEL_FILES", f"models/{row.id}", str(exc))],
        ) from exc
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" in uri:
        raise FailedPrecondition(
            f"model {row.id} is stored at a remote URL ({uri}), which this engine does not load",
            violations=[
                PreconditionViolation("MODEL_FILES", f"models/{row.id}", f"remote; from {field}")
            ],
        )
    return Path(uri)


def resolve(
    session: Session, store: ArtifactStore, settings: Settings, ref: str, prefix: str = ""
) -> Target:
    """The model a reference names (id, name or `name@alias`; empty means the default), and
    what to load for it: an adapter is served on its base, a base or merged model alone."""
    field = f"{prefix}model"
    other = _OTHER_KINDS.match(ref)
    if other:
        raise InvalidArgument(
            f"{ref} is {_KIND_NAMES[other.group(1)]}, not a model",
            violations=[FieldViolation(field, "must be a model id, name or name@alias")],
        )
    row = models.find_model(session, ref or _default_reference(session, settings))
    if row.kind != "adapter":
        files = ModelFiles(
            base_id=row.id,
            base_dir=_local_dir(store, row, field),
            base_name=row.name,
            trust_remote_code=row.trust_remote_code,
        )
        return Target(model_id=row.id, files=files)
    base = session.get(ModelRow, row.base_model_id) if row.base_model_id else None
    if base is None:
        raise FailedPrecondition(
            f"adapter {row.id} has no base model to serve it on",
            violations=[PreconditionViolation("NO_BASE", f"models/{row.id}", "base is missing")],
        )
    files = ModelFiles(
        base_id=base.id,
        base_dir=_local_dir(store, base, field),
        base_name=base.name,
        adapter_id=row.id,
        adapter_dir=_local_dir(store, row, field),
        adapter_bytes=row.size_bytes,
        trust_remote_code=base.trust_remote_code,
    )
    return Target(model_id=row.id, files=files)


def check_prompt_length(
    prompt_tokens: int,
    context_length: int,
    sampling: Sampling,
    prefix: str = "",
    source: str = "prompt",
) -> Sampling:
    """Refuses an empty prompt or one over the model's context; caps max_new_tokens at what
    the context leaves (the answer then ends with LENGTH). `source` names the request field
    the prompt came from (`prompt`, `text` or `messages`)."""
    field = f"{prefix}{source}"
    if prompt_tokens == 0:
        raise InvalidArgument(
            "the prompt is empty", violations=[FieldViolation(field, "must not be empty")]
        )
    if prompt_tokens >= context_length:
        raise InvalidArgument(
            f"the prompt has {prompt_tokens} tokens; the model takes at most "
            f"{context_length - 1} so that it can answer (context {context_length})",
            violations=[
                FieldViolation(
                    field,
                    f"{prompt_tokens} tokens; at most {context_length - 1} "
                    f"(the model's context is {context_length} tokens)",
                )
            ],
        )
    room = context_length - prompt_tokens
    if sampling.max_new_tokens <= room:
        return sampling
    return dataclasses.replace(sampling, max_new_tokens=room)
