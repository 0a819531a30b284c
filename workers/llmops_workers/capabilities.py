"""What this worker can run, found once at startup and advertised in Redis.

The probe runs in a subprocess: importing torch and bitsandbytes takes seconds and hundreds of
megabytes the worker's own process does not otherwise need, and a broken native library must not
take the worker down. TrainingService reads the advertisements to refuse a QLoRA job before
queueing it when no live worker can load 4-bit weights.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

log = logging.getLogger("llmops.worker")

INSTALL_4BIT = "pip install 'bitsandbytes>=0.48' on the worker (CPU, CUDA or XPU build of torch)"

_PROBE = """
import json, platform
out = {"torch": "", "cuda_devices": 0, "four_bit": False, "four_bit_error": ""}
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda_devices"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    import bitsandbytes
    import bitsandbytes.functional as F
    device = "cuda" if out["cuda_devices"] else "cpu"
    weights = torch.randn(64, 64, dtype=torch.float32, device=device)
    packed, state = F.quantize_4bit(weights, quant_type="nf4")
    restored = F.dequantize_4bit(packed, state, quant_type="nf4")
    if float((restored - weights).abs().mean()) > 0.5:
        raise RuntimeError("4-bit round trip is wrong")
    out["four_bit"] = True
    out["bitsandbytes"] = bitsandbytes.__version__
except Exception as error:
    out["four_bit_error"] = f"{type(error).__name__}: {error}"
print(json.dumps(out))
"""


async def probe(timeout: float = 120.0) -> dict[str, Any]:
    """The worker's capabilities: torch version, CUDA devices, and whether 4-bit NF4 works."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PROBE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return {"four_bit": False, "four_bit_error": f"the capability probe took over {timeout}s"}
    lines = stdout.decode().strip().splitlines()
    try:
        found: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        reason = stderr.decode().strip().splitlines()[-1:] or ["no output"]
        found = {"four_bit": False, "four_bit_error": f"the probe failed: {reason[0]}"}
    if not found["four_bit"]:
        log.warning("this worker cannot train in 4-bit: %s", found["four_bit_error"])
    return found


def methods(capabilities: dict[str, Any]) -> list[str]:
    """The training methods these capabilities allow."""
    base = ["sft", "dpo", "distill"]
    return [*base, "qlora"] if capabilities.get("four_bit") else base
