"""The names of the platform's own tiny base models, and the command that builds them.

Part of the contract: the workers build and register models under these names, the services
point a caller who names one before it exists at the command, and both agree through this
table. Pure data, importing nothing.
"""

from __future__ import annotations

__all__ = ["BUILD_COMMAND", "TINY_MODEL_NAMES"]

TINY_MODEL_NAMES = ("llmops-tiny", "llmops-tiny-student")
"""The base and the 2-layer distillation student, in that order."""

BUILD_COMMAND = "llmops models build-tiny"
"""Builds them locally (no downloads, about a minute on two cores) and registers them."""
