"""Variable-length attention for padding-free and packed batches where flash-attention is absent.

TRL's padding-free collator (used by `padding_free` and by BFD `packing`) flattens a batch into
one row and marks where each sequence starts (`position_ids` restart at 0, `cu_seq_lens_q`).
flash-attention's varlen kernel attends within each sequence. Without it (on the CPU, or a GPU
without the `flash_attn` package) transformers falls back to SDPA over the whole flattened row
with a block-diagonal mask: attention then costs the square of the batch's total tokens, which
made packing half as fast as padded batches here (docs/benchmarks.md).

`varlen_sdpa` gets the same result the varlen kernel does, with SDPA: it scatters the flattened
tokens' queries, keys and values into one padded row per sequence, runs causal SDPA on those
rows, and gathers the real tokens back. Attention then costs what it costs in a padded batch
(sum of rows x longest row), while every other layer (projections, MLP, LM head) runs on real
tokens only. It is exact: a query only attends to keys of its own sequence at or before it, and
the padding rows' outputs are dropped, so no gradient reaches them.

Any other call (a padded batch with an attention mask, a forward with a KV cache, generation)
goes to transformers' own SDPA path unchanged. No library provides this on the CPU: PyTorch's
`varlen_attn` and flash-attention are CUDA-only, and `flex_attention` needs `torch.compile`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

NAME = "llmops_varlen_sdpa"


def sequence_layout(cu_seq_lens: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Where each flattened token goes in a [sequences, longest] grid, and the grid's shape.

    `cu_seq_lens` are the cumulative sequence boundaries ([0, l0, l0 + l1, ...]).
    """
    lengths = cu_seq_lens.diff().to(torch.long)
    sequences, longest = int(lengths.numel()), int(lengths.max())
    row = torch.repeat_interleave(torch.arange(sequences, device=lengths.device), lengths)
    starts = cu_seq_lens[:-1].to(torch.long)
    column = torch.arange(int(lengths.sum()), device=lengths.device) - starts[row]
    return row * longest + column, sequences, longest


def boundaries(kwargs: dict[str, Any], tokens: int) -> torch.Tensor | None:
    """The cumulative sequence boundaries of a one-row batch of `tokens`, if it carries them.

    TRL's collator passes them as `cu_seq_lens_q`; otherwise a sequence starts wherever
    `position_ids` do not continue the one before (as transformers' packed-sequence check).
    """
    given = kwargs.get("cu_seq_lens_q")
    if isinstance(given, torch.Tensor):
        return given if int(given[-1]) == tokens else None
    positions = kwargs.get("position_ids")
    if not isinstance(positions, torch.Tensor) or positions.shape[-1] != tokens:
        return None
    row = positions.reshape(-1, tokens)[0]
    starts = (row.diff(prepend=row[:1] - 1) != 1).nonzero().flatten()
    if starts.numel() == 0 or int(starts[0]) != 0:
        starts = torch.cat([starts.new_zeros(1), starts])
    return torch.cat([starts, starts.new_tensor([tokens])])


def _to_rows(
    states: torch.Tensor, index: torch.Tensor, sequences: int, longest: int
) -> torch.Tensor:
    """[1, heads, tokens, dim] flattened → [sequences, heads, longest, dim], zero-padded."""
    heads, dim = states.shape[1], states.shape[3]
    grid = states.new_zeros(heads, sequences * longest, dim)
    grid = grid.index_copy(1, index, states[0])
    return grid.view(heads, sequences, longest, dim).transpose(0, 1)


def varlen_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention within each sequence of a flattened batch; SDPA as usual for anything else.

    Returns the output as [batch, tokens, heads, dim], as transformers' attention functions do.
    """
    cu_seq_lens = boundaries(kwargs, query.shape[2]) if query.shape[0] == 1 else None
    flattened = (
        cu_seq_lens is not None
        and cu_seq_lens.numel() > 2
        and attention_mask is None
        and query.shape[2] == key.shape[2]
        and getattr(module, "is_causal", True)
    )
    if not flattened:
        output, _ = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
        return output, None
    assert cu_seq_lens is not None
    index, sequences, longest = sequence_layout(cu_seq_lens.to(query.device))
    rows = functional.scaled_dot_product_attention(
        _to_rows(query, index, sequences, longest),
        _to_rows(key, index, sequences, longest),
        _to_rows(value, index, sequences, longest),
        dropout_p=dropout if module.training else 0.0,
        is_causal=True,
        scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    heads, dim = rows.shape[1], rows.shape[3]
    flat = rows.transpose(0, 1).reshape(heads, sequences * longest, dim).index_select(1, index)
    return flat.transpose(0, 1).unsqueeze(0), None


def varlen_sdpa_mask(**kwargs: Any) -> torch.Tensor | None:
    """No mask for a flattened batch (its sequences come from `cu_seq_lens_q`); SDPA's otherwise.

    A flattened batch reaches the mask function as one row without a padding mask and with the
    packed-sequence rule folded into `mask_function`; building that block-diagonal mask would
    cost the square of the row's length for nothing.
    """
    flattened = (
        not getattr(kwargs.get("config"), "sliding_window", None)
        and kwargs.get("attention_mask") is None
        and kwargs.get("batch_size") == 1
        and kwargs.get("q_offset", 0) == 0
        and kwargs.get("kv_offset", 0) == 0
        and kwargs.get("q_length") == kwargs.get("kv_length")
    )
    if flattened:
        return None
    mask: torch.Tensor | None = sdpa_mask(**kwargs)
    return mask


def register() -> str:
    """Makes `NAME` an attention implementation models can be loaded with; returns `NAME`."""
    ALL_ATTENTION_FUNCTIONS.register(NAME, varlen_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, varlen_sdpa_mask)
    return NAME
