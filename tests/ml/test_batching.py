"""The continuous-batching engine: a request's answer does not depend on what else is in the batch
(base and adapter rows mixed, rows joining and leaving mid-run, cancels), and greedy answers are
plain `model.generate`'s. Token ids are compared, not text."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from llmops_ml import loading, placement, stacked_lora
from llmops_ml.batching import (
    BASE,
    BatchEngine,
    Request,
    Sampling,
    StepError,
    Token,
    UnknownAdapterError,
)
from tests.ml.conftest import GRADIENT_CHECKPOINTING_NOTICE
from tests.tiny_models import TinyModels, read_rows

pytestmark = pytest.mark.filterwarnings(f"ignore:{GRADIENT_CHECKPOINTING_NOTICE}:FutureWarning")

ADAPTERS = [None, "a", "b"]
GREEDY = Sampling(max_new_tokens=10)


@dataclass(frozen=True)
class Served:
    """The base model with two random LoRA adapters ("a", "b") attached, and its tokenizer."""

    model: Any
    tokenizer: Any
    eos_ids: tuple[int, ...]
    prompts: list[list[int]]

    def engine(self, max_batch_size: int = 32, eos_ids: Iterable[int] | None = None) -> BatchEngine:
        eos = self.eos_ids if eos_ids is None else tuple(eos_ids)
        return BatchEngine(
            self.model, eos, self.tokenizer.pad_token_id, max_batch_size=max_batch_size
        )


def _random_adapter(base_dir: Path, path: Path, seed: int, **options: Any) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    torch.manual_seed(seed)
    settings: dict[str, Any] = {"r": 4, "lora_alpha": 16, "target_modules": "all-linear"}
    config = LoraConfig(**{**settings, **options}, init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", GRADIENT_CHECKPOINTING_NOTICE, FutureWarning)
        warnings.filterwarnings("ignore", "Setting `save_embedding_layers`", UserWarning)
        get_peft_model(base, config).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def served(
    tiny_models: TinyModels, adapter_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Served:
    from peft import PeftModel

    torch.set_num_threads(1)
    second = _random_adapter(tiny_models.base, tmp_path_factory.mktemp("adapter-b") / "b", 2)
    tokenizer = loading.load_tokenizer(tiny_models.base, padding_side="left")
    base = loading.load_model(tiny_models.base, placement.CPU)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", GRADIENT_CHECKPOINTING_NOTICE, FutureWarning)
        model = PeftModel.from_pretrained(base, str(adapter_dir), adapter_name="a")
        model.load_adapter(str(second), adapter_name="b")
    model.eval()
    prompts = [
        tokenizer(row["prompt"])["input_ids"] for row in read_rows("demo-eval.test.jsonl", 6)
    ]
    assert len({len(p) for p in prompts}) > 1  # rows of a batch will be padded
    return Served(model, tokenizer, loading.eos_ids(model, tokenizer), prompts)


def run(engine: BatchEngine, steps: Iterator[None] | None = None) -> dict[str, list[Token]]:
    """Steps `engine` until it has no work; each request's Tokens in order."""
    out: dict[str, list[Token]] = {}
    while engine.has_work():
        for token in engine.step():
            out.setdefault(token.request_id, []).append(token)
        if steps is not None:
            next(steps, None)
    return out


def ids(tokens: list[Token]) -> list[int | None]:
    return [t.token_id for t in tokens]


def alone(
    served: Served, prompt: list[int], adapter: str | None, sampling: Sampling = GREEDY
) -> list[int | None]:
    engine = served.engine(max_batch_size=1)
    engine.add(Request("alone", prompt, sampling, adapter))
    return ids(run(engine)["alone"])


def hf_generate(served: Served, prompt: list[int], adapter: str | None, new: int) -> list[int]:
    """Plain `model.generate`, greedy, for one prompt (its new tokens up to and with EOS)."""
    input_ids = torch.tensor([prompt])
    with torch.inference_mode():
        output = served.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            adapter_names=[adapter or BASE],
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=list(served.eos_ids),
            pad_token_id=served.tokenizer.pad_token_id,
        )
    new_tokens: list[int] = output[0, len(prompt) :].tolist()
    return new_tokens


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_greedy_alone_and_batched_equal_model_generate(served: Served, adapter: str | None) -> None:
    engine = served.engine()
    for i, prompt in enumerate(served.prompts):
        engine.add(Request(str(i), prompt, GREEDY, adapter))
    batched = run(engine)
    for i, prompt in enumerate(served.prompts):
        expected = hf_generate(served, prompt, adapter, GREEDY.max_new_tokens)
        assert alone(served, prompt, adapter) == expected
        assert ids(batched[str(i)]) == expected
        assert batched[str(i)][-1].finish_reason == "length"
        assert all(t.finish_reason is None for t in batched[str(i)][:-1])


def test_adapters_answer_differently_from_the_base(served: Served) -> None:
    prompt = served.prompts[0]
    answers = {adapter: tuple(alone(served, prompt, adapter)) for adapter in ADAPTERS}
    assert len(set(answers.values())) == len(ADAPTERS)


def test_a_mixed_batch_gives_every_row_its_alone_answer(served: Served) -> None:
    engine = served.engine()
    requests = [
        Request(f"{adapter}-{i}", prompt, GREEDY, adapter)
        for i, prompt in enumerate(served.prompts)
        for adapter in ADAPTERS
    ]
    for request in requests:
        engine.add(request)
    batched = run(engine)
    for request in requests:
        assert ids(batched[request.id]) == alone(served, request.prompt_ids, request.adapter)


def test_requests_joining_mid_run_get_their_alone_answers(served: Served) -> None:
    engine = served.engine()
    first = [
        Request("long", served.prompts[0], Sampling(max_new_tokens=16), "a"),
        Request("short", served.prompts[1], Sampling(max_new_tokens=3)),
    ]
    later = [
        Request("late-b", served.prompts[2], Sampling(max_new_tokens=6), "b"),
        Request("late-base", served.prompts[3], Sampling(max_new_tokens=9)),
        Request("later-a", served.prompts[4], Sampling(max_new_tokens=4), "a"),
    ]
    for request in first:
        engine.add(request)
    running: list[int] = []

    def schedule() -> Iterator[None]:
        yield  # after step 1
        engine.add(later[0])
        engine.add(later[1])
        yield  # after step 2
        yield
        yield
        engine.add(later[2])  # after step 4, while rows of three lengths decode
        yield
        while True:  # from step 6 on: rows only leave
            running.append(engine.running)
            yield

    out = run(engine, schedule())
    for request in first + later:
        assert ids(out[request.id]) == alone(
            served, request.prompt_ids, request.adapter, request.sampling
        )
        assert len(out[request.id]) == request.sampling.max_new_tokens
    assert running[0] == 4 and running[-1] == 0 and running == sorted(running, reverse=True)


def test_finished_rows_leave_and_the_batch_narrows(served: Served) -> None:
    engine = served.engine()
    longest = max(served.prompts, key=len)
    shortest = min(served.prompts, key=len)
    engine.add(Request("long-prompt", longest, Sampling(max_new_tokens=2)))
    engine.add(Request("short-prompt", shortest, Sampling(max_new_tokens=6)))
    engine.step()
    engine.step()  # the long prompt's row finishes and leaves
    assert engine.running == 1
    batch = engine._batch
    assert batch is not None
    # only the short row's columns are left: its prompt and the tokens cached since
    assert batch.mask.shape[1] == len(shortest) + 1
    assert bool(batch.mask.all())
    out = run(engine)
    assert len(out["short-prompt"]) == 4


def test_a_row_stops_at_an_eos_id(served: Served) -> None:
    prompt = served.prompts[0]
    greedy = alone(served, prompt, "a")
    eos = greedy[3]
    assert isinstance(eos, int) and eos not in greedy[:3]
    engine = served.engine(eos_ids=[eos])
    engine.add(Request("stops", prompt, GREEDY, "a"))
    engine.add(Request("other", served.prompts[1], GREEDY, "b"))
    out = run(engine)
    assert ids(out["stops"]) == greedy[:4]
    assert out["stops"][-1].finish_reason == "stop"


def test_a_cancelled_request_frees_its_slot_and_the_rest_go_on(served: Served) -> None:
    engine = served.engine(max_batch_size=3)
    adapters = ["a", None, "b", "a"]
    requests = [
        Request(f"r{i}", prompt, GREEDY, adapter)
        for i, (prompt, adapter) in enumerate(zip(served.prompts, adapters, strict=False))
    ]
    for request in requests:
        engine.add(request)
    out: dict[str, list[Token]] = {}

    def collect(tokens: list[Token]) -> None:
        for token in tokens:
            out.setdefault(token.request_id, []).append(token)

    collect(engine.step())
    collect(engine.step())
    assert (engine.running, engine.waiting) == (3, 1)
    engine.cancel("r1")
    collect(engine.step())
    assert out["r1"][-1] == Token("r1", None, "cancelled")
    assert len(out["r1"]) == 3  # two tokens, then the cancel
    assert engine.running == 3  # r1's slot went to the waiting r3 in the same step
    engine.cancel("r1")  # already gone: ignored
    for tokens in run(engine).values():
        collect(tokens)
    assert len(out["r1"]) == 3
    for request in requests:
        if request.id != "r1":
            assert ids(out[request.id]) == alone(served, request.prompt_ids, request.adapter)


def test_a_waiting_request_can_be_cancelled(served: Served) -> None:
    engine = served.engine(max_batch_size=1)
    engine.add(Request("runs", served.prompts[0], GREEDY))
    engine.add(Request("waits", served.prompts[1], GREEDY))
    engine.cancel("waits")
    tokens = engine.step()
    assert Token("waits", None, "cancelled") in tokens
    assert (engine.running, engine.waiting) == (1, 0)
    assert "waits" not in run(engine)


def test_max_batch_size_is_respected(served: Served) -> None:
    engine = served.engine(max_batch_size=2)
    for i, prompt in enumerate(served.prompts[:5]):
        engine.add(Request(str(i), prompt, Sampling(max_new_tokens=3 + i)))
    sizes = []
    while engine.has_work():
        engine.step()
        sizes.append((engine.running, engine.waiting))
    assert sizes[0] == (2, 3)
    assert max(running for running, _ in sizes) == 2
    assert sizes[-1] == (0, 0)


def test_a_seeded_sample_is_the_same_alone_and_batched(served: Served) -> None:
    sampled = Sampling(max_new_tokens=12, temperature=1.5, top_p=0.95, top_k=50, seed=7)
    prompt = served.prompts[2]
    expected = alone(served, prompt, "b", sampled)
    assert expected != alone(served, prompt, "b")  # it does sample
    assert expected != alone(served, prompt, "b", Sampling(**{**vars(sampled), "seed": 8}))
    engine = served.engine()
    engine.add(Request("greedy", served.prompts[0], GREEDY, "a"))
    engine.add(Request("other-seed", served.prompts[1], Sampling(temperature=2.0, seed=1)))
    engine.add(Request("unseeded", served.prompts[3], Sampling(temperature=1.0)))
    first = engine.step()
    engine.add(Request("seeded", prompt, sampled, "b"))  # joins a batch already sampling
    out = run(engine)
    assert ids(out["seeded"]) == expected
    greedy = [t for t in first if t.request_id == "greedy"] + out["greedy"]
    assert ids(greedy) == alone(served, served.prompts[0], "a")


def test_top_k_one_is_greedy(served: Served) -> None:
    for adapter in ADAPTERS:
        prompt = served.prompts[4]
        top_1 = Sampling(max_new_tokens=10, temperature=1.7, top_k=1)
        assert alone(served, prompt, adapter, top_1) == alone(served, prompt, adapter)


def test_a_tiny_top_p_is_greedy(served: Served) -> None:
    nucleus = Sampling(max_new_tokens=10, temperature=1.7, top_p=1e-6)
    assert alone(served, served.prompts[5], "a", nucleus) == alone(served, served.prompts[5], "a")


def test_the_repetition_penalty_changes_an_answer_that_repeats(served: Served) -> None:
    long = Sampling(max_new_tokens=24)
    repeating = [
        (prompt, adapter)
        for prompt in served.prompts
        for adapter in ADAPTERS
        if len(set(answer := alone(served, prompt, adapter, long))) < len(answer)
    ]
    assert repeating
    prompt, adapter = repeating[0]
    penalized = Sampling(max_new_tokens=24, repetition_penalty=3.0)
    plain = alone(served, prompt, adapter, long)
    changed = alone(served, prompt, adapter, penalized)
    assert changed != plain
    # applied per row: the penalized row in a batch keeps its alone answer, the others theirs
    engine = served.engine()
    engine.add(Request("penalized", prompt, penalized, adapter))
    engine.add(Request("plain", prompt, long, adapter))
    out = run(engine)
    assert (ids(out["penalized"]), ids(out["plain"])) == (changed, plain)


def test_requests_added_from_another_thread_are_served(served: Served) -> None:
    engine = served.engine(max_batch_size=4)
    requests = [
        Request(f"t{i}", served.prompts[i % 6], Sampling(max_new_tokens=4), ADAPTERS[i % 3])
        for i in range(12)
    ]
    started = threading.Event()

    def submit() -> None:
        started.set()
        for request in requests:
            engine.add(request)

    thread = threading.Thread(target=submit)
    thread.start()
    started.wait()
    out: dict[str, list[Token]] = {}
    while thread.is_alive() or engine.has_work():
        for token in engine.step():
            out.setdefault(token.request_id, []).append(token)
    thread.join()
    assert sorted(out) == sorted(r.id for r in requests)
    for request in requests:
        assert ids(out[request.id]) == alone(
            served, request.prompt_ids, request.adapter, request.sampling
        )


def test_bad_requests_are_refused_at_add(served: Served) -> None:
    engine = served.engine()
    with pytest.raises(UnknownAdapterError, match="nope"):
        engine.add(Request("x", served.prompts[0], GREEDY, "nope"))
    with pytest.raises(ValueError, match="empty prompt"):
        engine.add(Request("x", [], GREEDY))
    with pytest.raises(ValueError, match="outside"):
        engine.add(Request("x", [1, len(served.tokenizer)], GREEDY))
    engine.add(Request("x", served.prompts[0], GREEDY))
    with pytest.raises(ValueError, match="already in flight"):
        engine.add(Request("x", served.prompts[0], GREEDY))
    assert engine.adapters_in_flight() == frozenset()
    assert engine.adapter_names() == {"a", "b"}
    with pytest.raises(ValueError, match="max_new_tokens"):
        Sampling(max_new_tokens=0)
    with pytest.raises(ValueError, match=r"temperature.*top_p"):
        Sampling(temperature=-1, top_p=0)


def test_a_plain_model_serves_the_base(served: Served, tiny_models: TinyModels) -> None:
    base = loading.load_model(tiny_models.base, placement.CPU)
    engine = BatchEngine(base, served.eos_ids, served.tokenizer.pad_token_id)
    for i, prompt in enumerate(served.prompts):
        engine.add(Request(str(i), prompt, GREEDY))
    out = run(engine)
    for i, prompt in enumerate(served.prompts):
        assert ids(out[str(i)]) == alone(served, prompt, None)
    with pytest.raises(UnknownAdapterError):
        engine.add(Request("x", served.prompts[0], GREEDY, "a"))


def test_the_prefill_budget_spreads_admission_over_steps(served: Served) -> None:
    budget = max(len(p) for p in served.prompts)
    engine = BatchEngine(
        served.model,
        served.eos_ids,
        served.tokenizer.pad_token_id,
        max_prefill_tokens=budget,
    )
    for i, prompt in enumerate(served.prompts):
        engine.add(Request(str(i), prompt, GREEDY, ADAPTERS[i % 3]))
    out: dict[str, list[Token]] = {}
    admitted = []
    while engine.has_work():
        before = engine.waiting
        for token in engine.step():
            out.setdefault(token.request_id, []).append(token)
        admitted.append(before - engine.waiting)
    assert max(admitted) < len(served.prompts) and sum(admitted) == len(served.prompts)
    for i, prompt in enumerate(served.prompts):
        assert ids(out[str(i)]) == alone(served, prompt, ADAPTERS[i % 3])


def _delete_adapter(model: Any, name: str) -> None:
    with warnings.catch_warnings():  # PEFT warns when the active adapter goes
        warnings.filterwarnings("ignore", f"Adapter {name} was active", UserWarning)
        model.delete_adapter(name)


def test_calls_between_steps_change_the_model_safely(
    served: Served, adapter_dir: Path, tmp_path: Path
) -> None:
    engine = served.engine()
    engine.add(Request("base", served.prompts[0], GREEDY))
    engine.add(Request("b", served.prompts[1], GREEDY, "b"))
    third = _random_adapter(Path(served.model.get_base_model().name_or_path), tmp_path / "c", 3)
    loaded = engine.call_between_steps(lambda model: model.load_adapter(str(third), "c"))
    failed = engine.call_between_steps(lambda model: 1 // 0)
    out: dict[str, list[Token]] = {}

    def collect(tokens: list[Token]) -> None:
        for token in tokens:
            out.setdefault(token.request_id, []).append(token)

    collect(engine.step())
    loaded.result(timeout=0)
    assert isinstance(failed.exception(timeout=0), ZeroDivisionError)
    try:
        engine.add(Request("c", served.prompts[2], GREEDY, "c"))
        assert engine.adapters_in_flight() == {"b", "c"}
        collect(engine.step())
        collect(engine.step())
        deleted = engine.call_between_steps(lambda model: _delete_adapter(model, "c"))
        collect(engine.step())
        deleted.result(timeout=0)
    finally:
        if "c" in served.model.peft_config:
            _delete_adapter(served.model, "c")
    assert out["c"][-1] == Token("c", None, "cancelled") and len(out["c"]) == 3
    for tokens in run(engine).values():
        collect(tokens)
    assert ids(out["base"]) == alone(served, served.prompts[0], None)
    assert ids(out["b"]) == alone(served, served.prompts[1], "b")


def test_a_failed_forward_drops_its_rows_and_the_engine_goes_on(served: Served) -> None:
    engine = served.engine(max_batch_size=2)
    for name in ("r0", "r1", "r2"):
        engine.add(Request(name, served.prompts[int(name[1])], GREEDY))
    engine.step()

    def fail_once(module: Any, inputs: Any, output: Any) -> None:
        handle.remove()
        raise RuntimeError("device lost")

    handle = served.model.get_base_model().lm_head.register_forward_hook(fail_once)
    with pytest.raises(StepError) as failure:
        engine.step()
    assert sorted(failure.value.request_ids) == ["r0", "r1"]
    assert isinstance(failure.value.__cause__, RuntimeError)
    assert (engine.running, engine.waiting) == (0, 1)
    out = run(engine)
    assert sorted(out) == ["r2"]
    assert ids(out["r2"]) == alone(served, served.prompts[2], None)


def test_one_new_token_finishes_at_the_prefill_and_an_idle_step_is_empty(served: Served) -> None:
    engine = served.engine()
    assert engine.step() == [] and not engine.has_work()
    engine.add(Request("one", served.prompts[0], Sampling(max_new_tokens=1), "a"))
    engine.add(Request("more", served.prompts[1], Sampling(max_new_tokens=3), "b"))
    first = engine.step()
    expected = hf_generate(served, served.prompts[0], "a", 1)
    assert Token("one", expected[0], "length") in first
    assert engine.running == 1
    out = run(engine)
    assert len(out["more"]) == 2 and "one" not in out


@pytest.mark.parametrize(
    ("options", "stacked"),
    [
        ({"r": 2, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}, True),
        ({"target_modules": ["q_proj", "embed_tokens"]}, False),  # PEFT's adapter_names path
    ],
)
def test_adapters_of_other_ranks_targets_and_kinds_mix_exactly(
    served: Served, tmp_path: Path, options: dict[str, Any], stacked: bool
) -> None:
    path = _random_adapter(
        Path(served.model.get_base_model().name_or_path), tmp_path / "c", 5, **options
    )
    assert stacked_lora.supports(served.model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", GRADIENT_CHECKPOINTING_NOTICE, FutureWarning)
        served.model.load_adapter(str(path), adapter_name="c")
    try:
        assert stacked_lora.supports(served.model) == stacked
        adapters = ["c", "a", None, "c", "b", "c"]
        requests = [
            Request(str(i), prompt, GREEDY, adapter)
            for i, (prompt, adapter) in enumerate(zip(served.prompts, adapters, strict=True))
        ]
        engine = served.engine()
        for request in requests:
            engine.add(request)
        out = run(engine)
        expected = {r.id: hf_generate(served, r.prompt_ids, r.adapter, 10) for r in requests}
        assert {r.id: ids(out[r.id]) for r in requests} == expected
        assert expected["0"] != alone(served, served.prompts[0], None)
    finally:
        _delete_adapter(served.model, "c")


def test_a_dora_adapter_is_refused(served: Served, tmp_path: Path) -> None:
    path = _random_adapter(
        Path(served.model.get_base_model().name_or_path), tmp_path / "d", 6, use_dora=True
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", GRADIENT_CHECKPOINTING_NOTICE, FutureWarning)
        served.model.load_adapter(str(path), adapter_name="d")
    try:
        with pytest.raises(ValueError, match="DoRA"):
            served.engine().add(Request("x", served.prompts[0], GREEDY, "d"))
    finally:
        _delete_adapter(served.model, "d")
