"""Loading what training, evaluation and inference run: a tokenizer, a base model (4-bit NF4
included), an adapter on it, or the base with an adapter merged in.

Every load takes a `Placement` (device and dtype, see `placement`), so the device/dtype rule is
decided in one place. bitsandbytes is imported only for a 4-bit load.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedTokenizerBase,
)

from llmops_ml.attention import flattened_attention
from llmops_ml.placement import Placement, choose

__all__ = [
    "IDLE_ADAPTER",
    "SAFE_LOADING",
    "LoadedModel",
    "attach_adapter",
    "disable_cpu_inference_repack",
    "eos_ids",
    "four_bit_config",
    "load_adapter",
    "load_for_inference",
    "load_merged",
    "load_model",
    "load_tokenizer",
    "require_safetensors_adapter",
    "with_idle_adapter",
]

log = logging.getLogger("llmops.ml")

SAFE_LOADING: dict[str, Any] = {
    "use_safetensors": True,
    "trust_remote_code": False,
    "local_files_only": True,
}
"""How every model and tokenizer is loaded: weights only from safetensors (never a pickle, which
`torch.load` would run), no code shipped with a model, and nothing fetched from a hub. The one
exception is `trust_remote_code`, which callers pass for a model an admin registered with it
(the registry's `Model.trust_remote_code`): that model's own code is then imported."""


def _loading(trust_remote_code: bool) -> dict[str, Any]:
    return {**SAFE_LOADING, "trust_remote_code": trust_remote_code}


def load_tokenizer(
    model_dir: Path,
    *,
    padding_side: Literal["left", "right"] | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (the EOS token when it has none).

    Generation and scoring pad on the left (`padding_side="left"`), so that every row of a
    batch ends at the same column; training keeps the tokenizer's own side.
    """
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
        str(model_dir), trust_remote_code=trust_remote_code, local_files_only=True
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


def four_bit_config(placement: Placement, *, double_quant: bool = True) -> BitsAndBytesConfig:
    """QLoRA's quantization: 4-bit NF4 weights (double quantization by default), computing in
    the placement's dtype."""
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=placement.dtype,
    )


def load_model(
    model_dir: Path,
    placement: Placement,
    *,
    four_bit: bool = False,
    double_quant: bool = True,
    flattened_batches: bool = False,
    trust_remote_code: bool = False,
) -> Any:
    """A causal LM on the placement's device in its dtype, optionally quantized to 4-bit NF4.

    `flattened_batches` (padding-free or packed training) picks an attention that keeps each
    sequence of a flattened batch to itself at the cost of a padded batch (`flattened_attention`).
    A 4-bit model has `disable_cpu_inference_repack` applied before it is returned.
    """
    options: dict[str, Any] = {"dtype": placement.dtype, **_loading(trust_remote_code)}
    if flattened_batches:
        options["attn_implementation"] = flattened_attention()
    if not four_bit:
        model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), **options)
        return model if placement.on_cpu else model.to(placement.device)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        quantization_config=four_bit_config(placement, double_quant=double_quant),
        device_map=placement.device.type,
        **options,
    )
    disable_cpu_inference_repack(model)
    return model


def disable_cpu_inference_repack(model: torch.nn.Module) -> int:
    """Keeps 4-bit layers trainable after an eval-mode forward; returns how many were changed.

    On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight for a faster inference kernel
    the first time a layer runs in eval mode without gradients (an evaluation, a generate).
    That kernel has no autograd, so training afterwards silently gets wrong LoRA gradients
    (the only sign is a UserWarning about `gemv_4bit`). Turning the repack off avoids it.
    """
    from bitsandbytes.nn.modules import Linear4bit

    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def load_adapter(model: Any, adapter_dir: Path, *, trainable: bool) -> Any:
    """`model` wrapped with the adapter in `adapter_dir` (named "default"); only from its
    safetensors file (PEFT would otherwise fall back to a pickled `adapter_model.bin`)."""
    require_safetensors_adapter(adapter_dir)
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def require_safetensors_adapter(adapter_dir: Path) -> None:
    """Refuses an adapter directory without `adapter_model.safetensors`."""
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(
            f"{adapter_dir} has no adapter_model.safetensors: adapters are loaded from "
            "safetensors only"
        )


IDLE_ADAPTER = "__idle__"
"""The adapter `with_idle_adapter` adds: rank 1, output exactly zero."""

_PEFT_NOTICES = ("`is_gradient_checkpointing` is deprecated",)
"""Deprecation notices PEFT trips inside transformers when it wraps a model; not ours to fix."""


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    with warnings.catch_warnings():
        for notice in _PEFT_NOTICES:
            warnings.filterwarnings("ignore", notice, FutureWarning)
        yield


def with_idle_adapter(model: Any) -> Any:
    """`model` wrapped in a `PeftModel` whose one adapter (`IDLE_ADAPTER`) adds exactly zero.

    For a server that attaches adapters by name while requests run (`attach_adapter`): the
    wrapper exists from the start, so attaching the first adapter does not replace the model
    under running requests. The idle adapter is a rank-1 LoRA with zero B (PEFT's default init)
    on one linear layer; it is also what the active adapter is set back to before the active one
    is deleted.
    """
    from peft import LoraConfig, get_peft_model

    target = next(
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    )
    config = LoraConfig(r=1, target_modules=[target], init_lora_weights=True)
    with _quiet_peft():
        wrapped = get_peft_model(model, config, adapter_name=IDLE_ADAPTER)
    wrapped.eval()
    return wrapped


def attach_adapter(model: Any, adapter_dir: Path, name: str) -> None:
    """Attaches the adapter in `adapter_dir` to the `PeftModel` `model` under `name`."""
    require_safetensors_adapter(adapter_dir)
    with _quiet_peft():
        model.load_adapter(str(adapter_dir), adapter_name=name)


def load_merged(
    model_dir: Path,
    adapter_dir: Path | None,
    placement: Placement,
    *,
    trust_remote_code: bool = False,
) -> Any:
    """The base model with the adapter merged into its weights (the base alone without one).

    Merged rather than kept as a PEFT wrapper: a forward is then a plain forward of the base
    architecture, with nothing left of LoRA to compute per token. What evaluation and a
    distillation teacher run, and what `merge.merge_adapter` writes to disk.
    """
    model = load_model(model_dir, placement, trust_remote_code=trust_remote_code)
    if adapter_dir is None:
        return model
    return load_adapter(model, adapter_dir, trainable=False).merge_and_unload()


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, its tokenizer (padding on the left), and where it runs."""

    model: Any
    tokenizer: Any
    device: torch.device
    eos_ids: tuple[int, ...]
    """Every token id that ends an answer: the tokenizer's EOS and the model's own."""

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")


def eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """The model's configured EOS ids, with the tokenizer's EOS first when it is not among them."""
    configured = model.generation_config.eos_token_id
    eos = [configured] if isinstance(configured, int) else list(configured or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.insert(0, tokenizer.eos_token_id)
    return tuple(eos)


def load_for_inference(
    model_dir: Path,
    adapter_dir: Path | None = None,
    *,
    placement: Placement | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """The merged model in eval mode with a left-padding tokenizer, on `placement` (by default
    the GPU in bfloat16 when CUDA is there, else the CPU in float32)."""
    where = placement if placement is not None else choose()
    trust = trust_remote_code
    tokenizer = load_tokenizer(model_dir, padding_side="left", trust_remote_code=trust)
    model = load_merged(model_dir, adapter_dir, where, trust_remote_code=trust)
    model.eval()
    log.info("loaded %s on %s (%s)", model_dir, where.device, model.dtype)
    return LoadedModel(model, tokenizer, where.device, eos_ids(model, tokenizer))
