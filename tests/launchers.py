"""Redis in the shapes only the tests start: AUTH and ACL users, TLS, a Sentinel, a Cluster.

Built on the plain launchers of ``streams.services`` (which ``driftstream demo``
uses too); like them, every process listens on 127.0.0.1 only, on a free port,
and keeps nothing on disk past ``stop()``.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from streams import DriftstreamError
from streams.services import EmbeddedRedis, ServiceProcess, free_port, redis_cli, require_binary


@dataclass(frozen=True)
class RedisTls:
    """PEM files of a TLS redis-server: its certificate and key, and the CA it trusts for clients."""

    certfile: str
    keyfile: str
    ca_certs: str
    auth_clients: bool = False  # mutual TLS: refuse clients without a certificate from ``ca_certs``

    def server_args(self, port: int) -> list[str]:
        return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", self.certfile,
                "--tls-key-file", self.keyfile, "--tls-ca-cert-file", self.ca_certs,
                "--tls-auth-clients", "yes" if self.auth_clients else "no"]  # fmt: skip


def cli_options(password: str | None, tls: RedisTls | None) -> list[str]:
    """``redis-cli`` options for a server with this password and TLS."""
    options: list[str] = []
    if tls:
        options += ["--tls", "--cacert", tls.ca_certs]
    if password is not None:
        options += ["-a", password, "--no-auth-warning"]
    return options


class SecureRedis(EmbeddedRedis):
    """A throw-away redis-server with AUTH, ACL users and/or TLS.

    ``password`` sets ``requirepass`` (AUTH for the default user); each of ``users``
    is an ACL rule such as ``"alice on >secret ~* &* +@all"``; ``tls`` makes it
    listen for TLS only.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        users: tuple[str, ...] = (),
        tls: RedisTls | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(port, extra_args=extra_args)
        self.password = password
        self.users = users
        self.tls = tls

    @property
    def url(self) -> str:
        """Its URL, without credentials (settings carry those)."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def server_args(self) -> list[str]:
        args = self.tls.server_args(self.port) if self.tls else super().server_args()
        if self.password is not None:
            args += ["--requirepass", self.password]
        for rule in self.users:
            args += ["--user", *rule.split()]
        return args

    def cli_options(self) -> list[str]:
        return cli_options(self.password, self.tls)


class EmbeddedSentinel(ServiceProcess):
    """``redis-server --sentinel`` monitoring one master, with its config file in a temp dir.

    ``master_password`` is what the sentinel sends to the master (``auth-pass``);
    ``password`` is the sentinel's own ``requirepass``; with ``tls`` the sentinel
    listens for TLS only and talks TLS to the master.
    """

    name = "sentinel"

    def __init__(
        self,
        master_port: int,
        *,
        master_name: str = "mymaster",
        master_password: str | None = None,
        password: str | None = None,
        down_after_ms: int = 1000,
        tls: RedisTls | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(port)
        self.tls = tls
        self.master_port = master_port
        self.master_name = master_name
        self.master_password = master_password
        self.password = password
        self.down_after_ms = down_after_ms

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 10.0) -> str:
        """Run ``redis-cli`` against this sentinel; its stdout."""
        return redis_cli(self.port, *args, options=cli_options(self.password, self.tls), timeout=timeout)

    def command(self) -> list[str]:
        self._dir = Path(tempfile.mkdtemp(prefix="driftstream-sentinel-"))
        name = self.master_name
        if self.tls:
            tls = self.tls
            listen = ["port 0", f"tls-port {self.port}", f"tls-cert-file {tls.certfile}",
                      f"tls-key-file {tls.keyfile}", f"tls-ca-cert-file {tls.ca_certs}",
                      f"tls-auth-clients {'yes' if tls.auth_clients else 'no'}", "tls-replication yes"]  # fmt: skip
        else:
            listen = [f"port {self.port}"]
        lines = [
            *listen,
            "bind 127.0.0.1",
            f"dir {self._dir}",
            f"sentinel monitor {name} 127.0.0.1 {self.master_port} 1",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} 10000",
        ]
        if self.master_password is not None:
            lines.append(f"sentinel auth-pass {name} {self.master_password}")
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        config = self._dir / "sentinel.conf"  # the sentinel rewrites it: it must be its own
        config.write_text("\n".join(lines) + "\n")
        return [require_binary("redis-server"), str(config), "--sentinel"]


class _ClusterNode(SecureRedis):
    name = "redis-cluster-node"

    def __init__(self, password: str | None, tls: RedisTls | None) -> None:
        self.bus_port = free_port()  # set explicitly: port + 10000 may be taken or out of range
        args = ["--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]  # fmt: skip
        if password is not None:
            args += ["--masterauth", password]
        if tls is not None:  # the bus and replication use TLS too; CLUSTER SLOTS then names the TLS ports
            args += ["--tls-cluster", "yes", "--tls-replication", "yes"]
        super().__init__(password=password, tls=tls, extra_args=tuple(args))


class EmbeddedCluster:
    """A Redis Cluster of ``masters`` masters and no replicas, each a redis-server on loopback.

    ``password`` and ``tls`` apply to every node, as for :class:`SecureRedis`.
    """

    def __init__(self, masters: int = 3, *, password: str | None = None, tls: RedisTls | None = None) -> None:
        if masters < 3:
            raise ValueError(f"masters={masters}: redis-cli --cluster create needs at least 3")
        self.password = password
        self.tls = tls
        self.nodes = [_ClusterNode(password, tls) for _ in range(masters)]

    @property
    def url(self) -> str:
        """The URL of one node: a cluster client finds the others from it."""
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.start(timeout)
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            self.nodes[0].cli("--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes",
                              timeout=timeout)  # fmt: skip
            while not all("cluster_state:ok" in node.cli("cluster", "info") for node in self.nodes):
                if time.monotonic() > deadline:
                    raise DriftstreamError(f"cluster_state is not ok after {timeout:.0f}s")
                time.sleep(0.1)
        except (DriftstreamError, subprocess.TimeoutExpired) as exc:
            self.stop()
            logs = ", ".join(str(node.log_path) for node in self.nodes)
            raise DriftstreamError(f"the Redis cluster did not start: {exc}; logs: {logs}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout)

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
