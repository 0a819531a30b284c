"""The command that starts a multi-GPU training run: one process per GPU under `accelerate
launch` (DDP, or FSDP for bases too large for one GPU), each running
`python -m llmops_workers.engines.distributed RUN_DIR`.

Pure: no torch, no process started. The worker's job process runs what `launch_command` returns
(`distributed_child.py`), and `llmops worker --print-launch` prints it without running it.

On the CPU (`TrainingSpec.processes_on_cpu`, machines without a GPU) `accelerate launch --cpu`
starts a single process however many are asked for (it expects mpirun for several CPU
processes), so the processes are started by `torchrun` (`torch.distributed.run`) instead: the
same entry point, the gloo backend, DDP only.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from llmops_workers.engines.spec import TrainingSpec

__all__ = [
    "DEVICE_VARIABLE",
    "ENTRY_POINT",
    "FSDP_OPTIONS",
    "launch_command",
    "launch_environment",
    "shell_line",
]

ENTRY_POINT = "llmops_workers.engines.distributed"
"""The module each process runs: the same engines as a single-process run, rank-aware."""

DEVICE_VARIABLE = "LLMOPS_TRAINING_DEVICE"
"""Where the engines put the model ("cpu" or "cuda"; `engines.arguments.PLACEMENT`)."""

FSDP_OPTIONS: tuple[str, ...] = (
    "--use_fsdp",
    "--fsdp_version",
    "1",
    "--fsdp_sharding_strategy",
    "FULL_SHARD",
    "--fsdp_auto_wrap_policy",
    "TRANSFORMER_BASED_WRAP",
    "--fsdp_backward_prefetch",
    "BACKWARD_PRE",
    "--fsdp_state_dict_type",
    "FULL_STATE_DICT",
    "--fsdp_use_orig_params",
    "true",
    "--fsdp_cpu_ram_efficient_loading",
    "true",
    "--fsdp_sync_module_states",
    "true",
)
"""FSDP as a LoRA run on a large base wants it: parameters, gradients and optimizer state fully
sharded; one FSDP unit per transformer layer (the model's own `_no_split_modules`); original
parameters kept, since frozen base weights and trainable LoRA weights share a unit; the base
read from disk by rank 0 only and broadcast; a full state dict gathered when the adapter is
saved."""


def launch_command(spec: TrainingSpec, run_dir: Path, python: str, port: int) -> list[str]:
    """The argv that runs `spec` on `spec.gpus` processes of this machine, rendezvousing on
    `port` of 127.0.0.1; `run_dir` holds the spec, the events and the stop file
    (`engines.distributed`)."""
    if not spec.distributed:
        raise ValueError(f"a run on {spec.gpus} GPU(s) runs in a single process, not launched")
    entry = ["-m", ENTRY_POINT, str(run_dir)]
    count = str(spec.gpus)
    if spec.processes_on_cpu:
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            count,
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            *entry,
        ]
    strategy = list(FSDP_OPTIONS) if spec.strategy == "fsdp" else ["--multi_gpu"]
    return [
        python,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        count,
        "--num_machines",
        "1",
        *strategy,
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(port),
        *entry,
    ]


def launch_environment(spec: TrainingSpec) -> dict[str, str]:
    """The variables the processes need on top of the worker's environment.

    The model's dtype follows the device (bfloat16 on a GPU); the Trainer's own mixed precision
    stays off (`--mixed_precision no`) so that it does not cast twice.
    """
    return {
        DEVICE_VARIABLE: "cpu" if spec.processes_on_cpu else "cuda",
        "OMP_NUM_THREADS": str(max(1, spec.threads)),
    }


def shell_line(spec: TrainingSpec, run_dir: Path, python: str, port: int) -> str:
    """What `launch_command` runs, as one shell line with its variables (for `--print-launch`)."""
    variables = " ".join(f"{k}={shlex.quote(v)}" for k, v in launch_environment(spec).items())
    return f"{variables} {shlex.join(launch_command(spec, run_dir, python, port))}"
