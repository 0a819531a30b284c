"""The tiny local base models: what a build writes, that it loads and generates, that it is
deterministic, that base and student share one tokenizer, that pretraining helps, that the corpus
stays clear of the task formats, and that `llmops models build-tiny` registers them once.

Builds use a handful of pretraining steps and one torch thread, so the module runs in well under
a minute beside other CPU-heavy tests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llmops.cli.main import app
from llmops_workers import corpus, tiny
from tests.conftest import ServerThread

torch = pytest.importorskip("torch")

STEPS = 20  # enough for the eval loss to fall well below its starting value (~7.6)
REPO = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Loading and generating in the tests runs on one thread too (the builds set their own)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    tiny.ensure_tiny_models(root, pretrain_steps=STEPS)
    return root


@pytest.fixture(scope="module")
def direct_build(tmp_path_factory: pytest.TempPathFactory) -> tiny.TinyModelInfo:
    """The base model built a second time, directly, with the same seed and steps."""
    return tiny.build_tiny_model(
        tmp_path_factory.mktemp("direct") / "base", kind="base", seed=0, pretrain_steps=STEPS
    )


# Corpus


def task_format_markers() -> list[str]:
    """The bundled templates' instruction lines and field labels ("Text:", "Name:", ...)."""
    templates = json.loads((REPO / "config" / "prompt_templates.json").read_text())["templates"]
    markers: set[str] = set()
    for template in templates:
        for line in str(template["template"]).splitlines():
            markers.add(line.split("{text}")[0].strip())
    return sorted(m for m in markers if m)


def test_generic_corpus_is_seeded_and_free_of_the_task_formats() -> None:
    documents = corpus.generic_documents(0, 3000)
    assert documents == corpus.generic_documents(0, 3000)
    assert documents != corpus.generic_documents(1, 3000)
    assert documents[:50] != corpus.generic_documents(0, 50, split="eval")
    markers = task_format_markers()
    assert "Extract the person's full name." in markers and "Name:" in markers
    text = "\n".join(documents)
    for marker in markers:
        assert marker not in text, marker
    assert ":" not in text
    # ...while it does speak of the tasks' people, places and topics.
    for word in ("Lovelace", "Porto", "baker", "Wednesday", "football match", "opened a bakery"):
        assert word in text, word


def test_tokenizer_text_includes_the_bundled_task_text() -> None:
    texts = corpus.tokenizer_training_texts()
    assert any(text.startswith("Extract the person's full name.") for text in texts)
    assert corpus.tokenizer_training_texts(REPO / "no-such-dir", documents=10) == (
        corpus.generic_documents(corpus.TOKENIZER_CORPUS_SEED, 10, split="tokenizer")
    )


# What a build writes


def test_build_writes_a_hugging_face_model_directory(models_root: Path) -> None:
    base = models_root / "llmops-tiny"
    for name in (
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        tiny.BUILD_INFO_FILE,
    ):
        assert (base / name).is_file(), name
    config = json.loads((base / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"]) == (4, 128)
    assert config["intermediate_size"] % 64 == 0 and config["hidden_size"] % 64 == 0
    assert 2000 <= config["vocab_size"] <= 4000
    assert not list(models_root.glob(".*building*"))


def test_the_model_loads_and_generates(models_root: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models_root / "llmops-tiny"
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert {
        "bos": tokenizer.bos_token,
        "eos": tokenizer.eos_token,
        "pad": tokenizer.pad_token,
        "unk": tokenizer.unk_token,
    } == {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
    # Task words are whole tokens, so a name is two tokens after its leading space.
    assert len(tokenizer(" Ada Lovelace", add_special_tokens=False)["input_ids"]) == 2
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], add_generation_prompt=True, tokenize=False
    )
    assert chat == "<|user|>\nHello</s>\n<|assistant|>\n"

    batch = tokenizer("Ada Lovelace lives in", return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    new_tokens = out[0, batch["input_ids"].shape[1] :]
    assert 1 <= len(new_tokens) <= 6
    assert isinstance(tokenizer.decode(new_tokens, skip_special_tokens=True), str)


def test_pretraining_lowers_the_eval_loss(direct_build: tiny.TinyModelInfo) -> None:
    assert direct_build.steps == STEPS
    assert direct_build.eval_loss_after < direct_build.eval_loss_before - 1.0
    assert 1_000_000 < direct_build.parameters < 1_500_000
    assert direct_build.pretrain_seconds > 0
    record = json.loads((direct_build.path / tiny.BUILD_INFO_FILE).read_text())
    assert record["eval_loss_after"] == direct_build.eval_loss_after


def test_same_seed_gives_byte_identical_files(
    models_root: Path, direct_build: tiny.TinyModelInfo
) -> None:
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert sha256(direct_build.path / name) == sha256(models_root / "llmops-tiny" / name)


def test_a_different_seed_gives_different_weights_and_the_same_tokenizer(
    tmp_path: Path, models_root: Path
) -> None:
    other = tiny.build_tiny_model(tmp_path / "other", kind="student", seed=1, pretrain_steps=0)
    assert other.eval_loss_after == other.eval_loss_before
    student = models_root / "llmops-tiny-student"
    assert sha256(other.path / "model.safetensors") != sha256(student / "model.safetensors")
    assert sha256(other.path / "tokenizer.json") == sha256(student / "tokenizer.json")


def test_base_and_student_share_the_tokenizer_files(models_root: Path) -> None:
    base, student = models_root / "llmops-tiny", models_root / "llmops-tiny-student"
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (base / name).read_bytes() == (student / name).read_bytes(), name
    assert json.loads((student / "config.json").read_text())["num_hidden_layers"] == 2
    assert sha256(base / "model.safetensors") != sha256(student / "model.safetensors")


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        tiny.build_tiny_model(tmp_path, kind="huge", pretrain_steps=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pretrain_steps"):
        tiny.build_tiny_model(tmp_path, pretrain_steps=-1)
    assert not any(tmp_path.iterdir())


# Building on first need


def test_ensure_is_idempotent(models_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = models_root / "llmops-tiny" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    def no_rebuild(*args: Any, **kwargs: Any) -> tiny.TinyModelInfo:
        raise AssertionError("an existing model was rebuilt")

    monkeypatch.setattr(tiny, "build_tiny_model", no_rebuild)
    paths = tiny.ensure_tiny_models(models_root)
    assert paths == {name: models_root / name for name in tiny.TINY_MODELS}
    assert weights.stat().st_mtime_ns == mtime


def test_ensure_never_leaves_a_half_built_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / ".llmops-tiny.building-old"
    stale.mkdir()
    (stale / "config.json").write_text("{}")

    def crash(output_dir: Path, **kwargs: Any) -> tiny.TinyModelInfo:
        (output_dir / "config.json").write_text("{}")
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(tiny, "build_tiny_model", crash)
    with pytest.raises(RuntimeError, match="mid-build"):
        tiny.ensure_tiny_models(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny-models.lock"]


# The CLI


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_builds_and_registers_both_models_once(server: ServerThread, tmp_path: Path) -> None:
    out = tmp_path / "models"
    args = ("--address", server.address, "models", "build-tiny", "--output-dir", str(out))
    code, stdout, stderr = invoke(*args, "--pretrain-steps", "5", "-o", "json")
    assert code == 0, stderr
    models = {m["name"]: m for m in json.loads(stdout)}
    assert set(models) == set(tiny.TINY_MODELS)
    assert stderr.count("registered llmops-tiny") == 2
    for name, model in models.items():
        assert model["kind"] == "MODEL_KIND_BASE"
        assert model["architecture"] == "LlamaForCausalLM"
        assert model["uri"] == str((out / name).resolve())
        assert "pretrained 5 steps" in model["description"]
    assert models["llmops-tiny"]["tokenizer_sha256"]
    assert (
        models["llmops-tiny"]["tokenizer_sha256"]
        == models["llmops-tiny-student"]["tokenizer_sha256"]
    )

    code, stdout, stderr = invoke(*args)
    assert code == 0, stderr
    assert "building" not in stderr and "registered llmops-tiny" not in stderr
    assert stderr.count("is already registered") == 2
    assert "llmops-tiny-student" in stdout
    code, stdout, _ = invoke("--address", server.address, "models", "list", "-o", "json")
    assert sorted(m["id"] for m in json.loads(stdout)) == sorted(m["id"] for m in models.values())

    code, stdout, _ = invoke("models", "build-tiny", "--output-dir", str(out), "--no-register")
    assert code == 0
    assert "llmops-tiny-student" in stdout and str(out.resolve()) in stdout


# A first run that just works


@pytest.mark.parametrize("stream", [False, True])
def test_generate_before_the_tiny_models_exist_builds_and_registers_them(
    server: ServerThread,
    models_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
) -> None:
    """`llmops generate` with no model names the server's default, llmops-tiny: not registered
    yet, so the CLI builds what is missing (here: nothing, the models are on disk already, as
    after an earlier build), registers both, and asks again."""
    home = tmp_path / "cli-data"  # the CLI's data dir; its models/ holds the built models
    home.mkdir()
    (home / "models").symlink_to(models_root, target_is_directory=True)
    monkeypatch.setenv("LLMOPS_DATA_DIR", str(home))
    args = ["--address", server.address, "generate", "-p", "The cat", "--max-new-tokens", "2"]
    code, stdout, stderr = invoke(*args, *(["--stream"] if stream else []), "-o", "json")
    assert code == 0, stderr
    assert "llmops-tiny is not registered yet: building the tiny models first" in stderr
    assert stderr.count("registered llmops-tiny") == 2
    answers = [json.loads(line) for line in stdout.splitlines()] if stream else [json.loads(stdout)]

    code, stdout, _ = invoke("--address", server.address, "models", "list", "-o", "json")
    registered = {m["name"]: m for m in json.loads(stdout)}
    assert {name: m["uri"] for name, m in registered.items()} == {
        name: str(models_root / name) for name in tiny.TINY_MODELS
    }
    assert {a["model"] for a in answers if a["model"]} == {registered["llmops-tiny"]["id"]}

    code, _, stderr = invoke(*args)  # registered now: no second build
    assert code == 0, stderr
    assert "building" not in stderr and "registered" not in stderr


def test_train_on_a_missing_tiny_student_builds_it_then_queues_the_job(
    server: ServerThread, models_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "cli-data"  # the CLI's data dir; its models/ holds the built models
    home.mkdir()
    (home / "models").symlink_to(models_root, target_is_directory=True)
    monkeypatch.setenv("LLMOPS_DATA_DIR", str(home))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    code, stdout, stderr = invoke(
        "--address",
        server.address,
        "datasets",
        "upload",
        str(rows),
        "--kind",
        "sft",
        "--name",
        "first",
        "-o",
        "json",
    )
    assert code == 0, stderr
    code, stdout, stderr = invoke(
        "--address",
        server.address,
        "train",
        "sft",
        "--base-model",
        "llmops-tiny-student",
        "--dataset",
        "first",
        "-o",
        "json",
    )
    assert code == 0, stderr
    assert "llmops-tiny-student is not registered yet" in stderr
    assert json.loads(stdout)["state"] == "JOB_STATE_QUEUED"
