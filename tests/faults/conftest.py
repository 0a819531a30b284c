"""Fixtures of the fault tests (`make test-faults`): those of the job tests, the tiny models, a
stack and its worker pool (tests/integration/conftest.py), shared rather than copied."""

from tests.integration.conftest import (  # noqa: F401
    binary,
    stack,
    tiny_model,
    tiny_student,
    workers,
)
