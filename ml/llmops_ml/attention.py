"""Which attention implementation a model is loaded with for flattened (padding-free or packed)
batches. The exact CPU implementation itself is in `varlen_attention`.
"""

from __future__ import annotations

import importlib.util

import torch

from llmops_ml import varlen_attention

__all__ = ["flattened_attention"]


def flattened_attention() -> str:
    """The attention implementation for padding-free and packed batches.

    flash-attention's variable-length kernel where it can run (CUDA with the `flash_attn`
    package), else `varlen_attention.varlen_sdpa`: transformers' own SDPA fallback would attend
    over the whole flattened batch, at the square of its length.
    """
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return varlen_attention.register()
