"""Fixtures of the job tests: tiny models built once per session (two pretraining steps: the
tests need real Llama checkpoints with the platform's tokenizer, not good ones), a stack with a
short lease and a quick reconciler, and its pool of worker processes (started by each test, with
the environment it needs); and the REST gateway binary of the gateway tests."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops_services.gateway import PROJECT_BINARY, GatewayError, find_binary
from llmops_workers.tiny import build_tiny_model
from tests.conftest import ServerThread, make_settings
from tests.integration.workers import Workers
from tests.tiny_models import TinyModels

PEFT_NOTICE = "`is_gradient_checkpointing` is deprecated"


@pytest.fixture(scope="session")
def binary() -> Path:
    """The REST gateway binary; a test run without it fails (it is part of `make test`)."""
    try:
        return find_binary(os.environ.get("LLMOPS_GATEWAY_BINARY", ""))
    except GatewayError as error:
        pytest.fail(f"{error} (`make gateway` builds {PROJECT_BINARY})")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_model(path, pretrain_steps=2)
    return path


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "student"
    build_tiny_model(path, kind="student", pretrain_steps=2)
    return path


@pytest.fixture
def stack(data_dir: Path) -> Iterator[ServerThread]:
    settings = make_settings(data_dir, job_lease_seconds=8, reconcile_seconds=0.5)
    running = ServerThread(settings).start()
    yield running
    running.stop()


@pytest.fixture
def workers(stack: ServerThread) -> Iterator[Workers]:
    pool = Workers(stack)
    yield pool
    pool.stop()


@pytest.fixture(scope="session")
def adapter_dir(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny base with random (not zero) B matrices, so that it changes
    the base's answers and a merge that dropped it would show."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("merge-adapter") / "adapter"
    base = AutoModelForCausalLM.from_pretrained(str(tiny_models.base))
    torch.manual_seed(3)
    config = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", PEFT_NOTICE, FutureWarning)
        get_peft_model(base, config).save_pretrained(str(path))
    return path
