"""Registering a job's checkpoint as a model.

A checkpoint directory holds what resuming needs (optimizer and scheduler state, RNG state, the
trainer's state), most of it pickles. A registered model must hold safetensors weights and
plain configuration only, so the weights, configs and tokenizer files are copied into a model
directory of their own and the rest stays with the job.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from llmops_services.artifacts import ArtifactStore, safe_key
from llmops_services.db.tables import CheckpointRow, DatasetRow, JobRow, ModelRow
from llmops_services.errors import NotFound
from llmops_services.jobs.store import checkpoints_of
from llmops_services.registry import models

# What a model directory may carry: weights as safetensors, JSON configs, tokenizer files.
_KEPT_SUFFIXES = (".safetensors", ".json", ".jinja", ".txt", ".model")
_JOB_STATE_FILES = ("trainer_state.json",)


def find_checkpoint(session: Session, job: JobRow, step: int) -> CheckpointRow:
    """The job's checkpoint of `step`, or NOT_FOUND naming the steps there are."""
    row = session.get(CheckpointRow, (job.id, step))
    if row is None:
        steps = [c.step for c in checkpoints_of(session, job.id)]
        there = ", ".join(map(str, steps)) if steps else "none yet"
        raise NotFound(
            f"job {job.id} has no checkpoint at step {step} (checkpoints: {there})",
            resource_type="checkpoint",
            resource_name=f"trainingJobs/{job.id}/checkpoints/{step}",
        )
    return row


def model_key(job_id: str, step: int) -> str:
    """Where the model directory of a checkpoint goes in the store."""
    return safe_key("models", "checkpoints", job_id, f"step-{step}")


def copy_model_files(source_uri: str, store: ArtifactStore, key: str) -> None:
    """Copies the publishable files of the checkpoint at `source_uri` under `key` (weights can
    be gigabytes: the caller runs this outside any transaction and off the event loop)."""
    source = store.local_path(source_uri)
    for path in sorted(source.iterdir()):
        if path.is_file() and path.suffix in _KEPT_SUFFIXES and path.name not in _JOB_STATE_FILES:
            store.put_file(path, f"{key}/{path.name}")


def register(
    session: Session, store: ArtifactStore, job: JobRow, step: int, output_name: str
) -> ModelRow:
    """Registers the checkpoint, its files already copied by `copy_model_files`, as a model
    with lineage to its job and step; the same checkpoint again gives the same model."""
    checkpoint = find_checkpoint(session, job, step)
    key = model_key(job.id, step)
    adapter = store.exists(f"{key}/adapter_config.json")
    dataset = session.get(DatasetRow, job.dataset_id)
    row = models.create_model(
        session,
        store,
        name=output_name or job.output_name,
        kind="adapter" if adapter else "merged",
        uri=store.uri(key),
        description=f"{job.method} checkpoint of {job.id} at step {step}",
        base_model=job.model_id,
        parent_model=job.parent_model_id,
        teacher_model=job.teacher_model_id,
        lineage={
            "dataset_id": job.dataset_id or None,
            "dataset_sha256": dataset.sha256 if dataset is not None else "",
            "method": job.method,
            "hyperparameters": dict(job.resolved_hyperparameters),
            "training_job_id": job.id,
            "attempt": checkpoint.attempt,
            "checkpoint_step": step,
            "template_id": job.template_id,
            "template_version": job.template_version,
        },
        metrics={k: float(v) for k, v in checkpoint.metrics.items()},
        idempotency_key=f"checkpoint:{job.id}:{step}",
    )
    checkpoint.registered_model_id = row.id
    return row
