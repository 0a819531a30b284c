"""Where a model runs and in which dtype: one rule for training, evaluation and inference.

A GPU runs in bfloat16 (half the memory of float32, and the dtype GPU kernels are fast in); the
CPU runs in float32, which is both the fastest dtype there and exact enough for LoRA's small
updates. Callers say which device they want ("auto" takes the GPU when CUDA is there); the dtype
follows from the device, so a training load and an inference load on the same device agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["CPU", "DeviceRequest", "Placement", "choose", "set_threads"]

DeviceRequest = Literal["auto", "cpu", "cuda"]
"""A caller's wish: the GPU when there is one ("auto"), or a device named outright."""


@dataclass(frozen=True)
class Placement:
    """A device and the dtype a model's weights (and a 4-bit model's compute) use there."""

    device: torch.device
    dtype: torch.dtype

    @property
    def on_cpu(self) -> bool:
        return self.device.type == "cpu"


CPU = Placement(torch.device("cpu"), torch.float32)
"""The CPU in float32."""


def choose(device: DeviceRequest = "auto") -> Placement:
    """The placement for `device`: the GPU in bfloat16, or the CPU in float32.

    "auto" means the GPU when CUDA is available, else the CPU. Asking for "cuda" on a machine
    without CUDA raises RuntimeError rather than quietly running on the CPU.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return CPU
    if not torch.cuda.is_available():
        raise RuntimeError("a CUDA device was asked for, and CUDA is not available")
    return Placement(torch.device("cuda"), torch.bfloat16)


def set_threads(count: int) -> None:
    """Torch's thread count for this process (at least 1).

    Set explicitly, never left to torch's default of one per core: two torch processes sharing
    the cores (a worker and an inference engine) slow each other down by an order of magnitude.
    """
    torch.set_num_threads(max(1, count))
