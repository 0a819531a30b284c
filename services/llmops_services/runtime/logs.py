"""JSON log lines on stderr, one object per line, with the call's request and trace ids.

A dozen lines of our own rather than a logging library: the format is fixed and small.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

from llmops_services.runtime.context import job_id_var, request_id_var, trace_id_var
from llmops_services.runtime.tracing import tracing_on

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _trace_fields(entry: dict[str, Any]) -> None:
    """Adds the current span's ids, or without tracing the caller's trace id."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        entry["trace_id"] = format(span_context.trace_id, "032x")
        entry["span_id"] = format(span_context.span_id, "016x")
    elif trace_id := trace_id_var.get():
        entry["trace_id"] = trace_id


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; `extra=` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if request_id := request_id_var.get():
            entry["request_id"] = request_id
        if job_id := job_id_var.get():
            entry["job_id"] = job_id
        _trace_fields(entry)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Routes every logger to one JSON handler on stderr (idempotent)."""
    # The logging manual's own optimizations: no caller lookup, thread or process names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_llmops", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._llmops = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())


_LEVELS = {logging.INFO: "INFO", logging.ERROR: "ERROR"}


class AccessLog:
    """The one log line per call, as JSON on stderr, with the fields and level of `llmops.rpc`.

    Lines skip the logging module (its records, handler locks and formatter cost several times the
    line itself) and are written in batches: every write is a system call that hands the GIL to
    gRPC's threads, which costs a cheap call more than the rest of its work (docs/benchmarks.md).
    A batch leaves at most `delay` seconds after its first line, at `max_lines`, and on `flush()`.
    """

    def __init__(
        self, stream: TextIO | None = None, delay: float = 0.05, max_lines: int = 256
    ) -> None:
        self._logger = logging.getLogger("llmops.rpc")
        self._stream = stream
        self._delay = delay
        self._max_lines = max_lines
        self._lines: list[str] = []
        self._scheduled = False
        self._second = -1
        self._second_text = ""
        self._methods: dict[str, str] = {}

    def write(
        self,
        level: int,
        method: str,
        code: str,
        duration_ms: float,
        principal: str,
        error: str = "",
    ) -> None:
        """Queues the line of one call; the same fields as a `JsonFormatter` line, built by hand.

        Every value but `method` and `error` is made by the server from a safe alphabet (request
        ids are checked on the way in), so only those two need JSON escaping.
        """
        if not self._logger.isEnabledFor(level):
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        ts = f"{self._second_text}.{int((now - second) * 1000):03d}+00:00"
        ids = f'"request_id": "{request_id_var.get()}"'
        span_context = trace.get_current_span().get_span_context() if tracing_on() else None
        if span_context is not None and span_context.is_valid:
            ids += f', "trace_id": "{span_context.trace_id:032x}"'
            ids += f', "span_id": "{span_context.span_id:016x}"'
        elif trace_id := trace_id_var.get():
            ids += f', "trace_id": "{trace_id}"'
        method_json = self._methods.get(method)
        if method_json is None:
            method_json = self._methods[method] = json.dumps(method)
        line = (
            f'{{"ts": "{ts}", "level": "{_LEVELS.get(level) or logging.getLevelName(level)}", '
            f'"logger": "llmops.rpc", '
            f'"msg": "rpc", {ids}, "method": {method_json}, "code": "{code}", '
            f'"duration_ms": {duration_ms}, "principal": "{principal}"'
        )
        line += f', "error": {json.dumps(error)}}}' if error else "}"
        self._lines.append(line)
        if len(self._lines) >= self._max_lines or level >= logging.ERROR:
            self.flush()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_later(self._delay, self.flush)
                self._scheduled = True
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Writes the queued lines now."""
        self._scheduled = False
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        stream = self._stream or sys.stderr
        stream.write("\n".join(lines) + "\n")
        stream.flush()
