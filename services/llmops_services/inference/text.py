"""Incremental detokenization with stop strings: what the service streams as tokens arrive.

The generated ids so far are decoded whole each time and only the new text is emitted, so a
character that spans several byte-level tokens comes out once it is complete. Text that could
be the start of a stop string is held back until it is known not to be one; on a stop string
the text ends just before it.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmops_services.inference.engine import Tokenizer

_INCOMPLETE = "\ufffd"


class TextStream:
    """Turns a request's token ids into text deltas, ending at the first stop string."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str]) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        self._emitted = 0
        self.text = ""
        """Everything emitted so far."""
        self.stopped = False
        """Whether a stop string ended the text."""

    def push(self, token_id: int) -> str:
        """The text that `token_id` completes (possibly ""); sets `stopped` on a stop string."""
        self._ids.append(token_id)
        full = self._tokenizer.decode(self._ids)
        if self._stop:
            window = max(0, self._emitted - max(len(s) for s in self._stop))
            hits = [i for i in (full.find(s, window) for s in self._stop) if i >= 0]
            if hits:
                self.stopped = True
                return self._emit(full[: min(hits)])
        end = len(full)
        while end > self._emitted and full[end - 1] == _INCOMPLETE:
            end -= 1  # a multi-byte character whose last bytes are still to come
        end -= self._held_back(full[:end])
        return self._emit(full[:end])

    def finish(self) -> str:
        """The rest of the text once generation has ended."""
        if self.stopped:
            return ""
        return self._emit(self._tokenizer.decode(self._ids))

    def _held_back(self, text: str) -> int:
        """The length of the longest end of `text` that begins a stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text) - self._emitted), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _emit(self, upto: str) -> str:
        if len(upto) <= self._emitted:
            return ""
        delta = upto[self._emitted :]
        self._emitted = len(upto)
        self.text = upto
        return delta
