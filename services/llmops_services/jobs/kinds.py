"""The kinds of job. One queue, one table and one state machine serve them all; a kind says only
what differs: its ids, its name in errors, and the worker function that runs it.

A new kind is one member here plus its runner in `llmops_workers.runners`.
"""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    """A kind of job, stored as its value in `jobs.kind`."""

    id_prefix: str
    """What its ids start with (`ftjob-…`)."""
    resource_type: str
    """How errors name it (`NOT_FOUND` details)."""

    TRAINING = ("training", "ftjob", "training_job")
    EVAL = ("eval", "eval", "eval_run")
    MERGE = ("merge", "merge", "merge_job")

    def __new__(cls, value: str, id_prefix: str, resource_type: str) -> JobKind:
        member = str.__new__(cls, value)
        member._value_ = value
        member.id_prefix = id_prefix
        member.resource_type = resource_type
        return member

    @classmethod
    def named(cls, value: str) -> JobKind:
        """The kind stored as `value` in `jobs.kind`."""
        for kind in cls:
            if kind.value == value:
                return kind
        raise ValueError(f"unknown job kind {value!r}")

    @property
    def function(self) -> str:
        """The arq function a worker registers for this kind (`run_training_job`)."""
        return f"run_{self.value}_job"
