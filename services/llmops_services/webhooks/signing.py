"""Signing per Standard Webhooks (the scheme OpenAI's webhooks use): `webhook-id`,
`webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.

The `standardwebhooks` library (the spec's own reference implementation, no dependencies) does
the HMAC; this module checks the secret up front, since the library accepts malformed base64
silently and would sign with a key no receiver shares.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from standardwebhooks import Webhook

PREFIX = "whsec_"
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64


def check_secret(secret: str) -> str:
    """What is wrong with a signing secret, or "" when it is fine. Never repeats the secret."""
    if not secret.startswith(PREFIX):
        return "must be whsec_ followed by base64 of 24 to 64 random bytes"
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return "is not valid base64 after whsec_"
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        return (
            f"holds a {len(key)}-byte key; use {MIN_KEY_BYTES} to {MAX_KEY_BYTES} random bytes "
            "(e.g. whsec_ + base64 of `openssl rand 32`)"
        )
    return ""


class Signer:
    """Signs request bodies with one secret; its repr and str never show the secret."""

    def __init__(self, secret: str) -> None:
        problem = check_secret(secret)
        if problem:
            raise ValueError(f"webhook secret {problem}")
        self._webhook = Webhook(secret)

    def __repr__(self) -> str:
        return "Signer(secret=<hidden>)"

    def headers(self, message_id: str, body: bytes, at: datetime) -> dict[str, str]:
        """The headers of one attempt: the same `webhook-id` every time (receivers dedupe on
        it), the attempt's own timestamp (receivers refuse ones older than a few minutes)."""
        stamp = datetime.fromtimestamp(int(at.timestamp()), UTC)
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": self._webhook.sign(message_id, stamp, body),
        }
