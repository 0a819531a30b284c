"""Prometheus metrics of webhook deliveries, counted by the dispatcher that sends them."""

from __future__ import annotations

from prometheus_client import Counter

DELIVERIES = Counter(
    "llmops_webhook_deliveries",
    "Webhook deliveries settled, by outcome: delivered (an endpoint answered 2xx) or failed "
    "(no 2xx within LLMOPS_WEBHOOK_MAX_ATTEMPTS attempts).",
    ["outcome"],
)
ATTEMPTS = Counter(
    "llmops_webhook_delivery_attempts",
    "Webhook delivery attempts, by outcome: success (2xx), http_error (any other status), "
    "timeout, connection_error.",
    ["outcome"],
)
