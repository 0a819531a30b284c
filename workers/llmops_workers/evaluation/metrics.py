"""How an answer is scored, and how per-example scores become per-task metrics. Pure Python.

Scores per task (unknown tasks, and "default", are scored like extraction):

- summarization, `rougeL_f1`: the F1 of ROUGE-L from Google's `rouge-score` (Porter stemming,
  its own lowercasing tokenizer) between the whole answer and the reference. The answer is not
  cut: a model that rambles on after its sentence loses precision, as it should.
- extraction, `exact_match`: the normalized answer equals the normalized reference.
- classification, `accuracy`: the normalized answer starts with the label (its first word is the
  label, or its first words for a label of several words), and it names no other label of the
  file after it, nor starts with a longer label. "sports." and "sports, as the text is about a
  match" are right; "sports, technology, food or travel" is wrong even when the label is sports,
  so a model cannot score by listing every label. The labels are the distinct normalized
  references of the file's classification rows (all of them, whatever the run's `limit`).

Normalization, applied to answer and reference alike:

1. keep the first non-empty line (models keep generating past the answer);
2. lowercase, and collapse every run of whitespace into one space;
3. strip punctuation, quotes and dashes (ASCII and typographic) from both ends.

So `' "Clara Turing."\\nThe lawyer'` and `'Clara  Turing'` both become `clara turing`. Punctuation
inside the answer is kept ("u.s" stays "u.s"), and so is every word: "Dr. Clara Turing" does not
match "Clara Turing". Words for classification are split on whitespace, each stripped of
punctuation at its ends.

Generation examples also carry the summed negative log-likelihood of their reference tokens
(see `engine`); per task, `loss` is that sum over the task's tokens divided by their count (a
token-weighted mean, as a Trainer's `eval_loss` is) and `perplexity` is `exp(loss)`.

Preference pairs carry the model's summed log-probabilities of `chosen` and `rejected` given the
prompt. `preference_accuracy` is the fraction of pairs where chosen's exceeds rejected's
(strictly: a tie is not a preference) and `reward_margin` the mean of chosen's minus rejected's,
in nats. Both are the policy's own preference: DPO's implicit reward
`beta * (log pi(y|x) - log pi_ref(y|x))` without the reference term (and with beta = 1). An eval
run has one model and no reference, and the question "did DPO raise preference accuracy?" is
answered by evaluating the base and the adapter with this same measure: the reference term would
make the base's margin zero by construction and say nothing about what either model prefers.

The `all` task pools each metric over every task that reports it: accuracy-like scores are the
mean over the pooled examples, `loss` the token-weighted mean over every generation example and
`perplexity` its exp. A metric only one task reports gets an `all` row equal to that task's, so
`all/<metric>` exists for every metric of a run.
"""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llmops_workers.evaluation.examples import Example
from llmops_workers.evaluation.spec import AGGREGATE_TASK, TaskMetric

__all__ = [
    "TASK_METRICS",
    "GenerationRecord",
    "PreferenceRecord",
    "Record",
    "aggregate",
    "classification_correct",
    "classification_labels",
    "normalize",
    "rouge_l_f1",
    "score_answer",
    "task_metric",
]

TASK_METRICS: dict[str, str] = {
    "summarization": "rougeL_f1",
    "classification": "accuracy",
    "extraction": "exact_match",
}
"""The quality metric of each known task; any other task is scored by exact match."""
_EDGE = string.punctuation + string.whitespace + "\u2018\u2019\u201c\u201d\u00ab\u00bb\u2013\u2014"
"""Stripped from the ends of a normalized answer: ASCII punctuation, typographic quotes and
dashes, whitespace."""


def task_metric(task: str) -> str:
    """The name of the metric that scores `task`'s answers."""
    return TASK_METRICS.get(task, "exact_match")


def normalize(text: str) -> str:
    """The first non-empty line, lowercased, whitespace collapsed, punctuation stripped at ends."""
    first_line = text.strip().split("\n", 1)[0]
    return " ".join(first_line.lower().split()).strip(_EDGE)


def _words(text: str) -> list[str]:
    """The words of a normalized text, each stripped of punctuation at its ends."""
    return [word for word in (w.strip(_EDGE) for w in text.split()) if word]


def _contains(words: Sequence[str], phrase: Sequence[str]) -> bool:
    """Whether `phrase` occurs in `words` as consecutive whole words."""
    width = len(phrase)
    return any(list(words[i : i + width]) == list(phrase) for i in range(len(words) - width + 1))


def classification_labels(examples: Iterable[Example]) -> frozenset[str]:
    """The label set of a file: the distinct normalized references of its classification rows."""
    return frozenset(
        normalize(example.reference) for example in examples if example.task == "classification"
    )


def classification_correct(answer: str, label: str, labels: Iterable[str]) -> bool:
    """Whether `answer` gives `label` first and names no other label (see the module docstring)."""
    words = _words(normalize(answer))
    gold = _words(normalize(label))
    if not gold or words[: len(gold)] != gold:
        return False
    others = [_words(normalize(other)) for other in labels]
    others = [other for other in others if other and other != gold]
    if any(len(other) > len(gold) and words[: len(other)] == other for other in others):
        return False
    rest = words[len(gold) :]
    return not any(_contains(rest, other) for other in others)


@functools.cache
def _rouge_scorer() -> Any:
    """rouge-score's scorer, built once; imported late because it loads nltk (about a second)."""
    from rouge_score.rouge_scorer import RougeScorer  # type: ignore[import-untyped]

    return RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_f1(answer: str, reference: str) -> float:
    """The F1 of ROUGE-L between an answer and its reference, from rouge-score."""
    return float(_rouge_scorer().score(reference, answer)["rougeL"].fmeasure)


def score_answer(task: str, answer: str, reference: str, labels: Iterable[str] = ()) -> float:
    """The score of one answer under its task's metric: in [0, 1], 1 being right."""
    metric = task_metric(task)
    if metric == "rougeL_f1":
        return rouge_l_f1(answer, reference)
    if metric == "accuracy":
        return float(classification_correct(answer, reference, labels))
    return float(normalize(answer) == normalize(reference))


@dataclass(frozen=True)
class GenerationRecord:
    """A generation example after evaluation."""

    example: Example
    prompt: str
    """The prompt as the model saw it (rendered)."""
    prediction: str
    score: float
    nll: float
    """Summed negative log-likelihood of the reference tokens, teacher-forced."""
    tokens: int
    """How many reference tokens (EOS included) the NLL sums over."""


@dataclass(frozen=True)
class PreferenceRecord:
    """A preference pair after evaluation: summed log-probabilities of either answer."""

    example: Example
    prompt: str
    chosen_logprob: float
    rejected_logprob: float
    chosen_tokens: int
    rejected_tokens: int

    @property
    def margin(self) -> float:
        return self.chosen_logprob - self.rejected_logprob

    @property
    def score(self) -> float:
        return float(self.margin > 0)


Record = GenerationRecord | PreferenceRecord


@dataclass
class _Pool:
    """What one (task, metric) row accumulates."""

    total: float = 0.0
    weight: int = 0
    count: int = 0

    def add(self, value: float, weight: int = 1) -> None:
        self.total += value
        self.weight += weight
        self.count += 1

    def mean(self) -> float:
        return self.total / self.weight if self.weight else math.nan


def _perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def _pool(records: Iterable[Record]) -> dict[tuple[str, str], _Pool]:
    """Per (task, metric), and per ("all", metric), the pooled values of the records."""
    pools: dict[tuple[str, str], _Pool] = {}

    def add(task: str, metric: str, value: float, weight: int = 1) -> None:
        for key in ((task, metric), (AGGREGATE_TASK, metric)):
            pools.setdefault(key, _Pool()).add(value, weight)

    for record in records:
        task = record.example.task
        if isinstance(record, PreferenceRecord):
            add(task, "preference_accuracy", record.score)
            add(task, "reward_margin", record.margin)
            continue
        add(task, task_metric(task), record.score)
        if record.tokens:
            add(task, "loss", record.nll, record.tokens)
    return pools


def aggregate(records: Iterable[Record]) -> list[TaskMetric]:
    """The metrics of every task (by name), then of `all`.

    Within a task the scores in [0, 1] come first, then `loss` and `perplexity` or
    `reward_margin`, each group by name.
    """
    pools = _pool(records)
    tasks = sorted({task for task, _ in pools if task != AGGREGATE_TASK})
    metrics: list[TaskMetric] = []
    for task in [*tasks, AGGREGATE_TASK]:
        names = sorted((metric for owner, metric in pools if owner == task), key=_metric_order)
        for metric in names:
            pool = pools[task, metric]
            metrics.append(TaskMetric(task, metric, pool.mean(), pool.count))
            if metric == "loss":
                metrics.append(TaskMetric(task, "perplexity", _perplexity(pool.mean()), pool.count))
    return metrics


def _metric_order(metric: str) -> tuple[bool, str]:
    return metric in ("loss", "reward_margin"), metric
