"""Where a training run's time goes, reported with its result as `phase_<name>_seconds` metrics.

Users see them on the job (`metrics`), next to the Trainer's own `train_runtime`, and the
benchmark against plain TRL (`bench/training_vs_trl.py`) reads them from there rather than
patching functions of the engine. Phases: `setup` (tokenizer, rows and models loaded, the
Trainer built, rows tokenized), `train` (`Trainer.train`, checkpoints and evaluations included),
`checkpoint` (the part of `train` spent from the end of a saving step to the checkpoint
published), `save` (the result written).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["PhaseClock"]


@dataclass
class PhaseClock:
    """Wall-clock seconds per phase; a phase timed twice adds up."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def metrics(self) -> dict[str, float]:
        """The phases as metrics of the result, e.g. `phase_train_seconds`."""
        return {f"phase_{name}_seconds": value for name, value in self.seconds.items()}
