"""Benchmark: generated tokens/s of the continuous-batching engine (`llmops_ml.batching`) against
one request at a time and against plain padded `generate`, and the cost of mixing adapters.

One process, one model: the tiny base of `llmops_workers.tiny.build_tiny_model` (random weights
unless `--pretrain-steps` is given, or the model in `--model-dir`), fp32 on the CPU, `--threads`
torch threads. The same `--prompts` prompts (the first rows of config/datasets/demo-eval.test.jsonl)
get `--new-tokens` greedy tokens in every variant:

- engine, max_batch_size 1: one request at a time (the "batching off" baseline);
- engine, max_batch_size 8 and 64: all requests queued at once, rows join as slots free;
- `llmops_ml.generation.generate` at batch 64: one plain left-padded `model.generate` (the
  ceiling: no scheduling, no joining, no per-row bookkeeping);
- on a PeftModel with 4 random LoRA adapters: the engine at batch 64 with every request on one
  adapter, and with the adapters round-robin (every batch mixes all four).

Variants are interleaved per repeat (a slow minute of a shared machine hits all alike); the table
gives medians of `--repeats`. Token ids are checked: every engine variant against the first one
and against plain `model.generate` on the same batch; each mixed-adapter row against the same row
served in a single-adapter batch of its adapter. Exit status 1 if any row differs.

    .venv/bin/python bench/batching.py [--prompts 64] [--new-tokens 32] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EVAL_FILE = REPO / "config" / "datasets" / "demo-eval.test.jsonl"
ADAPTERS = ["a1", "a2", "a3", "a4"]

Answers = list[list[int]]


def _prompts(count: int) -> list[str]:
    lines = EVAL_FILE.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["prompt"] for line in lines[:count]]


def _random_adapters(base_dir: Path, root: Path) -> list[Path]:
    """Four LoRA adapters with random (not zero) B matrices, so each changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for seed, name in enumerate(ADAPTERS, start=1):
        base = AutoModelForCausalLM.from_pretrained(str(base_dir))
        torch.manual_seed(seed)
        config = LoraConfig(
            r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False
        )
        path = root / name
        get_peft_model(base, config).save_pretrained(str(path))
        paths.append(path)
    return paths


def _engine_run(
    model: Any,
    lm: Any,
    prompt_ids: Sequence[list[int]],
    new_tokens: int,
    batch_size: int,
    adapters: Sequence[str | None],
) -> tuple[float, Answers]:
    """Seconds to serve every prompt (all queued at once), and each one's tokens."""
    from llmops_ml.batching import BatchEngine, Request, Sampling

    engine = BatchEngine(model, lm.eos_ids, lm.tokenizer.pad_token_id, max_batch_size=batch_size)
    sampling = Sampling(max_new_tokens=new_tokens)
    answers: dict[str, list[int]] = {str(i): [] for i in range(len(prompt_ids))}
    start = time.perf_counter()
    for i, ids in enumerate(prompt_ids):
        engine.add(Request(str(i), ids, sampling, adapters[i % len(adapters)]))
    while engine.has_work():
        for token in engine.step():
            if token.token_id is not None:
                answers[token.request_id].append(token.token_id)
    seconds = time.perf_counter() - start
    return seconds, [answers[str(i)] for i in range(len(prompt_ids))]


def _up_to_eos(row: Sequence[int], eos: Sequence[int]) -> list[int]:
    out = []
    for token in row:
        out.append(token)
        if token in eos:
            break
    return out


def _hf_ids(lm: Any, prompts: Sequence[str], new_tokens: int) -> Answers:
    """Plain padded `model.generate` (as `llmops_ml.generation.generate` calls it), as ids."""
    import torch

    from llmops_ml import generation

    config = generation.generation_config(lm, max_new_tokens=new_tokens)
    batch = lm.tokenizer(list(prompts), return_tensors="pt", padding=True)
    with torch.inference_mode():
        output = lm.model.generate(**batch, generation_config=config)
    width = batch["input_ids"].shape[1]
    return [_up_to_eos(row, lm.eos_ids) for row in output[:, width:].tolist()]


def _agreement(answers: Answers, reference: Answers) -> tuple[int, int]:
    return sum(a == b for a, b in zip(answers, reference, strict=True)), len(reference)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pretrain-steps", type=int, default=0)
    parser.add_argument("--model-dir", type=Path, default=None, help="a tiny model to reuse")
    args = parser.parse_args(argv)

    import torch
    import transformers
    from peft import PeftModel

    from llmops_ml import generation, loading, placement
    from llmops_workers.tiny import build_tiny_model

    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    warnings.filterwarnings("ignore", category=FutureWarning)
    work = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    model_dir = args.model_dir or work / "base"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, pretrain_steps=args.pretrain_steps, threads=args.threads)

    lm = loading.load_for_inference(model_dir, placement=placement.CPU)
    peft_model = PeftModel.from_pretrained(
        loading.load_model(model_dir, placement.CPU),
        str((paths := _random_adapters(model_dir, work))[0]),
        adapter_name=ADAPTERS[0],
    )
    for name, path in zip(ADAPTERS[1:], paths[1:], strict=True):
        peft_model.load_adapter(str(path), adapter_name=name)
    peft_model.eval()

    prompts = _prompts(args.prompts)
    prompt_ids = [lm.tokenizer(p)["input_ids"] for p in prompts]
    n, new = len(prompts), args.new_tokens
    config = generation.generation_config(lm, max_new_tokens=new)

    def hf_generate() -> tuple[float, Answers]:
        start = time.perf_counter()
        generation.generate(lm, prompts, config)
        return time.perf_counter() - start, []

    def engine(model: Any, batch: int, adapters: Sequence[str | None]) -> Callable[[], Any]:
        return lambda: _engine_run(model, lm, prompt_ids, new, batch, adapters)

    variants: dict[str, Callable[[], tuple[float, Answers]]] = {
        "engine, max_batch_size 1 (one at a time)": engine(lm.model, 1, [None]),
        "engine, max_batch_size 8": engine(lm.model, 8, [None]),
        "engine, max_batch_size 64": engine(lm.model, 64, [None]),
        "plain padded `generation.generate`, batch 64": hf_generate,
        "engine on PeftModel, batch 64, one adapter": engine(peft_model, 64, ADAPTERS[:1]),
        "engine on PeftModel, batch 64, 4 adapters round-robin": engine(peft_model, 64, ADAPTERS),
    }
    names = list(variants)
    for name in names:  # warm-up: first calls, lazy imports
        if name != names[0]:
            variants[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    answers: dict[str, Answers] = {}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            took, rows = variants[name]()
            seconds[name].append(took)
            answers.setdefault(name, rows)

    # token ids: the same greedy answers whatever the batch
    reference = _hf_ids(lm, prompts, new)
    tokens = sum(len(row) for row in reference)
    agreement: dict[str, str] = {}
    differences = 0
    for name in names[:3]:
        agree, total = _agreement(answers[name], reference)
        differences += total - agree
        agreement[name] = f"{agree}/{total} vs `model.generate`"
    agreement[names[3]] = "(the reference)"
    single: Answers = [[] for _ in range(n)]
    for k, adapter in enumerate(ADAPTERS):  # each adapter's rows served in a batch of its own
        _, rows = _engine_run(peft_model, lm, prompt_ids, new, 64, [adapter])
        for i in range(k, n, len(ADAPTERS)):
            single[i] = rows[i]
    adapter_tokens = {name: sum(len(r) for r in answers[name]) for name in names[4:]}
    agree, total = _agreement(answers[names[5]], single)
    differences += total - agree
    agreement[names[5]] = f"{agree}/{total} vs each row in its adapter's own batch"
    agreement[names[4]] = "-"

    def rate(name: str) -> float:
        count = adapter_tokens.get(name, tokens)
        return count / statistics.median(seconds[name])

    base_rate = rate(names[0])
    print(
        f"{n} prompts x {new} new tokens, greedy, fp32, {args.threads} torch thread(s), "
        f"medians of {args.repeats}; {tokens} tokens generated (base)\n"
    )
    print("| variant | tok/s | x one at a time | x plain generate b64 | token ids agree |")
    print("|---|---|---|---|---|")
    for name in names:
        print(
            f"| {name} | {rate(name):,.0f} | {rate(name) / base_rate:.1f} | "
            f"{rate(name) / rate(names[3]):.2f} | {agreement[name]} |"
        )
    mixed = rate(names[5]) / rate(names[4])
    print(f"\nmixed adapters / single adapter: {mixed:.2f}")
    print(f"rows differing: {differences}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
