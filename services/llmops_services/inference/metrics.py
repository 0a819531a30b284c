"""Prometheus metrics of serving: what users feel (time to first token, inter-token latency,
queue wait), what the engine does (batch size, tokens) and the adapter cache.

Names follow Prometheus' conventions (`_total` counters, `_seconds` histograms) and measure what
vLLM's and TGI's serving metrics measure, so dashboards built for those carry over. Labels stay
bounded: `model` is a registered model id (an adapter, a merged model or a base), never free
text from a request.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)

REQUESTS = Counter(
    "llmops_inference_requests",
    "Answers generated, by how each ended: stop, length, cancelled (the caller left or its "
    "deadline passed) or error. A call with n answers counts n.",
    ["model", "finish_reason"],
)
PROMPT_TOKENS = Counter(
    "llmops_inference_prompt_tokens",
    "Prompt tokens of the calls served (once per call, whatever its n).",
    ["model"],
)
GENERATED_TOKENS = Counter(
    "llmops_inference_generated_tokens",
    "Tokens generated, over every answer, including those of cancelled answers.",
    ["model"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "llmops_inference_time_to_first_token_seconds",
    "From the call's arrival to its answer's first generated token (model resolution, "
    "tokenizing, queueing and prefill included).",
    buckets=_LATENCY_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "llmops_inference_inter_token_latency_seconds",
    "Between two deliveries of tokens to one answer: one per decode step while the service "
    "keeps up, several steps' tokens at once when it falls behind (as vLLM counts it).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.4, 0.75, 1.5, 3.0),
)
QUEUE_WAIT = Histogram(
    "llmops_inference_queue_wait_seconds",
    "From a request's submission to the engine until the decode step that admits it to the "
    "running batch began.",
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "llmops_inference_batch_size",
    "Rows that one decode step generated a token for.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
ADAPTER_CACHE_HITS = Counter(
    "llmops_inference_adapter_cache_hits",
    "Requests whose adapter was already attached to its base.",
)
ADAPTER_CACHE_MISSES = Counter(
    "llmops_inference_adapter_cache_misses",
    "Requests whose adapter had to be loaded first.",
)
ADAPTER_CACHE_EVICTIONS = Counter(
    "llmops_inference_adapter_cache_evictions",
    "Adapters detached to make room for another (least recently used first).",
)
LOADED_ADAPTERS = Gauge(
    "llmops_inference_loaded_adapters",
    "Adapters attached to a loaded base, by base model.",
    ["base_model"],
)
