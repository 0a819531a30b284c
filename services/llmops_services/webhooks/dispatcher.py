"""The dispatcher: a loop in each services process that sends due deliveries, concurrently and
off the path of every RPC and job, and retries failures with exponential backoff.

It looks for due deliveries every `LLMOPS_WEBHOOK_POLL_SECONDS`, and at once after this process
commits new ones (a cancel through the API); those a worker records are found at the next look.
A slow endpoint holds only its own delivery, for at most `LLMOPS_WEBHOOK_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from datetime import UTC, datetime
from functools import partial
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy.exc import OperationalError

from llmops_services.context import Platform
from llmops_services.db.tables import utcnow
from llmops_services.jobs.signals import wait
from llmops_services.webhooks import deliveries, outbox
from llmops_services.webhooks.deliveries import Claimed, RetryPolicy
from llmops_services.webhooks.metrics import ATTEMPTS, DELIVERIES
from llmops_services.webhooks.signing import Signer

log = logging.getLogger("llmops.webhooks")

CONCURRENCY = 16
"""Deliveries in flight at once per dispatcher."""
LEASE_MARGIN_SECONDS = 30.0
"""How much longer than one attempt's timeout a claim lasts."""


def where(url: str) -> str:
    """An endpoint as logs show it: no credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class Dispatcher:
    """Sends the outbox's due deliveries, signed, and settles each attempt."""

    def __init__(self, platform: Platform) -> None:
        settings = platform.settings
        self.db = platform.db
        self.signer = Signer(settings.webhook_secret.get_secret_value())
        self.timeout = settings.webhook_timeout_seconds
        self.poll_seconds = settings.webhook_poll_seconds
        self.endpoints = tuple(settings.webhook_urls)
        self.sweep_seconds = settings.webhook_sweep_seconds
        self._next_sweep = 0.0
        self.policy = RetryPolicy(
            settings.webhook_max_attempts,
            settings.webhook_backoff_seconds,
            settings.webhook_backoff_max_seconds,
        )
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        """Sends due deliveries from now on, until stopped."""
        self._loop = asyncio.get_running_loop()
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"user-agent": "llmops-webhooks"},
        )
        outbox.on_recorded(self.db, self.wake)
        self._task = self._loop.create_task(self._run())

    def wake(self) -> None:
        """Looks for due deliveries now; callable from any thread (commits of slow databases
        run on threads)."""
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._task is not None:
            loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        """Stops sending; deliveries still in flight are handed back, to be sent again."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for sending in list(self._inflight):
            sending.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        try:
            await self.db.run(partial(deliveries.release, owner=self.owner))
        except OperationalError as error:  # the leases run out by themselves
            log.warning("webhook leases not handed back: %s", error)
        if self._http is not None:
            await self._http.close()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.sweep_if_due()
                await self.dispatch_due()
            except (OSError, OperationalError) as error:  # the database is down or locked
                log.warning("webhook dispatch: database unavailable (%s)", error)
            except Exception:
                log.exception("webhook dispatch failed")
            await wait(self._wake, self.poll_seconds)

    async def sweep_if_due(self) -> None:
        """Every `LLMOPS_WEBHOOK_SWEEP_SECONDS` (and at start), records the events of recent job
        ends that recorded none (`outbox.record_missing`)."""
        now = asyncio.get_running_loop().time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.sweep_seconds
        since = utcnow() - outbox.SWEEP_WINDOW
        sweep = partial(outbox.record_missing, endpoints=self.endpoints, since=since)
        if found := await self.db.run(sweep):
            log.warning(
                "recorded the webhook events of %d job(s) that ended without them: start every "
                "worker with the same LLMOPS_WEBHOOK_* settings as the services",
                found,
            )

    async def dispatch_due(self) -> None:
        """Claims as many due deliveries as there is room for and starts sending them."""
        room = CONCURRENCY - len(self._inflight)
        if room <= 0:
            return
        lease = self.timeout + LEASE_MARGIN_SECONDS
        claim = partial(deliveries.claim_due, owner=self.owner, lease_seconds=lease, limit=room)
        for delivery in await self.db.run(claim):
            sending = asyncio.get_running_loop().create_task(self._deliver(delivery))
            self._inflight.add(sending)
            sending.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # room for another

    async def _deliver(self, delivery: Claimed) -> None:
        status, error, outcome = await self._attempt(delivery)
        ATTEMPTS.labels(outcome).inc()
        settle = partial(
            deliveries.settle,
            claimed=delivery,
            owner=self.owner,
            status=status,
            error=error,
            policy=self.policy,
        )
        try:
            state = await self.db.run(settle)
        except Exception as failure:  # the lease runs out and the delivery is sent again
            log.warning("webhook %s: attempt not recorded (%s)", delivery.id, failure)
            return
        described = (
            f"webhook {delivery.event_type} of {delivery.job_id} to {where(delivery.endpoint)}"
        )
        if state == deliveries.DELIVERED:
            DELIVERIES.labels("delivered").inc()
            log.info("%s delivered (event %s)", described, delivery.event_id)
        elif state == deliveries.FAILED:
            DELIVERIES.labels("failed").inc()
            log.warning("%s failed after %d attempts: %s", described, delivery.attempts + 1, error)
        elif state == deliveries.PENDING:
            log.info("%s: attempt %d: %s; retried later", described, delivery.attempts + 1, error)

    async def _attempt(self, delivery: Claimed) -> tuple[int, str, str]:
        """One POST: (HTTP status or 0, error or "", metrics outcome)."""
        assert self._http is not None
        body = delivery.body.encode()
        headers = self.signer.headers(delivery.event_id, body, datetime.now(UTC))
        headers["content-type"] = "application/json"
        try:
            async with self._http.post(
                delivery.endpoint, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(64 * 1024)  # the answer is not used
                if 200 <= response.status < 300:
                    return response.status, "", "success"
                return response.status, f"HTTP {response.status}", "http_error"
        except TimeoutError:
            return 0, f"no answer within {self.timeout:g} s", "timeout"
        except (aiohttp.ClientError, OSError) as error:
            return 0, f"connection failed: {type(error).__name__}: {error}", "connection_error"
