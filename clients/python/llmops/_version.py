"""The installed version of the client distribution, for `__version__` and the user agent."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmops-client")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

USER_AGENT = f"llmops-python/{__version__}"
