"""``connect(settings)`` against real redis-server deployments: AUTH, ACL, TLS, Sentinel, Cluster.

Each test starts its own servers on free loopback ports and stops them; every
round trip is the state store's own: PING, a checkpoint of eight partitions (one
Lua script call per partition key, pipelined, or one call per key on a Cluster),
a refused write behind the stored offset, loads, and a baseline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
import trustme
from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from streams import DriftstreamError
from streams.redis_client import SentinelMaster, connect, is_cluster
from streams.settings import Settings
from streams.state import STATE_VERSION, Checkpoint, RedisStateStore, SaveResult
from tests.launchers import EmbeddedCluster, EmbeddedSentinel, RedisTls, SecureRedis

pytestmark = pytest.mark.integration

PASSWORD = "s3cret/p@ss:word"  # characters a URL must quote
ALICE = "alice on >alice-pw ~* &* +@all"
SENTINEL_PASSWORD = "sentinel-pw"

PARTITIONS = range(8)
PARTITION_KEYS = [f"rt:app:state:events:{p}" for p in PARTITIONS]  # the store's keys for prefix rt, app id app


S = TypeVar("S", SecureRedis, EmbeddedSentinel, EmbeddedCluster)


@contextmanager
def running(service: S) -> Iterator[S]:
    """Start ``service`` (a failure raises), yield it, stop it and check its processes are gone."""
    service.start()
    nodes = service.nodes if isinstance(service, EmbeddedCluster) else [service]
    processes = [node.process for node in nodes]
    try:
        yield service
    finally:
        service.stop()
        assert all(p is not None and p.poll() is not None for p in processes), "a redis process outlived stop()"


def settings_for(url: str, **redis: Any) -> Settings:
    return Settings(redis_url=url, redis_socket_timeout=3.0, **redis)


async def round_trip(settings: Settings) -> Any:
    """The state store itself through ``connect``; the client's class, for the caller to check."""
    store = RedisStateStore.from_settings(settings.model_copy(update={"state_prefix": "rt", "app_id": "app"}))
    try:
        assert await store.ping()
        for offset, before in ((10, None), (20, 10)):  # the second round runs the script by its SHA only
            saved = [Checkpoint("events", p, offset + p, {"m": b"\x00snapshot\xff%d" % p},
                                expected=None if before is None else before + p) for p in PARTITIONS]  # fmt: skip
            assert await store.save(saved) == SaveResult(written=len(PARTITIONS))
        behind = Checkpoint("events", 3, 5, {"m": b"stale"}, expected=23)
        assert await store.save([behind]) == SaveResult(refused=[behind])  # an offset never moves back
        unseen = Checkpoint("events", 3, 30, {"m": b"partial"}, expected=13)
        assert await store.save([unseen]) == SaveResult(diverged=[unseen])  # not what this writer saw
        for p in PARTITIONS:
            loaded = await store.load("events", p)
            assert loaded is not None and loaded.version == STATE_VERSION
            assert (loaded.offset, loaded.models) == (20 + p, {"m": b"\x00snapshot\xff%d" % p})
        await store.save_baseline("m", b"\x00\xffbaseline")
        assert await store.load_baseline("m") == b"\x00\xffbaseline"
        return type(store._redis)
    finally:
        await store.close()


async def ping(settings: Settings) -> bool:
    client = connect(settings)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


# --- AUTH -------------------------------------------------------------------------------------


@pytest.fixture
def auth_redis() -> Iterator[SecureRedis]:
    with running(SecureRedis(password=PASSWORD, users=(ALICE,))) as redis:
        yield redis


def test_password_from_settings(auth_redis: SecureRedis) -> None:
    settings = settings_for(auth_redis.url, redis_password=PASSWORD)
    assert asyncio.run(round_trip(settings)) is aioredis.Redis


def test_password_in_the_url_wins_over_settings(auth_redis: SecureRedis) -> None:
    url = f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{auth_redis.port}/0"
    asyncio.run(round_trip(settings_for(url, redis_password="not-this-one")))


def test_acl_user(auth_redis: SecureRedis) -> None:
    settings = settings_for(auth_redis.url, redis_username="alice", redis_password="alice-pw")
    asyncio.run(round_trip(settings))

    async def whoami() -> str:
        client = connect(settings)
        try:
            return await client.acl_whoami()
        finally:
            await client.aclose()

    assert asyncio.run(whoami()) == "alice"


@pytest.mark.parametrize(
    "credentials",
    [{}, {"redis_password": "wrong"}, {"redis_username": "alice", "redis_password": PASSWORD}],
    ids=["none", "wrong-password", "wrong-user-password"],
)
def test_bad_credentials_fail_with_an_authentication_error(
    auth_redis: SecureRedis, credentials: dict[str, str]
) -> None:
    with pytest.raises(AuthenticationError):
        asyncio.run(ping(settings_for(auth_redis.url, **credentials)))


# --- TLS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str  # a CA that signed nothing here


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("driftstream-worker")
    paths = {name: tmp_path / f"{name}.pem" for name in Pki.__dataclass_fields__}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other.cert_pem.write_to_path(str(paths["other_ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["server_cert"]))
    server.private_key_pem.write_to_path(str(paths["server_key"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    return Pki(**{name: str(path) for name, path in paths.items()})


@pytest.fixture
def tls_redis(pki: Pki) -> Iterator[SecureRedis]:
    tls = RedisTls(pki.server_cert, pki.server_key, pki.ca)
    with running(SecureRedis(password=PASSWORD, tls=tls)) as redis:
        yield redis


@pytest.fixture
def mtls_redis(pki: Pki) -> Iterator[SecureRedis]:
    tls = RedisTls(pki.server_cert, pki.server_key, pki.ca, auth_clients=True)
    with running(SecureRedis(tls=tls)) as redis:
        yield redis


def test_tls_verifies_the_server_with_the_ca(tls_redis: SecureRedis, pki: Pki) -> None:
    assert tls_redis.url.startswith("rediss://")
    settings = settings_for(tls_redis.url, redis_password=PASSWORD, redis_ssl_ca_certs=pki.ca)
    asyncio.run(round_trip(settings))


@pytest.mark.parametrize("ca", [None, "other_ca"], ids=["system-cas", "another-ca"])
def test_tls_fails_without_the_servers_ca(tls_redis: SecureRedis, pki: Pki, ca: str | None) -> None:
    settings = settings_for(tls_redis.url, redis_password=PASSWORD,
                            redis_ssl_ca_certs=getattr(pki, ca) if ca else None)  # fmt: skip
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(ping(settings))


def test_mutual_tls(mtls_redis: SecureRedis, pki: Pki) -> None:
    settings = settings_for(mtls_redis.url, redis_ssl_ca_certs=pki.ca, redis_ssl_certfile=pki.client_cert,
                            redis_ssl_keyfile=pki.client_key)  # fmt: skip
    asyncio.run(round_trip(settings))


def test_mutual_tls_refuses_a_client_without_a_certificate(mtls_redis: SecureRedis, pki: Pki) -> None:
    with pytest.raises(RedisConnectionError):
        asyncio.run(ping(settings_for(mtls_redis.url, redis_ssl_ca_certs=pki.ca)))


# --- Sentinel ---------------------------------------------------------------------------------


@dataclass
class SentinelSetup:
    master: SecureRedis
    replica: SecureRedis
    sentinel: EmbeddedSentinel

    def settings(self, **redis: Any) -> Settings:
        options: dict[str, Any] = {
            "redis_mode": "sentinel",
            "redis_sentinels": f" {self.sentinel.address} ",
            "redis_password": PASSWORD,
            "redis_sentinel_password": SENTINEL_PASSWORD,
        }
        # The URL's host is not used in sentinel mode; its db number is.
        return settings_for("redis://mymaster/2", **{**options, **redis})

    def master_port(self) -> int:
        """The port of the master as the sentinel reports it to clients (SENTINEL MASTER, as redis-py asks)."""
        reply = self.sentinel.cli("sentinel", "master", "mymaster").split()
        return int(dict(zip(reply[::2], reply[1::2], strict=False))["port"])

    def replica_ok(self, port: int) -> bool:
        """Whether the sentinel knows the replica on ``port`` and sees its link to the master up."""
        reply = self.sentinel.cli("sentinel", "replicas", "mymaster").split()
        fields = dict(zip(reply[::2], reply[1::2], strict=False))
        return fields.get("name") == f"127.0.0.1:{port}" and fields.get("master-link-status") == "ok"


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    with running(SecureRedis(password=PASSWORD)) as master:
        replica = SecureRedis(password=PASSWORD, extra_args=("--replicaof", "127.0.0.1", str(master.port),
                                                                "--masterauth", PASSWORD))  # fmt: skip
        with running(replica):
            sentinel = EmbeddedSentinel(master.port, master_password=PASSWORD, password=SENTINEL_PASSWORD)
            with running(sentinel):
                yield SentinelSetup(master, replica, sentinel)


def test_sentinel_connects_to_the_master_it_reports(sentinel_setup: SentinelSetup) -> None:
    settings = sentinel_setup.settings()
    assert sentinel_setup.master_port() == sentinel_setup.master.port
    assert asyncio.run(round_trip(settings)) is SentinelMaster

    async def master_address() -> tuple[str, int]:
        client = connect(settings)
        try:
            return await client.connection_pool.get_master_address()
        finally:
            await client.aclose()

    assert asyncio.run(master_address()) == ("127.0.0.1", sentinel_setup.master.port)
    # db 2 of the URL applied: the data is in db 2 of the master itself.
    assert sentinel_setup.master.cli("-n", "2", "hget", PARTITION_KEYS[0], "offset").strip() == "20"
    assert sentinel_setup.master.cli("-n", "0", "exists", PARTITION_KEYS[0]).strip() == "0"


def test_sentinel_client_follows_the_master_when_it_dies(sentinel_setup: SentinelSetup) -> None:
    old, new = sentinel_setup.master, sentinel_setup.replica
    settings = sentinel_setup.settings()

    async def scenario() -> None:
        client = connect(settings)
        try:
            await client.set("before", b"1")
            wait_until(lambda: new.cli("-n", "2", "get", "before").strip() == "1", 10, "the replica has the data")
            wait_until(lambda: sentinel_setup.replica_ok(new.port), 10, "the sentinel sees the replica")
            old.stop()
            wait_until(lambda: sentinel_setup.master_port() == new.port, 20, "the sentinel fails over")
            # The pooled connection to the dead master fails; the next one asks the sentinel again.
            for attempt in range(50):
                try:
                    await client.set("after", b"2")
                    break
                except RedisConnectionError:
                    assert attempt < 49
                    await asyncio.sleep(0.1)
            assert await client.connection_pool.get_master_address() == ("127.0.0.1", new.port)
            assert await client.get("before") == b"1"
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert "role:master" in new.cli("info", "replication")
    assert new.cli("-n", "2", "get", "after").strip() == "2"


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what}")
        time.sleep(0.1)


def test_sentinel_over_tls(pki: Pki) -> None:
    tls = RedisTls(pki.server_cert, pki.server_key, pki.ca)
    with (
        running(SecureRedis(password=PASSWORD, tls=tls)) as master,
        running(
            EmbeddedSentinel(master.port, master_password=PASSWORD, password=SENTINEL_PASSWORD, tls=tls)
        ) as sentinel,
    ):
        settings = settings_for("rediss://mymaster/0", redis_mode="sentinel", redis_sentinels=sentinel.address,
                                redis_password=PASSWORD, redis_sentinel_password=SENTINEL_PASSWORD,
                                redis_ssl_ca_certs=pki.ca)  # fmt: skip
        # The sentinel's own link to the master is TLS too: its named connection is there (after AUTH).
        wait_until(lambda: "name=sentinel-" in master.cli("client", "list"), 5, "the sentinel connects")
        assert asyncio.run(round_trip(settings)) is SentinelMaster
        assert master.cli("hget", PARTITION_KEYS[0], "offset").strip() == "20"


def test_a_wrong_sentinel_password_fails_loudly(sentinel_setup: SentinelSetup) -> None:
    with pytest.raises(RedisConnectionError, match="No master found for 'mymaster'.*AuthenticationError"):
        asyncio.run(ping(sentinel_setup.settings(redis_sentinel_password="wrong")))


# --- Cluster ----------------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[EmbeddedCluster]:
    with running(EmbeddedCluster(3, password=PASSWORD)) as started:
        yield started


def test_cluster_round_trip_over_three_masters(cluster: EmbeddedCluster) -> None:
    settings = settings_for(cluster.url, redis_mode="cluster", redis_password=PASSWORD)

    async def nodes_of_the_keys() -> set[int]:
        client = connect(settings)
        try:
            await client.initialize()
            assert is_cluster(client) and len(client.get_primaries()) == 3
            return {client.get_node_from_key(key).port for key in PARTITION_KEYS}
        finally:
            await client.aclose()

    assert len(asyncio.run(nodes_of_the_keys())) >= 2  # the round trip really spans nodes
    assert asyncio.run(round_trip(settings)) is RedisCluster


def test_cluster_over_tls(pki: Pki) -> None:
    tls = RedisTls(pki.server_cert, pki.server_key, pki.ca)
    with running(EmbeddedCluster(3, tls=tls)) as started:
        assert started.url.startswith("rediss://")
        settings = settings_for(started.url, redis_mode="cluster", redis_ssl_ca_certs=pki.ca)
        assert asyncio.run(round_trip(settings)) is RedisCluster


# --- settings that cannot work together (nothing to start) ------------------------------------


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ({"redis_mode": "sentinel"}, "needs redis_sentinels"),
        ({"redis_mode": "sentinel", "redis_sentinels": " , "}, "needs redis_sentinels"),
        ({"redis_mode": "sentinel", "redis_sentinels": "127.0.0.1"}, "'127.0.0.1' is not host:port"),
        ({"redis_mode": "sentinel", "redis_sentinels": "a:1,b:port"}, "'b:port' is not host:port"),
        ({"redis_mode": "sentinel", "redis_sentinels": "a:70000"}, "'a:70000' is not host:port"),
        ({"redis_sentinels": "a:26379"}, "redis_mode='standalone'"),
        ({"redis_ssl_ca_certs": "/ca.pem"}, "redis_ssl_ca_certs set but redis_url is not rediss://"),
        ({"redis_url": "rediss://h:1/0", "redis_ssl_keyfile": "/k.pem"}, "needs redis_ssl_certfile"),
        ({"redis_mode": "cluster", "redis_url": "redis://h:1/3"}, "db"),
    ],
)
def test_settings_that_cannot_work_raise_a_driftstream_error(redis: dict[str, str], message: str) -> None:
    redis = {"redis_url": "redis://:pw@127.0.0.1:1/0", **redis}
    with pytest.raises(DriftstreamError, match=message) as raised:
        connect(settings_for(redis.pop("redis_url"), **redis))
    assert "pw" not in str(raised.value).replace("password", "")


@pytest.mark.parametrize("url", ["http://h:1/0", "localhost:6379", "127.0.0.1:6379/0"])
def test_a_redis_url_of_another_scheme_is_refused_by_the_settings(url: str) -> None:
    with pytest.raises(ValidationError, match="redis_url"):
        settings_for(url)
