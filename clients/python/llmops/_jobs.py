"""Job handles: a training job, eval run or merge job that can refresh, wait for, watch and cancel
itself.

`client.training.create(...)` and `client.eval.create(...)` return a handle rather than the bare
message, so the result reads as the SDK example in the docs does:

```python
job = client.training.create(method="sft", base_model="llmops-tiny", dataset="demo-sft")
job = job.wait(timeout=900)
run = client.eval.create(model=job.result_model, dataset="demo-eval", gate=True).wait()
```

A handle reads every field of its latest message (`job.state`, `job.metrics`, ...); `.message`
is the message itself, for `json_format` and anything else that needs a real protobuf.

The async handles are written in `_async_jobs`; the sync ones in `_sync_jobs` are generated from
them by `scripts/unasync.py`; what both share is in `_job_base`. This module gathers them.
"""

from __future__ import annotations

from llmops._async_jobs import (
    AsyncEvalRunHandle,
    AsyncJobHandle,
    AsyncJobOps,
    AsyncMergeJobHandle,
    AsyncTrainingJobHandle,
    await_for,
)
from llmops._job_base import WATCH_RECONNECTS
from llmops._sync_jobs import (
    EvalRunHandle,
    JobHandle,
    JobOps,
    MergeJobHandle,
    TrainingJobHandle,
    wait_for,
)

__all__ = [
    "WATCH_RECONNECTS",
    "AsyncEvalRunHandle",
    "AsyncJobHandle",
    "AsyncJobOps",
    "AsyncMergeJobHandle",
    "AsyncTrainingJobHandle",
    "EvalRunHandle",
    "JobHandle",
    "JobOps",
    "MergeJobHandle",
    "TrainingJobHandle",
    "await_for",
    "wait_for",
]
