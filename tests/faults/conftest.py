"""Fixtures of the fault tests (`make test-faults`): those of the job tests, the tiny models and
worker pools (tests/integration/conftest.py), shared rather than copied."""

from tests.integration.conftest import binary, tiny_model, tiny_student  # noqa: F401
