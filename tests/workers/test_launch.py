"""The multi-GPU launch, by dry run: the command built for DDP, FSDP and CPU processes is parsed
by accelerate's and torchrun's own argument parsers (nothing is started), and what crosses the
process boundary (spec, events, result, stop file) survives the trip."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmops_workers.engines.handoff import (
    RunFiles,
    decode_result,
    encode_result,
    read_stop,
    write_stop,
)
from llmops_workers.engines.launch import (
    DEVICE_VARIABLE,
    ENTRY_POINT,
    launch_command,
    launch_environment,
    shell_line,
)
from llmops_workers.engines.spec import (
    TrainingResult,
    TrainingSpec,
    spec_from_dict,
    spec_to_dict,
)

SPEC = TrainingSpec(
    method="sft",
    base_model_dir=Path("/models/base"),
    output_dir=Path("/store/jobs/ftjob-1/attempt-1"),
    train_file=Path("/store/data.jsonl"),
    hyperparameters={"max_steps": 10, "target_modules": ["q_proj"]},
    threads=2,
    gpus=4,
)
RUN_DIR = Path("/store/jobs/ftjob-1/attempt-1/.launch-x")


def _accelerate_args(command: list[str]) -> Any:
    """The command as accelerate's own parser reads it (it refuses an option it does not know)."""
    from accelerate.commands.launch import launch_command_parser

    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    return launch_command_parser().parse_args(command[3:])


def test_ddp_runs_one_process_per_gpu_under_accelerate_launch() -> None:
    command = launch_command(SPEC, RUN_DIR, sys.executable, 29611)
    args = _accelerate_args(command)
    assert args.num_processes == 4 and args.num_machines == 1
    assert args.multi_gpu and not args.use_fsdp
    assert args.main_process_port == 29611
    assert args.module and args.training_script == ENTRY_POINT
    assert args.training_script_args == [str(RUN_DIR)]


def test_fsdp_shards_fully_and_wraps_each_transformer_layer() -> None:
    from accelerate.utils.launch import prepare_multi_gpu_env

    command = launch_command(replace(SPEC, strategy="fsdp"), RUN_DIR, sys.executable, 29612)
    args = _accelerate_args(command)
    assert args.use_fsdp and not args.multi_gpu
    env = prepare_multi_gpu_env(args)  # what accelerate would hand each process
    assert env["ACCELERATE_USE_FSDP"] == "true"
    assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_USE_ORIG_PARAMS"] == "true"  # frozen base and trainable LoRA in one unit
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"
    assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"


def test_processes_on_the_cpu_are_started_by_torchrun() -> None:
    from torch.distributed.run import get_args_parser

    spec = replace(SPEC, gpus=2, processes_on_cpu=True)
    command = launch_command(spec, RUN_DIR, sys.executable, 29613)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    args = get_args_parser().parse_args(command[3:])
    assert args.nproc_per_node == "2" and args.nnodes == "1" and args.master_port == 29613
    assert args.module and args.training_script == ENTRY_POINT
    assert args.training_script_args == [str(RUN_DIR)]
    assert launch_environment(spec)[DEVICE_VARIABLE] == "cpu"
    assert launch_environment(SPEC) == {DEVICE_VARIABLE: "cuda", "OMP_NUM_THREADS": "2"}


@pytest.mark.parametrize("gpus", [0, 1])
def test_a_job_on_one_gpu_or_none_is_not_launched(gpus: int) -> None:
    with pytest.raises(ValueError, match="single process"):
        launch_command(replace(SPEC, gpus=gpus), RUN_DIR, sys.executable, 29614)


def test_the_worker_prints_what_it_would_run() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "llmops", "worker", "--print-launch", "8", "--strategy", "fsdp"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    expected = shell_line(
        replace(SPEC, gpus=8, strategy="fsdp", threads=1), Path("RUN_DIR"), sys.executable, 29500
    )
    assert printed == expected
    assert printed.startswith("LLMOPS_TRAINING_DEVICE=cuda OMP_NUM_THREADS=1 ")
    assert "--num_processes 8 --num_machines 1 --use_fsdp" in printed


def test_the_spec_and_the_result_cross_as_json(tmp_path: Path) -> None:
    spec = replace(SPEC, validation_file=None, resume_from=Path("/store/step-4"), strategy="ddp")
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec
    files = RunFiles(tmp_path / "run")
    files.prepare(spec)
    assert spec_from_dict(json.loads(files.spec.read_text())) == spec
    result = TrainingResult("completed", tmp_path / "adapter", 6, {"loss": 1.5}, None)
    files.append({"type": "result", "result": encode_result(result)})
    (line,) = files.events.read_text().splitlines()
    assert decode_result(json.loads(line)["result"]) == result


def test_the_stop_file_says_what_the_worker_asks(tmp_path: Path) -> None:
    path = tmp_path / "stop"
    assert read_stop(path) == ""
    write_stop(path, "pause")
    assert read_stop(path) == "pause"
    write_stop(path, "cancel")
    assert read_stop(path) == "cancel"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stop"]
