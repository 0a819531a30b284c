"""A model that ships its own code: a copy of a tiny Llama whose config.json names, in
`auto_map`, a configuration and a model class defined in files beside the weights. Its model
adds a large bonus to one token's logit, so every greedy answer is that token repeated: an
answer shows at once whether the model's own code ran where it was loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CONFIGURATION = """
from transformers import LlamaConfig


class ForcedTokenConfig(LlamaConfig):
    model_type = "llmops-forced-token"

    def __init__(self, forced_token_id: int = 0, **kwargs):
        self.forced_token_id = forced_token_id
        super().__init__(**kwargs)
"""

MODELING = """
from transformers import LlamaForCausalLM

from .configuration_forced_token import ForcedTokenConfig


class ForcedTokenForCausalLM(LlamaForCausalLM):
    config_class = ForcedTokenConfig

    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        bonus = output.logits.new_zeros(output.logits.shape[-1])
        bonus[self.config.forced_token_id] = 1000.0
        output.logits = output.logits + bonus
        return output
"""


def ship_code(model_dir: Path, target: Path, forced_token_id: int) -> Path:
    """A copy of `model_dir` at `target` whose own code forces `forced_token_id`."""
    shutil.copytree(model_dir, target)
    (target / "configuration_forced_token.py").write_text(CONFIGURATION)
    (target / "modeling_forced_token.py").write_text(MODELING)
    config = json.loads((target / "config.json").read_text())
    config.update(
        model_type="llmops-forced-token",
        architectures=["ForcedTokenForCausalLM"],
        forced_token_id=forced_token_id,
        auto_map={
            "AutoConfig": "configuration_forced_token.ForcedTokenConfig",
            "AutoModelForCausalLM": "modeling_forced_token.ForcedTokenForCausalLM",
        },
    )
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target
