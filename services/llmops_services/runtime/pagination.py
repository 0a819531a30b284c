"""AIP-158 pagination: `page_size`, opaque `page_token`, `next_page_token`.

Tokens encode an offset plus a fingerprint of the request's filters, so a token reused with
other filters is refused instead of returning a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from llmops_services.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# Offsets past this are forged: no list is that long, and databases refuse bigger integers.
MAX_OFFSET = 2**53 - 1


@dataclass(frozen=True)
class Page:
    """Which rows to read: `limit + 1` are fetched to learn whether another page exists."""

    offset: int
    limit: int
    fingerprint: str

    def next_token(self, fetched: int) -> str:
        """The token of the next page, or "" when `fetched` rows (of limit + 1) end the list."""
        if fetched <= self.limit:
            return ""
        payload = json.dumps({"o": self.offset + self.limit, "f": self.fingerprint})
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def page_of(
    page_size: int, page_token: str, *filters: object, default: int = DEFAULT_PAGE_SIZE
) -> Page:
    """Checks and decodes paging arguments; `filters` are the request's other list arguments."""
    if page_size < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            violations=[FieldViolation("page_size", "must be >= 0")],
        )
    limit = min(page_size or default, MAX_PAGE_SIZE)
    fingerprint = json.dumps([str(f) for f in filters])
    if not page_token:
        return Page(0, limit, fingerprint)
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = int(payload["o"])
        token_fingerprint = str(payload["f"])
        if not 0 <= offset <= MAX_OFFSET:
            raise ValueError(f"offset {offset} out of range")
    except (binascii.Error, ValueError, KeyError, TypeError, OverflowError) as exc:
        raise InvalidArgument(
            "page_token is not a token this server issued",
            violations=[FieldViolation("page_token", "malformed page token")],
        ) from exc
    if token_fingerprint != fingerprint:
        raise InvalidArgument(
            "page_token belongs to a request with other filters",
            violations=[FieldViolation("page_token", "filters changed since the token was issued")],
        )
    return Page(offset, limit, fingerprint)
