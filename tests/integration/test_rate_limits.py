"""Rate limits per API key on generation (`LLMOPS_INFERENCE_RATE_LIMIT`), on a real server
behind the real gateway with auth on: a key over its limit is refused with RESOURCE_EXHAUSTED and
a retry hint on gRPC, 429 with Retry-After over REST, and the OpenAI SDK's own RateLimitError;
another key keeps its own allowance; nothing else is limited. Replicas share the counts through
Redis."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

import llmops
from llmops_services.errors import ResourceExhausted
from llmops_services.inference.rate_limit import KeyRateLimiter
from llmops_services.jobs.private_redis import PrivateRedis
from llmops_services.runtime.auth import create_key
from tests.integration.helpers import db_of
from tests.integration.served_models import make_lora_adapters
from tests.integration.test_openai_api import serving


def test_a_key_over_its_generation_limit_is_refused_with_a_retry_hint(
    data_dir: Path, tiny_model: Path, binary: Path, tmp_path: Path
) -> None:
    adapters = make_lora_adapters(tiny_model, tmp_path / "adapters")
    with serving(data_dir, tiny_model, adapters, binary, inference_rate_limit="3/minute") as stack:
        db = db_of(stack.server)
        first = create_key(db, "reader", "first").secret
        second = create_key(db, "reader", "second").secret
        with llmops.Client(stack.server.address, api_key=first, timeout=60) as client:
            for _ in range(3):
                assert client.inference.generate("tiny", "Hello", max_new_tokens=2).text
            with pytest.raises(llmops.ResourceExhausted) as refused:
                client.inference.generate("tiny", "Hello", max_new_tokens=2)
            assert "rate limit of 3 per 1 minute" in str(refused.value)
            assert refused.value.retry_delay is not None and 0 < refused.value.retry_delay <= 60
            with pytest.raises(llmops.ResourceExhausted):
                list(client.inference.stream("tiny", "Hello", max_new_tokens=2))
            assert client.models.get("tiny").name == "tiny"  # reads are not limited

        rest = httpx.post(
            f"{stack.url}/v1/generate",
            json={"model": "tiny", "prompt": "Hello"},
            headers={"authorization": f"Bearer {first}"},
            timeout=60,
        )
        assert rest.status_code == 429, rest.text
        assert 1 <= int(rest.headers["retry-after"]) <= 60
        with (
            openai.OpenAI(base_url=f"{stack.url}/openai/v1", api_key=first, max_retries=0) as sdk,
            pytest.raises(openai.RateLimitError),
        ):
            sdk.completions.create(model="tiny", prompt="Hello", max_tokens=2)

        with llmops.Client(stack.server.address, api_key=second, timeout=60) as other:
            assert other.inference.generate("tiny", "Hello", max_new_tokens=2).text


# Shared by every replica through Redis


async def test_replicas_sharing_a_redis_draw_on_one_allowance_per_key(tmp_path: Path) -> None:
    """Two Inference replicas' limiters on one Redis: a key's 3 per minute is 3 in all, not
    3 per replica; another key has its own; a limiter without Redis counts alone."""
    redis = PrivateRedis(tmp_path / "redis").start()
    try:
        first, second = (KeyRateLimiter("3/minute", redis.url) for _ in range(2))
        await first.admit("key-a")
        await second.admit("key-a")
        await first.admit("key-a")
        for limiter in (first, second):
            with pytest.raises(ResourceExhausted, match="rate limit of 3 per 1 minute"):
                await limiter.admit("key-a")
        await second.admit("key-b")
        alone = KeyRateLimiter("3/minute")
        await alone.admit("key-a")
        assert first.shared and not alone.shared
        for limiter in (first, second):
            await limiter.close()
    finally:
        redis.stop()


async def test_an_unreachable_redis_lets_generation_through_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis = PrivateRedis(tmp_path / "redis").start()
    url = redis.url
    redis.stop()  # nothing listens there now
    limiter = KeyRateLimiter("1/minute", url)
    for _ in range(3):
        await limiter.admit("key-a")
    await limiter.close()
    assert "rate limits not checked: their store is unreachable" in caplog.text
