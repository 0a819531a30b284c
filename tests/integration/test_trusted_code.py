"""A model an admin registered with `trust_remote_code`: its own code (a model class that forces
one token, `tests/custom_code.py`) runs wherever the platform loads it. Served, trained on (its
adapter inherits the trust), merged (the merged model carries the code and the trust) and
evaluated, on a real server with a real worker; every answer is the forced token, which only
the model's own code produces. Registering it without the flag, or as a writer, is refused
(`test_registry_models.py`, `test_roles.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmops
from llmops.v1 import jobs_pb2
from llmops_ml.loading import load_tokenizer
from tests.conftest import ServerThread
from tests.custom_code import ship_code
from tests.integration.workers import FAST, Workers
from tests.tiny_models import TinyModels

PROMPT = "Summarize: the tiny model reads a short text about a river and a town."
TOKENS = 6


@pytest.mark.timeout(420)
def test_a_trusted_models_own_code_runs_wherever_it_is_loaded(
    stack: ServerThread, workers: Workers, tiny_models: TinyModels, tmp_path: Path
) -> None:
    tokenizer = load_tokenizer(tiny_models.base)
    forced = tokenizer(" river", add_special_tokens=False).input_ids[-1]
    forced_answer = tokenizer.decode([forced] * TOKENS)
    custom = ship_code(tiny_models.base, tmp_path / "custom", forced)
    workers.start()
    with llmops.Client(stack.address, timeout=60) as client:

        def answer(model: str) -> str:
            return client.inference.generate(model, PROMPT, max_new_tokens=TOKENS).text

        base = client.models.create("custom", str(custom), trust_remote_code=True)
        assert base.trust_remote_code and base.architecture == "ForcedTokenForCausalLM"
        assert answer("custom") == forced_answer

        params = {**FAST, "max_steps": 2}
        trained = client.training.create("sft", "custom", "demo-sft", hyperparameters=params)
        done = trained.wait(timeout=300, poll_interval=0.5)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        adapter = client.models.get(done.result_model)
        assert adapter.trust_remote_code  # its base's
        assert answer(adapter.id) == forced_answer

        merging = client.merges.create(adapter.id).wait(timeout=120, poll_interval=0.5)
        assert merging.state == jobs_pb2.JOB_STATE_SUCCEEDED, merging.error.message
        merged = client.models.get(merging.result_model)
        assert merged.trust_remote_code and merged.architecture == "ForcedTokenForCausalLM"
        assert answer(merged.id) == forced_answer

        run = client.eval.create(merged.id, "demo-eval", limit=4).wait(timeout=120)
        assert run.state == jobs_pb2.JOB_STATE_SUCCEEDED, run.error.message
