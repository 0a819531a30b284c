"""What a worker runs for each kind of job once it claimed an attempt: one entry per `JobKind`.
A new kind adds its attempt body here (see `runner.AttemptBody`); the worker registers an arq
function for every entry."""

from __future__ import annotations

from llmops_services.jobs.kinds import JobKind
from llmops_workers.eval_runner import eval_attempt
from llmops_workers.merge_runner import merge_attempt
from llmops_workers.runner import AttemptBody, training_attempt

RUNNERS: dict[JobKind, AttemptBody] = {
    JobKind.TRAINING: training_attempt,
    JobKind.EVAL: eval_attempt,
    JobKind.MERGE: merge_attempt,
}
