"""The eval loop: batches of examples through the model, events between batches, the report at
the end. Imports torch; `run_eval` imports this module only when called.

Loading, generation and teacher-forced scoring are the model package's (`llmops_ml`), and
answers come from the serving engine's step loop (`generation.generate_continuous`), so the
gates judge what is served; this module maps an eval spec onto them.

Batches follow the file's order and may mix generation examples and preference pairs. A
generation example is one row of its batch's decoding (a row leaves when its answer ends) and
one teacher-forced forward for its reference's loss; a preference pair costs one forward for
chosen and rejected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
import transformers

from llmops_ml import generation, loading, scoring
from llmops_ml.loading import LoadedModel
from llmops_ml.sampling import Sampling
from llmops_workers.engines.data import render_prompt
from llmops_workers.engines.runtime import engine_runtime
from llmops_workers.evaluation.examples import Example, limited, load_examples
from llmops_workers.evaluation.metrics import (
    GenerationRecord,
    PreferenceRecord,
    Record,
    aggregate,
    classification_labels,
    score_answer,
)
from llmops_workers.evaluation.report import RunInfo, write_report
from llmops_workers.evaluation.spec import EvalEvents, EvalResult, EvalSpec

__all__ = ["evaluate_batch", "run"]

log = logging.getLogger("llmops.eval")


def _prompt(example: Example, template: str | None) -> str:
    """The prompt rendered exactly as training renders it."""
    return render_prompt({"prompt": example.prompt}, template)


def _sampling(spec: EvalSpec) -> Sampling:
    """The spec's decoding: greedy for temperature 0, else nucleus sampling (no top-k cut)."""
    return Sampling(
        max_new_tokens=spec.max_new_tokens, temperature=spec.temperature, top_p=spec.top_p
    )


def _generation_records(
    lm: LoadedModel, spec: EvalSpec, batch: Sequence[Example], labels: frozenset[str]
) -> list[Record]:
    prompts = [_prompt(example, spec.template) for example in batch]
    # Sampled: example i draws from seed + i, whatever the batch size.
    seeds = [spec.seed + example.index for example in batch] if spec.temperature > 0 else None
    predictions = generation.generate_continuous(lm, prompts, _sampling(spec), seeds=seeds)
    sequences = [
        scoring.encode(lm.tokenizer, prompt, [example.reference])[0]
        for prompt, example in zip(prompts, batch, strict=True)
    ]
    losses = scoring.sequence_logprobs(lm, sequences, spec.batch_size)
    return [
        GenerationRecord(
            example=example,
            prompt=prompt,
            prediction=prediction,
            score=score_answer(example.task, prediction, example.reference, labels),
            nll=-logprob,
            tokens=tokens,
        )
        for example, prompt, prediction, (logprob, tokens) in zip(
            batch, prompts, predictions, losses, strict=True
        )
    ]


def _preference_records(lm: LoadedModel, spec: EvalSpec, batch: Sequence[Example]) -> list[Record]:
    prompts = [_prompt(example, spec.template) for example in batch]
    sequences = [
        sequence
        for prompt, example in zip(prompts, batch, strict=True)
        for sequence in scoring.encode(lm.tokenizer, prompt, [example.chosen, example.rejected])
    ]
    scores = scoring.sequence_logprobs(lm, sequences, spec.batch_size)
    return [
        PreferenceRecord(
            example=example,
            prompt=prompt,
            chosen_logprob=scores[2 * i][0],
            rejected_logprob=scores[2 * i + 1][0],
            chosen_tokens=scores[2 * i][1],
            rejected_tokens=scores[2 * i + 1][1],
        )
        for i, (example, prompt) in enumerate(zip(batch, prompts, strict=True))
    ]


def evaluate_batch(
    lm: LoadedModel, spec: EvalSpec, batch: Sequence[Example], labels: frozenset[str]
) -> list[Record]:
    """The records of one batch, in the batch's order."""
    generation = [example for example in batch if not example.is_preference]
    preference = [example for example in batch if example.is_preference]
    records: list[Record] = []
    if generation:
        records += _generation_records(lm, spec, generation, labels)
    if preference:
        records += _preference_records(lm, spec, preference)
    return sorted(records, key=lambda record: record.example.index)


def _progress(records: Sequence[Record]) -> dict[str, float]:
    return {f"{m.task}/{m.metric}": m.value for m in aggregate(records)}


def run(spec: EvalSpec, events: EvalEvents) -> EvalResult:
    """Evaluates the spec's examples batch by batch, then writes the report (see `run_eval`)."""
    started = time.perf_counter()
    every = load_examples(spec)
    labels = classification_labels(every)
    examples = limited(every, spec.limit)
    records: list[Record] = []
    with engine_runtime(spec.threads), torch.inference_mode():
        lm = loading.load_for_inference(
            spec.model_dir, spec.adapter_dir, trust_remote_code=spec.trust_remote_code
        )
        log.info("evaluating %s on %s (%s)", spec.model_dir, lm.device, lm.dtype)
        transformers.set_seed(spec.seed)
        loaded = time.perf_counter()
        events.on_start(len(examples))
        for first in range(0, len(examples), spec.batch_size):
            if events.should_stop():
                log.info("eval cancelled after %d of %d examples", len(records), len(examples))
                return EvalResult("cancelled", aggregate(records), len(records))
            batch = examples[first : first + spec.batch_size]
            records += evaluate_batch(lm, spec, batch, labels)
            events.on_progress(len(records), len(examples), _progress(records))
    finished = time.perf_counter()
    metrics = aggregate(records)
    info = RunInfo(
        device=lm.device.type,
        dtype=lm.dtype,
        load_seconds=loaded - started,
        eval_seconds=finished - loaded,
        classification_labels=sorted(labels),
    )
    paths = write_report(spec, records, metrics, info)
    log.info("eval completed: %d examples in %.1f s", len(records), info.wall_seconds)
    return EvalResult(
        status="completed",
        metrics=metrics,
        examples=len(records),
        summary_path=paths.summary,
        examples_path=paths.examples,
        markdown_path=paths.markdown,
    )
