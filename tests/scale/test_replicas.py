"""Scale-out on one PostgreSQL database and one Redis queue: two services processes (`llmops
serve`, as two replicas behind a load balancer would run) and three workers. Clients spread
their calls over both replicas, the way a Kubernetes Service would, and sent every
idempotency key to both. Every job is claimed once (one attempt, one RUNNING), its events are
one gapless sequence that both replicas and a live watcher agree on, it ends with one model;
and an alias moved at once by many clients through both replicas keeps one history chain,
each move starting where the one before it ended. Registrations racing for one name's next
version, or with one idempotency key, all succeed with distinct versions, or the one model."""

from __future__ import annotations

import asyncio
import itertools
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis.asyncio

import llmops
from llmops.v1 import jobs_pb2
from llmops_services.jobs.adverts import read_all
from llmops_services.jobs.private_redis import PrivateRedis
from tests.faults.processes import ServicesProcess
from tests.integration.workers import FAST, Workers, until

pytestmark = pytest.mark.scale

JOBS = 6
WORKERS = 3
MOVERS = 8
RACERS = 12
MOVES_EACH = 10


def _live_workers(url: str) -> int:
    async def count() -> int:
        client = redis.asyncio.Redis.from_url(url)
        try:
            return len(await read_all(client))
        finally:
            await client.aclose()

    return asyncio.run(count())


def _state_changes(events: list[jobs_pb2.JobEvent]) -> list[str]:
    changed = [e for e in events if e.type == jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED]
    return [jobs_pb2.JobState.Name(e.state).removeprefix("JOB_STATE_") for e in changed]


def _key(event: jobs_pb2.JobEvent) -> tuple[int, int, str, int]:
    return (event.sequence, event.type, event.message, event.step)


@pytest.mark.timeout(900)
def test_two_replicas_and_three_workers_on_one_database(
    tmp_path: Path, redis_server: PrivateRedis, postgres_url: str, tiny_model: Path
) -> None:
    data_dir = tmp_path / "data"
    replicas = []
    workers = Workers(redis_url=redis_server.url, data_dir=data_dir, database_url=postgres_url)
    try:
        for _ in range(2):  # one after the other: the first migrates, the second finds it done
            replicas.append(ServicesProcess(data_dir, redis_server.url, postgres_url).start())
        for _ in range(WORKERS):
            workers.start()
        clients = [llmops.Client(r.address, timeout=60) for r in replicas]
        until(lambda: _live_workers(redis_server.url) == WORKERS, 180, "three live workers")
        clients[0].models.create("tiny", str(tiny_model))
        _racing_registrations_each_get_their_own_version(clients, tiny_model)
        _jobs_are_claimed_once(clients)
        _alias_moves_form_one_chain(clients)
        for client in clients:
            client.close()
    finally:
        workers.stop()
        for replica in replicas:
            replica.stop()


def _racing_registrations_each_get_their_own_version(
    clients: list[llmops.Client], model_dir: Path
) -> None:
    """Registrations of one new name at once through both replicas: each takes the next
    version (the loser of a race runs its transaction again), none fails; and a repeated
    idempotency key raced through both gives back the one model it made."""

    def register(n: int) -> tuple[int, str]:
        made = clients[n % 2].models.create("raced", str(model_dir))
        again = clients[n % 2].models.create("keyed", str(model_dir), idempotency_key="k")
        return made.version, again.id

    with ThreadPoolExecutor(RACERS) as pool:
        results = list(pool.map(register, range(RACERS)))
    assert sorted(version for version, _ in results) == list(range(1, RACERS + 1))
    assert len({keyed for _, keyed in results}) == 1
    assert [m.version for m in clients[1].models.list(name="keyed")] == [1]


def _jobs_are_claimed_once(clients: list[llmops.Client]) -> None:
    params = {**FAST, "max_steps": 3, "save_steps": 2}
    ids = []
    for n in range(JOBS):
        key = f"scale-{n}"
        first, other = clients[n % 2], clients[(n + 1) % 2]
        job = first.training.create(
            "sft",
            "tiny",
            "demo-sft",
            output_name="scaled",
            hyperparameters=params,
            idempotency_key=key,
        )
        again = other.training.create(
            "sft",
            "tiny",
            "demo-sft",
            output_name="scaled",
            hyperparameters=params,
            idempotency_key=key,
        )
        assert again.id == job.id
        ids.append(job.id)

    def watch(n: int) -> list[jobs_pb2.JobEvent]:
        return list(clients[n % 2].training.get(ids[n]).watch())

    with ThreadPoolExecutor(JOBS) as pool:
        watched = list(pool.map(watch, range(JOBS)))

    owners = set()
    for n, job_id in enumerate(ids):
        done = clients[n % 2].training.wait(job_id, timeout=60, poll_interval=0.5)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.attempt == 1, f"{job_id} needed {done.attempt} attempts"
        events = {i: list(client.training.events(job_id)) for i, client in enumerate(clients)}
        assert [_key(e) for e in events[0]] == [_key(e) for e in events[1]]
        assert [_key(e) for e in watched[n]] == [_key(e) for e in events[0]]
        assert [e.sequence for e in events[0]] == list(range(1, len(events[0]) + 1))
        assert _state_changes(events[0]) == ["QUEUED", "RUNNING", "SUCCEEDED"]
        running = next(e for e in events[0] if e.state == jobs_pb2.JOB_STATE_RUNNING)
        owners.add(running.message.rsplit(" started on ", 1)[1])
    produced = [m for m in clients[1].models.list(name="scaled")]
    assert sorted(m.origin.training_job for m in produced) == sorted(ids)  # one model each
    assert len(owners) >= 2, owners  # the work was shared, not run by one worker


def _alias_moves_form_one_chain(clients: list[llmops.Client]) -> None:
    versions = [m.id for m in clients[0].models.list(name="scaled")]
    assert len(versions) == JOBS

    def mover(seed: int) -> None:
        pick = random.Random(seed)
        for _ in range(MOVES_EACH):
            client = pick.choice(clients)
            client.models.set_alias(pick.choice(versions), "live", reason=f"mover {seed}")

    with ThreadPoolExecutor(MOVERS) as pool:
        list(pool.map(mover, range(MOVERS)))

    for client in clients:
        moves = list(reversed(list(client.models.alias_history("scaled", "live"))))
        assert moves[0].from_model == ""
        for before, after in itertools.pairwise(moves):
            assert after.from_model == before.to_model, (before, after)
            assert after.from_model != after.to_model
        current = [a for a in client.models.aliases("scaled") if a.alias == "live"]
        assert [a.model for a in current] == [moves[-1].to_model]


@pytest.mark.timeout(300)
def test_replicas_started_together_on_an_empty_database_migrate_it_once(
    tmp_path: Path, redis_server: PrivateRedis, postgres_url: str
) -> None:
    """Three replicas of a new deployment start at the same moment on an empty database: each
    would run the migrations and seed the bundled data; one does, the others wait for it and
    find it done, and all three serve the same rows."""
    data_dir = tmp_path / "data"
    replicas = [ServicesProcess(data_dir, redis_server.url, postgres_url) for _ in range(3)]
    try:
        for replica in replicas:
            replica.launch()
        for replica in replicas:
            replica.wait_ready()
        seen = []
        for replica in replicas:
            with llmops.Client(replica.address, timeout=30) as client:
                datasets = sorted((d.name, d.id) for d in client.datasets.list())
                templates = sorted((t.template_id, t.version) for t in client.templates.list())
            seen.append((datasets, templates))
        datasets, templates = seen[0]
        assert datasets and templates
        assert len({name for name, _ in datasets}) == len(datasets)  # each seeded once
        assert all(other == seen[0] for other in seen[1:])
    finally:
        for replica in replicas:
            replica.stop()
