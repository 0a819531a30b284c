"""Merging an adapter into its base model and writing the result as a standalone model directory
(safetensors weights, config, tokenizer): what a "merged model" is on disk, served without PEFT.

The merge runs on the CPU in float32 by default: the merged weights are then exact sums of base
and LoRA delta whatever GPU later serves them. A 4-bit (QLoRA) adapter is merged into the
full-precision base, never into quantized weights.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from llmops_ml.loading import load_merged, load_tokenizer
from llmops_ml.placement import CPU, Placement

__all__ = ["merge_adapter"]


def merge_adapter(
    base_dir: Path,
    adapter_dir: Path,
    output_dir: Path,
    *,
    placement: Placement = CPU,
    trust_remote_code: bool = False,
) -> Path:
    """Writes base + adapter, merged, to `output_dir` atomically; returns `output_dir`.

    Everything is written into a temporary directory beside `output_dir` and renamed into place
    only when complete, so a reader never sees half a model and a merge that dies leaves nothing
    at `output_dir`. An existing `output_dir` (an earlier attempt's) is replaced.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        trust = trust_remote_code  # the base's code is saved beside the merged weights
        model = load_merged(base_dir, adapter_dir, placement, trust_remote_code=trust)
        model.save_pretrained(str(temporary))
        load_tokenizer(base_dir, trust_remote_code=trust).save_pretrained(str(temporary))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(temporary, output_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return output_dir
