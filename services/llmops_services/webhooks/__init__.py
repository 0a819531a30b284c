"""Webhooks on job end: an event per training job, eval run or merge job that succeeds, fails or
is cancelled, POSTed to every configured endpoint, signed per Standard Webhooks and retried.

`outbox` records deliveries in the transaction that ends the job, `dispatcher` sends them,
`events` says what they carry and `signing` how they are signed. docs/webhooks.md has the rest.
"""
